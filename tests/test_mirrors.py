"""A fleet for real: an upstream registry, a pull-through mirror in front of it, and
several hybridstore caches standing in for several machines.

The upstream and the mirror are CNCF distribution registries (the mirror in
``proxy`` mode); every count comes from their access logs. The same
registries.conf is given to skopeo, which must go through the same mirror.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.faultproxy import FaultProxy
from support.oci_builder import BuiltImage, LayoutBuilder, push_built
from support.registry import Registry, RegistryFactory

from hybridstore.pull import PullResult, pull
from hybridstore.remote.transport import TransportOptions

pytestmark = pytest.mark.registry

REPO = "team/app"
HYBRIDSTORE = [sys.executable, "-m", "hybridstore"]


def write_conf(path: Path, upstream: Registry, mirrors: list[tuple[Registry, str]]) -> Path:
    """The registries.conf a site would copy: both hosts ``insecure`` (plain HTTP here)."""
    text = (
        f'[[registry]]\nprefix = "{upstream.host_port}"\n'
        f'location = "{upstream.host_port}"\ninsecure = true\n'
    )
    for mirror, pull_from in mirrors:
        text += (
            f'\n[[registry.mirror]]\nlocation = "{mirror.host_port}"\ninsecure = true\n'
            f'pull-from-mirror = "{pull_from}"\n'
        )
    path.write_text(text)
    return path


def blob_gets(reg: Registry, image: BuiltImage, since: int) -> dict[str, int]:
    """GET count of each of ``image``'s blobs (config and layers; the manifest is
    fetched as a manifest) in ``reg``'s access log since ``since``."""
    entries = reg.access_log_requests(since)
    return {
        d: sum(1 for e in entries if e.method == "GET" and e.path.endswith(f"/blobs/{d}"))
        for d in blob_digests(image)
    }


def blob_digests(image: BuiltImage) -> list[str]:
    return [image.config.digest, *(layer.digest for layer in image.layers)]


def manifest_requests(reg: Registry, reference: str, since: int) -> int:
    rx = re.compile(rf"/v2/{REPO}/manifests/{re.escape(reference)}")
    return sum(1 for e in reg.access_log_requests(since) if rx.fullmatch(e.path))


def pull_as_machine(ref: str, machine: Path, conf: Path) -> PullResult:
    return pull(
        ref,
        layout=machine / "layout",
        cache=machine / "cache",
        transport=TransportOptions(registries_conf=str(conf)),
    )


@pytest.fixture
def fleet(
    registry_factory: RegistryFactory, tmp_path: Path
) -> tuple[Registry, Registry, BuiltImage]:
    upstream = registry_factory()
    mirror = registry_factory(proxy_remote_url=upstream.url)
    image = LayoutBuilder(tmp_path / "content").image("v1", layers=3, seed="fleet")
    push_built(image, upstream, f"{REPO}:v1")
    return upstream, mirror, image


def test_fleet_fetches_each_blob_upstream_once_and_falls_back_when_the_mirror_stops(
    fleet: tuple[Registry, Registry, BuiltImage], tmp_path: Path
) -> None:
    """The upstream pays for the first machine only. distribution 2.8's proxy itself
    GETs a blob it misses twice upstream (one stream for the client, one for its own
    store), so "once" is: what the first machine's pull cost, the others add nothing."""
    upstream, mirror, image = fleet
    conf = write_conf(tmp_path / "registries.conf", upstream, [(mirror, "all")])
    ref = upstream.ref(REPO, "v1")
    up0, mirror0 = upstream.access_log_mark(), mirror.access_log_mark()
    machines = [tmp_path / f"machine-{i}" for i in range(3)]
    assert pull_as_machine(ref, machines[0], conf).digest == image.digest
    mirror.wait_blobs_stored(blob_digests(image))
    first = blob_gets(upstream, image, up0)
    assert all(1 <= n <= 2 for n in first.values()), first
    for machine in machines[1:]:
        assert pull_as_machine(ref, machine, conf).digest == image.digest

    assert blob_gets(upstream, image, up0) == first
    assert blob_gets(mirror, image, mirror0) == dict.fromkeys(blob_digests(image), len(machines))
    for machine in machines:
        index = json.loads((machine / "layout" / "index.json").read_text())
        names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        assert names == [ref]  # the logical name, never the mirror's host

    mirror.stop()
    up1 = upstream.access_log_mark()
    late = tmp_path / "machine-late"
    assert pull_as_machine(ref, late, conf).digest == image.digest
    assert blob_gets(upstream, image, up1) == dict.fromkeys(blob_digests(image), 1)
    assert (late / "cache").is_dir()


def test_digest_only_mirror_sends_tags_upstream_and_a_404_mirror_falls_through(
    fleet: tuple[Registry, Registry, BuiltImage], registry: Registry, tmp_path: Path
) -> None:
    upstream, mirror, image = fleet
    # ``registry`` is a plain registry without this repository: it answers 404 for all.
    conf = write_conf(
        tmp_path / "registries.conf", upstream, [(registry, "all"), (mirror, "digest-only")]
    )
    up0, mirror0 = upstream.access_log_mark(), mirror.access_log_mark()
    got = pull_as_machine(upstream.ref(REPO, "v1"), tmp_path / "m1", conf)
    assert got.digest == image.digest
    assert manifest_requests(upstream, "v1", up0) >= 1
    assert manifest_requests(mirror, "v1", mirror0) == 0  # never asked to resolve a tag
    assert blob_gets(mirror, image, mirror0) == dict.fromkeys(blob_digests(image), 1)

    mirror1 = mirror.access_log_mark()
    by_digest = upstream.ref(REPO, image.digest)
    assert pull_as_machine(by_digest, tmp_path / "m2", conf).digest == image.digest
    assert manifest_requests(mirror, image.digest, mirror1) >= 1


def one_mirror_conf(tmp_path: Path, upstream: Registry, mirror_host: str) -> Path:
    """A registries.conf with ``mirror_host`` as the upstream's only mirror (plain HTTP
    comes from --plain-http here: a fault proxy speaks no TLS to refuse)."""
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nlocation = "{upstream.host_port}"\n'
        f'[[registry.mirror]]\nlocation = "{mirror_host}"\n'
    )
    return conf


def debug_pull(upstream: Registry, mirror_host: str, tmp_path: Path, image: BuiltImage) -> str:
    """``pull --debug`` of the fleet image with ``mirror_host`` as the only mirror: it
    must succeed with the image's digest; returns the debug output."""
    conf = one_mirror_conf(tmp_path, upstream, mirror_host)
    proc = subprocess.run(
        [*HYBRIDSTORE, "--debug", "--cache", str(tmp_path / "cache"), "pull", "--json",
         "--plain-http", "--registries-conf", str(conf), "--layout", str(tmp_path / "l"),
         upstream.ref(REPO, "v1")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["digest"] == image.digest
    return proc.stderr


def test_a_mirror_answering_5xx_falls_through_with_a_debug_line(
    fleet: tuple[Registry, Registry, BuiltImage], tmp_path: Path
) -> None:
    upstream, mirror, image = fleet
    with FaultProxy(mirror.host_port) as broken:
        broken.fail("/blobs/", 500, times=None)
        up0 = upstream.access_log_mark()
        stderr = debug_pull(upstream, broken.host_port, tmp_path, image)
    assert blob_gets(upstream, image, up0) == dict.fromkeys(blob_digests(image), 1)
    fell = [line for line in stderr.splitlines() if "trying the next endpoint" in line]
    assert len(fell) == len(blob_digests(image)), stderr  # one line per blob
    where = f"mirror {broken.host_port}/{REPO}"
    assert all(where in line and "answered" in line for line in fell), fell


def test_a_mirror_failing_mid_stream_is_continued_by_the_primary(
    fleet: tuple[Registry, Registry, BuiltImage], tmp_path: Path
) -> None:
    upstream, mirror, image = fleet
    with FaultProxy(mirror.host_port) as flaky:
        flaky.truncate("/blobs/", after_bytes=64, times=None)
        stderr = debug_pull(upstream, flaky.host_port, tmp_path, image)
    continued = [line for line in stderr.splitlines() if "elsewhere" in line]
    assert len(continued) == len(image.layers) + 1, stderr  # every blob is > 64 bytes
    check = subprocess.run(
        [*HYBRIDSTORE, "layout", "verify", str(tmp_path / "l")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_mirror_that_times_out_is_skipped_for_the_rest_of_the_command(
    fleet: tuple[Registry, Registry, BuiltImage], tmp_path: Path
) -> None:
    upstream, mirror, image = fleet
    with FaultProxy(mirror.host_port) as hung:
        hung.stall("/v2/", seconds=10, times=None)
        conf = one_mirror_conf(tmp_path, upstream, hung.host_port)
        got = pull(
            upstream.ref(REPO, "v1"),
            layout=tmp_path / "layout",
            cache=tmp_path / "cache",
            transport=TransportOptions(plain_http=True, timeout=0.5, registries_conf=str(conf)),
        )
        asked = len(hung.requests)
    assert got.digest == image.digest
    assert asked == 2  # the first request and its one retry; nothing after that


def test_skopeo_reads_the_same_file_and_goes_through_the_same_mirror(
    fleet: tuple[Registry, Registry, BuiltImage], tmp_path: Path, skopeo_bin: str
) -> None:
    upstream, mirror, image = fleet
    conf = write_conf(tmp_path / "registries.conf", upstream, [(mirror, "all")])
    ref = upstream.ref(REPO, "v1")
    mirror0 = mirror.access_log_mark()
    proc = subprocess.run(
        [
            skopeo_bin,
            "--insecure-policy",
            "--registries-conf",
            str(conf),
            "copy",
            "--quiet",
            f"docker://{ref}",
            f"oci:{tmp_path / 'skopeo'}:v1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert manifest_requests(mirror, "v1", mirror0) >= 1
    assert blob_gets(mirror, image, mirror0) == dict.fromkeys(blob_digests(image), 1)

    mirror1 = mirror.access_log_mark()
    assert pull_as_machine(ref, tmp_path / "hs", conf).digest == image.digest
    assert manifest_requests(mirror, "v1", mirror1) >= 1
    assert blob_gets(mirror, image, mirror1) == dict.fromkeys(blob_digests(image), 1)
    skopeo_index = json.loads((tmp_path / "skopeo" / "index.json").read_text())
    assert skopeo_index["manifests"][0]["digest"] == image.digest


def test_cli_mirror_uses_the_mirror_hosts_own_credentials(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    """``--mirror HOST`` on the command line; the mirror needs a login, found for its
    host in ``config.json``; the upstream is anonymous."""
    upstream = registry_factory()
    mirror = registry_factory(auth="basic", proxy_remote_url=upstream.url)
    image = LayoutBuilder(tmp_path / "content").image("v1", layers=1, seed="cli")
    push_built(image, upstream, f"{REPO}:v1")
    assert mirror.credentials is not None
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(":".join(mirror.credentials).encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {mirror.host_port: {"auth": auth}}}))
    env = dict(os.environ, DOCKER_CONFIG=str(docker), REGISTRY_AUTH_FILE=str(tmp_path / "a.json"))
    env["HYBRIDSTORE_REGISTRIES_CONF"] = str(tmp_path / "empty.conf")
    (tmp_path / "empty.conf").write_text("")
    mirror0 = mirror.access_log_mark()
    proc = subprocess.run(
        [
            *HYBRIDSTORE,
            "--cache",
            str(tmp_path / "cache"),
            "pull",
            "--json",
            "--plain-http",
            "--mirror",
            mirror.host_port,
            "--layout",
            str(tmp_path / "layout"),
            upstream.ref(REPO, "v1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["digest"] == image.digest
    assert blob_gets(mirror, image, mirror0) == dict.fromkeys(blob_digests(image), 1)
    statuses = {e.status for e in mirror.access_log_requests(mirror0)}
    assert 200 in statuses and 401 in statuses  # challenged, then served with the login


def test_tags_inspect_and_copy_read_through_the_mirror_and_push_never_does(
    fleet: tuple[Registry, Registry, BuiltImage], registry: Registry, tmp_path: Path
) -> None:
    upstream, mirror, image = fleet
    conf = write_conf(tmp_path / "registries.conf", upstream, [(mirror, "all")])
    env = dict(os.environ, HYBRIDSTORE_REGISTRIES_CONF=str(conf))
    ref = upstream.ref(REPO, "v1")
    dest = f"{registry.host_port}/tests/mirror-copy:v1"

    def hs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HYBRIDSTORE, "--cache", str(tmp_path / "cache"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )

    mirror0 = mirror.access_log_mark()
    tags = hs("tags", ref)
    assert tags.returncode == 0 and tags.stdout.split() == ["v1"], tags.stderr
    inspected = hs("inspect", "--json", ref)
    assert inspected.returncode == 0 and image.digest in inspected.stdout, inspected.stderr
    copied = hs("copy", "--plain-http", f"docker://{ref}", f"docker://{dest}")
    assert copied.returncode == 0, copied.stderr
    seen = mirror.access_log_requests(mirror0)
    assert any(e.path.startswith(f"/v2/{REPO}/tags/list") for e in seen)
    assert manifest_requests(mirror, "v1", mirror0) >= 2  # inspect and copy
    assert blob_gets(mirror, image, mirror0) == dict.fromkeys(blob_digests(image), 1)
    assert not [e for e in seen if e.method in ("PUT", "POST", "PATCH")]  # push: never
    at_dest = hs("inspect", "--json", "--plain-http", dest)
    assert at_dest.returncode == 0 and image.digest in at_dest.stdout, at_dest.stderr


def test_push_honours_insecure_and_blocked_but_no_mirror(
    registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    """No --plain-http: ``insecure = true`` lets the push fall back to plain HTTP; the
    mirror listed for the same prefix (a dead address) is never contacted."""
    layout = tmp_path / "src"
    LayoutBuilder(layout).image("v1", layers=1, seed="push")
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nlocation = "{registry.host_port}"\ninsecure = true\n'
        '[[registry.mirror]]\nlocation = "127.0.0.1:9"\n'
        f'[[registry]]\nlocation = "{registry.host_port}/blocked"\nblocked = true\n'
    )
    env = dict(os.environ, HYBRIDSTORE_REGISTRIES_CONF=str(conf))

    def copy_to(dest: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HYBRIDSTORE, "--cache", str(tmp_path / "cache"), "copy", f"oci:{layout}:v1",
             f"docker://{dest}"],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip

    pushed = copy_to(f"{registry.host_port}/{repo_name}:v1")
    assert pushed.returncode == 0, pushed.stderr
    with registry.session() as s:
        tags = s.get(f"{registry.url}/v2/{repo_name}/tags/list", timeout=30).json()["tags"]
    assert tags == ["v1"]
    refused = copy_to(f"{registry.host_port}/blocked/x:v1")
    assert refused.returncode == 5
    assert refused.stderr.strip().count("\n") == 0 and "blocked" in refused.stderr

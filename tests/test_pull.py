"""``hybridstore pull`` end to end against the real distribution registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from support.faultproxy import FaultProxy
from support.oci_builder import Built, LayoutBuilder, SampleContent, push_built
from support.registry import Registry

import hybridstore.remote.repository
from hybridstore.errors import DigestMismatchError, NetworkError, NotFoundError
from hybridstore.pull import pull
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import verify_layout
from hybridstore.transfer.engine import CopyResult

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]


def push(built: Built, registry: Registry, dest: str) -> str:
    """Push ``built`` as ``dest`` (``repo:tag``); return the full reference."""
    push_built(built, registry, dest)
    return f"{registry.host_port}/{dest}"


def blob_files(layout: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (layout / "blobs" / "sha256").iterdir()}


def blob_gets(registry: Registry, since: int, digests: Iterable[str] | None = None) -> list[str]:
    wanted = set(digests) if digests is not None else None
    out = []
    for e in registry.access_log_requests(since):
        if e.method == "GET" and "/blobs/" in e.path:
            digest = e.path.rsplit("/", 1)[1]
            if wanted is None or digest in wanted:
                out.append(digest)
    return out


def ref_names(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_bytes())
    return {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }


def test_pull_image_then_warm_pull_makes_no_blob_get(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    built = oci_builder().image("v1", layers=3)
    pushed = push(built, registry, f"{repo_name}:v1")
    mark = registry.access_log_mark()
    cold = pull(pushed, layout=tmp_path / "a", cache=tmp_cache, transport=PLAIN)
    assert cold.digest == built.digest
    assert cold.fetched == 5 and cold.reused == 0  # 3 layers, config, manifest
    assert blob_files(tmp_path / "a") == set(built.blobs)
    assert sorted(blob_gets(registry, mark)) == sorted(b for b in built.blobs if b != built.digest)
    assert ref_names(tmp_path / "a") == {pushed: built.digest}

    mark = registry.access_log_mark()
    warm = pull(pushed, layout=tmp_path / "b", cache=tmp_cache, transport=PLAIN)
    assert warm.fetched == 0 and warm.bytes_transferred == 0
    assert blob_gets(registry, mark) == []
    assert blob_files(tmp_path / "b") == set(built.blobs)
    # hardlinks (or reflinks) out of one cache: same inode when hardlinked
    layer = built.layers[0].digest.split(":")[1]
    a, b = (tmp_path / d / "blobs/sha256" / layer for d in ("a", "b"))
    if "hardlink" in warm.link_modes:
        assert a.stat().st_ino == b.stat().st_ino


def test_multi_arch_platform_selection(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    built = oci_builder().index("multi")
    pushed = push(built, registry, f"{repo_name}:multi")
    arm = built.child("linux/arm64/v8")
    amd = built.child("linux/amd64")
    result = pull(
        pushed, layout=tmp_path / "arm", cache=tmp_cache, transport=PLAIN, platforms=["linux/arm64"]
    )
    # one platform: its manifest is the ref (as skopeo and crane record it), no sparse index
    assert (result.digest, result.index, result.platform) == (
        arm.digest,
        built.digest,
        "linux/arm64/v8",
    )
    have = blob_files(tmp_path / "arm")
    assert set(arm.blobs) == have
    assert not (set(amd.blobs) & have)

    pull(pushed, layout=tmp_path / "all", cache=tmp_cache, transport=PLAIN, all_platforms=True)
    assert blob_files(tmp_path / "all") == set(built.blobs)


def test_unknown_platform_is_a_clear_not_found(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    pushed = push(oci_builder().index("multi"), registry, f"{repo_name}:multi")
    with pytest.raises(NotFoundError, match="linux/s390x.*available"):
        pull(
            pushed,
            layout=tmp_path / "l",
            cache=tmp_cache,
            transport=PLAIN,
            platforms=["linux/s390x"],
        )
    assert not (tmp_path / "l" / "index.json").exists() or ref_names(tmp_path / "l") == {}


def test_chart_and_oras_artifact(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    b = oci_builder()
    chart, art = b.helm_chart("0.1.0"), b.artifact("a1")
    chart_ref = push(chart, registry, f"{repo_name}/charts/demo:0.1.0")
    art_ref = push(art, registry, f"{repo_name}/art:a1")
    layout = tmp_path / "charts"
    r1 = pull(f"oci://{chart_ref}", layout=layout, cache=tmp_cache, transport=PLAIN)
    r2 = pull(art_ref, layout=layout, cache=tmp_cache, transport=PLAIN)
    assert ref_names(layout) == {chart_ref: chart.digest, art_ref: art.digest}
    assert r1.media_type == r2.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert set(chart.blobs) | set(art.blobs) == blob_files(layout)


def test_missing_tag_is_not_found_and_layout_untouched(
    registry: Registry, repo_name: str, tmp_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError):
        pull(
            f"{registry.host_port}/{repo_name}:nope",
            layout=tmp_path / "l",
            cache=tmp_cache,
            transport=PLAIN,
        )
    assert not (tmp_path / "l" / "index.json").exists() or ref_names(tmp_path / "l") == {}


def test_concurrent_pulls_fetch_each_blob_once(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_path: Path,
) -> None:
    built = oci_builder().image("v1", layers=4, raw_layer_size=4 << 20)
    pushed = push(built, registry, f"{repo_name}:v1")
    cache = tmp_path / "cache"
    mark = registry.access_log_mark()
    env = dict(os.environ, HYBRIDSTORE_CACHE_DIR=str(cache))
    procs = [
        subprocess.Popen(
            [
                *HYBRIDSTORE,
                "pull",
                "--plain-http",
                "--json",
                "--layout",
                str(tmp_path / f"l{i}"),
                pushed,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
    gets = blob_gets(registry, mark, [b for b in built.blobs if b != built.digest])
    assert sorted(gets) == sorted(b for b in built.blobs if b != built.digest)
    for i in range(8):
        assert blob_files(tmp_path / f"l{i}") == set(built.blobs)
        report = verify_layout(OCILayout.open(tmp_path / f"l{i}"))
        assert report.ok, report.problems
    assert sum(json.loads(out)[0]["blobs_fetched"] for out, _ in outs) >= 5


@pytest.fixture
def big_image(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str, str]:
    """(repository:tag path, manifest digest, layer digest) of an image with a 3 MiB layer,
    streamed through the read-ahead thread (its threshold lowered), so faults are met there."""
    monkeypatch.setattr(hybridstore.remote.repository, "_READ_AHEAD_FROM", 1 << 20)
    built = oci_builder().image("v1", layers=1, raw_layer_size=3 << 20)
    push(built, registry, f"{repo_name}:v1")
    return f"{repo_name}:v1", built.digest, built.layers[0].digest


def pull_through(proxy: FaultProxy, path: str, layout: Path, cache: Path) -> CopyResult:
    """Pull ``repo:tag`` ``path`` through the fault proxy in front of the registry."""
    host = proxy.url.split("://", 1)[1]
    return pull(f"{host}/{path}", layout=layout, cache=cache, transport=PLAIN)


def test_truncated_blob_is_resumed_with_range(
    fault_proxy: FaultProxy,
    big_image: tuple[str, str, str],
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    path, digest, layer = big_image
    fault = fault_proxy.truncate(f"/blobs/{layer}", after_bytes=1 << 20, method="GET")
    res = pull_through(fault_proxy, path, tmp_path / "l", tmp_cache)
    assert res.digest == digest and fault.hits == 1
    ranged = [r for r in fault_proxy.requests if layer in r.path and r.headers.get("Range")]
    assert ranged and ranged[0].headers["Range"] == f"bytes={1 << 20}-"
    assert layer in blob_files(tmp_path / "l")


def test_server_ignoring_range_still_gives_a_correct_blob(
    fault_proxy: FaultProxy,
    big_image: tuple[str, str, str],
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    path, digest, layer = big_image
    fault_proxy.truncate(f"/blobs/{layer}", after_bytes=1 << 20, method="GET")
    fault_proxy.ignore_range(f"/blobs/{layer}")
    res = pull_through(fault_proxy, path, tmp_path / "l", tmp_cache)
    assert res.digest == digest
    assert layer in blob_files(tmp_path / "l")


def test_5xx_and_429_are_retried(
    fault_proxy: FaultProxy,
    big_image: tuple[str, str, str],
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    path, digest, layer = big_image
    seq = fault_proxy.fail_sequence("/manifests/", [500, 503])
    tmr = fault_proxy.too_many_requests(f"/blobs/{layer}", retry_after="0")
    res = pull_through(fault_proxy, path, tmp_path / "l", tmp_cache)
    assert res.digest == digest
    assert all(f.hits == 1 for f in seq) and tmr.hits == 1


def test_endless_503_fails_cleanly_without_tagging(
    fault_proxy: FaultProxy,
    big_image: tuple[str, str, str],
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    path, _, layer = big_image
    fault_proxy.fail(f"/blobs/{layer}", 503, times=None)
    with pytest.raises(NetworkError):
        pull_through(fault_proxy, path, tmp_path / "l", tmp_cache)
    assert not (tmp_path / "l" / "index.json").exists() or ref_names(tmp_path / "l") == {}
    assert not (tmp_cache / "blobs" / "sha256" / layer.split(":")[1]).exists()


def test_redirected_blob_get_sends_no_authorization_to_cdn(
    fault_proxy: FaultProxy,
    big_image: tuple[str, str, str],
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    path, digest, layer = big_image
    fault_proxy.redirect_to_cdn(f"/blobs/{layer}")
    res = pull_through(fault_proxy, path, tmp_path / "l", tmp_cache)
    assert res.digest == digest
    assert fault_proxy.cdn.requests and not fault_proxy.cdn.saw_authorization


def test_cli_pull_json_summary_and_bad_reference_exit_code(
    registry: Registry,
    registry_content: SampleContent,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    ref = registry_content.chart.ref
    done = subprocess.run(
        [*HYBRIDSTORE, "pull", "--plain-http", "--json", "--layout", str(tmp_path / "l"), ref],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)[0]
    assert summary["digest"] == registry_content.chart.digest
    assert summary["ref_name"] == ref
    bad = subprocess.run(
        [*HYBRIDSTORE, "pull", "--layout", str(tmp_path / "l"), "UPPER/Case:x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 10
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def cache_files(cache: Path) -> list[str]:
    """Every file the cache holds outside its bookkeeping (blobs and ingest partials)."""
    return sorted(
        str(p.relative_to(cache))
        for sub in ("blobs", "ingest")
        for p in (cache / sub).rglob("*")
        if p.is_file()
    )


@pytest.mark.parametrize("part", ["layer", "manifest"])
def test_digest_mismatch_from_a_lying_registry_publishes_nothing(
    fault_proxy: FaultProxy,
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
    part: str,
) -> None:
    """The registry answers with other bytes of the same length (every time, so retries
    meet the same lie): the requested digest is the truth, so nothing is published."""
    built = oci_builder().image("v1", layers=1)
    push(built, registry, f"{repo_name}:v1")
    blob = built.layers[0] if part == "layer" else built.manifest
    lie = bytes(b ^ 0x01 for b in blob.data)
    kind = "blobs" if part == "layer" else "manifests"
    fault = fault_proxy.fail(
        f"/{kind}/{blob.digest}",
        200,
        method="GET",
        times=None,
        headers={"Content-Type": blob.media_type, "Docker-Content-Digest": blob.digest},
        body=lie,
    )
    layout = tmp_path / "l"
    with pytest.raises(DigestMismatchError) as err:
        pull(
            f"{fault_proxy.host_port}/{repo_name}@{built.digest}",
            layout=layout,
            cache=tmp_cache,
            transport=PLAIN,
        )
    assert fault.hits >= 1
    assert blob.digest in str(err.value)
    published = [f for f in cache_files(tmp_cache) if f.startswith("blobs/")]
    assert f"blobs/sha256/{blob.digest.split(':')[1]}" not in published
    assert not [f for f in cache_files(tmp_cache) if f.startswith("ingest/")]
    if part == "manifest":
        assert published == []  # nothing below a manifest that failed is fetched
    assert not (layout / "index.json").exists() or OCILayout.open(layout).entries() == []


@pytest.mark.skopeo
@pytest.mark.umoci
def test_pulled_image_layout_is_read_by_skopeo_and_umoci(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    built = oci_builder().image("v1", layers=2)
    ref = push(built, registry, f"{repo_name}:v1")
    layout = tmp_path / "l"
    pull(ref, layout=layout, cache=tmp_cache, transport=PLAIN, ref_name="v1")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{layout}:v1"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert raw == built.manifest.data
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    for path, data in built.files.items():
        assert (bundle / "rootfs" / path).read_bytes() == data


def test_retry_times_and_retry_delay_on_the_command_line(
    fault_proxy: FaultProxy,
    registry_content: SampleContent,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    """``--retry-times 0`` gives up at the first 503; ``--retry-times 2`` with a fixed
    ``--retry-delay`` outlasts two of them."""
    chart = registry_content.chart
    ref = f"{fault_proxy.host_port}/{chart.repo}:{chart.tag}"

    def run(*opts: str) -> subprocess.CompletedProcess[str]:
        args = ["pull", "--plain-http", *opts, "--layout", str(tmp_path / "l"), ref]
        return subprocess.run([*HYBRIDSTORE, *args], capture_output=True, text=True, timeout=120)

    fault_proxy.fail_sequence("/manifests/", [503])
    once = run("--retry-times", "0")
    assert once.returncode == 6 and "503" in once.stderr, once.stderr
    faults = fault_proxy.fail_sequence("/manifests/", [503, 503])
    twice = run("--retry-times", "2", "--retry-delay", "0", "--timeout", "10")
    assert twice.returncode == 0, twice.stderr
    assert [f.hits for f in faults] == [1, 1]

"""``hybridstore push`` against the real distribution registry: round trips, interop with
skopeo, HEAD-skip, and both upload paths (monolithic and chunked)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.oci_builder import Built, LayoutBuilder, push_built, push_layout
from support.registry import Registry

from hybridstore.errors import DigestMismatchError, InvalidInputError
from hybridstore.pull import pull
from hybridstore.push import push
from hybridstore.remote.transport import TransportOptions
from hybridstore.remote.upload import UploadOptions

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]


@pytest.fixture(scope="module")
def registry_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A second registry, so round trips cross registries (no mounts, nothing shared)."""
    reg = Registry(tmp_path_factory.mktemp("registry-b"))
    reg.start()
    yield reg
    reg.stop()


def blobs_of(layout: Path) -> dict[str, bytes]:
    return {f"sha256:{p.name}": p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}


def uploads(registry: Registry, since: int) -> list[tuple[str, str]]:
    """(method, path) of every blob-upload request after ``since``."""
    return [
        (e.method, e.path)
        for e in registry.access_log_requests(since)
        if "/blobs/uploads/" in e.path
    ]


def manifest_at(registry: Registry, repo: str, reference: str) -> bytes:
    with registry.session() as s:
        resp = s.get(
            f"{registry.url}/v2/{repo}/manifests/{reference}",
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
            timeout=10,
        )
    assert resp.status_code == 200, resp.text
    return resp.content


def _referrers_content(b: LayoutBuilder, registry: Registry, repo: str) -> tuple[Built, list[str]]:
    """An image with an SBOM, and a signature of the SBOM, stored as a pre-1.1 client does."""
    subject = b.image("v1", layers=1)
    sbom = b.referrer(subject, "sbom")
    sig = b.referrer(sbom, "sig", artifact_type="application/vnd.hybridstore.test.signature")
    for built, tag in ((subject, "v1"), (sbom, "sbom"), (sig, "sig")):
        push_built(built, registry, f"{repo}:{tag}")
    for subj, refs in ((subject, [sbom]), (sbom, [sig])):
        index = b.referrers_index(subj, refs)
        assert index.ref_name is not None
        push_layout(b.path, index.ref_name, registry, f"{repo}:{index.ref_name}", method="http")
    return subject, [sbom.digest, sig.digest]


@pytest.mark.parametrize("kind", ["image", "index", "chart", "oras-artifact", "referrers"])
def test_round_trip_keeps_every_digest(
    kind: str,
    registry: Registry,
    registry_b: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    """registry A -> layout -> registry B -> layout2: same manifests, same blobs."""
    b = oci_builder()
    attached: list[str] = []
    if kind == "referrers":
        built, attached = _referrers_content(b, registry, repo_name)
    else:
        built = {
            "image": lambda: b.image("v1", layers=2),
            "index": lambda: b.index("v1"),
            "chart": lambda: b.helm_chart("v1"),
            "oras-artifact": lambda: b.artifact("v1"),
        }[kind]()
        push_built(built, registry, f"{repo_name}:v1")
    src = f"{registry.host_port}/{repo_name}:v1"
    dst = f"{registry_b.host_port}/{repo_name}:v1"
    opts = dict(cache=tmp_cache, transport=PLAIN, all_platforms=True, include_referrers=True)

    first = pull(src, layout=tmp_path / "l1", **opts)  # type: ignore[arg-type]
    pushed = push(tmp_path / "l1", src, dst, transport=PLAIN, include_referrers=True)
    second = pull(dst, layout=tmp_path / "l2", **opts)  # type: ignore[arg-type]

    assert first.digest == pushed.digest == second.digest == built.digest
    assert sorted(first.referrers) == sorted(pushed.referrers) == sorted(second.referrers)
    assert sorted(second.referrers) == sorted(attached)
    one, two = blobs_of(tmp_path / "l1"), blobs_of(tmp_path / "l2")
    assert one == two
    assert set(built.blobs) <= set(two)
    if kind == "referrers":
        # registry B has no referrers API: push wrote the tag-schema index itself
        fallback = json.loads(manifest_at(registry_b, repo_name, built.digest.replace(":", "-")))
        assert [m["digest"] for m in fallback["manifests"]] == attached[:1]
        assert fallback["manifests"][0]["artifactType"] == "application/vnd.hybridstore.test.sbom"


@pytest.mark.skopeo
def test_layout_written_by_skopeo_round_trips_unchanged(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
    skopeo_bin: str,
) -> None:
    built = oci_builder().image("v1", layers=2)
    push_built(built, registry, f"{repo_name}/src:v1")

    def skopeo(src: str, dst: str) -> None:
        done = subprocess.run(
            [skopeo_bin, "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"]
            + ["--dest-tls-verify=false", "--preserve-digests", src, dst],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    skopeo(f"docker://{registry.host_port}/{repo_name}/src:v1", f"oci:{tmp_path / 'sk'}:v1")
    target = f"{registry.host_port}/{repo_name}/dst:v1"
    done = subprocess.run(
        [*HYBRIDSTORE, "push", "--plain-http", "--json", "--layout", str(tmp_path / "sk")]
        + ["v1", target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["digest"] == built.digest
    skopeo(f"docker://{target}", f"oci:{tmp_path / 'back'}:v1")

    def root(layout: Path) -> str:
        return str(json.loads((layout / "index.json").read_bytes())["manifests"][0]["digest"])

    assert root(tmp_path / "sk") == root(tmp_path / "back") == built.digest
    assert blobs_of(tmp_path / "sk") == blobs_of(tmp_path / "back")


def test_push_sends_only_what_the_registry_lacks(
    registry: Registry,
    registry_b: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    b = oci_builder()
    base = b.image("v1", layers=2)
    derived = b.image("v2", layers=1, base_layers=base.layers)
    for built, tag in ((base, "v1"), (derived, "v2")):
        push_built(built, registry, f"{repo_name}:{tag}")
        pull(f"{registry.host_port}/{repo_name}:{tag}", layout=tmp_path / "l", transport=PLAIN)
    name = f"{registry.host_port}/{repo_name}"
    target = f"{registry_b.host_port}/{repo_name}"

    push(tmp_path / "l", f"{name}:v1", f"{target}:v1", transport=PLAIN)
    mark = registry_b.access_log_mark()
    again = push(tmp_path / "l", f"{name}:v1", f"{target}:v1", transport=PLAIN)
    assert uploads(registry_b, mark) == []
    assert again.uploaded == 0 and again.present == len(base.blobs)
    writes = [e for e in registry_b.access_log_requests(mark) if e.method not in ("HEAD", "GET")]
    assert writes == []  # not even the manifest: the tag already names it

    mark = registry_b.access_log_mark()
    result = push(tmp_path / "l", f"{name}:v2", f"{target}:v2", transport=PLAIN)
    finished = [p for m, p in uploads(registry_b, mark) if m == "PUT"]
    new_blobs = {derived.config.digest, derived.layers[-1].digest}
    assert {p.rsplit("digest=", 1)[1] for p in finished} == new_blobs
    assert result.present == 2  # the shared base layers: one HEAD each


@pytest.fixture
def big_layout(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> tuple[Path, str, Built]:
    """A layout holding an image with one 3 MiB + 5 byte layer; (dir, ref name, built)."""
    built = oci_builder().image("v1", layers=1, raw_layer_size=(3 << 20) + 5)
    push_built(built, registry, f"{repo_name}:v1")
    ref = f"{registry.host_port}/{repo_name}:v1"
    pull(ref, layout=tmp_path / "l", transport=PLAIN)
    return tmp_path / "l", ref, built


def test_chunked_upload_sends_patches_of_the_chunk_size(
    big_layout: tuple[Path, str, Built], registry_b: Registry, repo_name: str, tmp_path: Path
) -> None:
    layout, ref, built = big_layout
    target = f"{registry_b.host_port}/{repo_name}/chunked:v1"
    mark = registry_b.access_log_mark()
    push(
        layout,
        ref,
        target,
        transport=PLAIN,
        upload=UploadOptions(chunk_size=1 << 20, chunked_above=0, single_post_max=0),
    )
    log = uploads(registry_b, mark)
    assert [m for m, _ in log].count("PATCH") == 4 + 1  # 3 MiB + 5 bytes, then the config
    layer = built.layers[0].digest
    assert "PUT" in [m for m, p in log if p.endswith(f"digest={layer}")]
    back = pull(target, layout=tmp_path / "back", transport=PLAIN)  # verifies every digest
    assert back.digest == built.digest


def test_monolithic_upload_is_one_put_and_each_byte_goes_out_once(
    big_layout: tuple[Path, str, Built], registry_b: Registry, repo_name: str, tmp_path: Path
) -> None:
    layout, ref, built = big_layout
    target = f"{registry_b.host_port}/{repo_name}/mono:v1"
    mark = registry_b.access_log_mark()
    result = push(layout, ref, target, transport=PLAIN, concurrency=1)
    log = uploads(registry_b, mark)
    assert [m for m, _ in log].count("PATCH") == 0
    puts = [p for m, p in log if m == "PUT"]
    assert sorted(p.rsplit("digest=", 1)[1] for p in puts) == sorted(
        [built.layers[0].digest, built.config.digest]
    )
    # No single POST with a body by default: distribution would ignore it (202), and
    # the blob would go out twice.
    assert [p for m, p in log if m == "POST" and "digest=" in p] == []
    blob_bytes = built.layers[0].size + built.config.size
    assert result.bytes_transferred == blob_bytes + built.manifest.size  # once each
    back = pull(target, layout=tmp_path / "back", transport=PLAIN)
    assert back.digest == built.digest


def test_single_post_asked_for_falls_back_once_where_the_registry_ignores_it(
    big_layout: tuple[Path, str, Built], registry_b: Registry, repo_name: str, tmp_path: Path
) -> None:
    layout, ref, built = big_layout
    target = f"{registry_b.host_port}/{repo_name}/single:v1"
    mark = registry_b.access_log_mark()
    upload = UploadOptions(single_post_max=64 << 10)
    push(layout, ref, target, transport=PLAIN, concurrency=1, upload=upload)
    log = uploads(registry_b, mark)
    # distribution ignores a single POST's body: tried once (the config), then POST+PUT
    single = [p for m, p in log if m == "POST" and "digest=" in p]
    assert len(single) == 1
    assert pull(target, layout=tmp_path / "back", transport=PLAIN).digest == built.digest


def test_push_all_restores_every_ref_into_another_registry(
    registry: Registry,
    registry_b: Registry,
    registry_content,  # type: ignore[no-untyped-def]
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    layout = tmp_path / "site"
    for item in (registry_content.image, registry_content.chart):
        pull(item.ref, layout=layout, transport=PLAIN, include_referrers=True)
    done = subprocess.run(
        [*HYBRIDSTORE, "push", "--plain-http", "--json", "--layout", str(layout), "--all"]
        + ["--registry", registry_b.host_port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert sorted(r["digest"] for r in results) == sorted(
        [registry_content.image.digest, registry_content.chart.digest]
    )
    # the SBOM went along with its image, and the fallback tag was not pushed as a ref
    image = next(r for r in results if r["digest"] == registry_content.image.digest)
    assert image["referrers"] == [registry_content.referrer.digest]
    assert len(results) == 2
    moved = f"{registry_b.host_port}/{registry_content.image.repo}:v1"
    assert pull(moved, layout=tmp_path / "check", transport=PLAIN).digest == (
        registry_content.image.digest
    )


def test_push_needs_a_target_for_a_short_name_and_refuses_corrupt_blobs(
    oci_builder: Callable[..., LayoutBuilder],
    registry_b: Registry,
    repo_name: str,
    tmp_path: Path,
) -> None:
    b = oci_builder()
    built = b.image("v1", layers=1)
    with pytest.raises(InvalidInputError, match="TARGET"):
        push(b.path, "v1", transport=PLAIN)
    layer = b.blob_path(built.layers[0].digest)
    data = bytearray(layer.read_bytes())
    data[100] ^= 0xFF  # same size, wrong bytes
    layer.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="layout verify"):
        push(b.path, "v1", f"{registry_b.host_port}/{repo_name}:v1", transport=PLAIN)


def test_push_and_mount_with_token_auth_ask_for_the_right_scopes(
    registry_factory,  # type: ignore[no-untyped-def]
    oci_builder: Callable[..., LayoutBuilder],
    tmp_cache: Path,
) -> None:
    from hybridstore.copy import copy
    from hybridstore.remote.credentials import Credential

    reg = registry_factory(auth="token")
    user, password = reg.credentials
    cred = Credential(username=user, password=password)
    b = oci_builder()
    b.image("v1", layers=1)
    push(b.path, "v1", f"{reg.host_port}/team/app:v1", transport=PLAIN, credential=cred)
    result = copy(
        f"{reg.host_port}/team/app:v1",
        f"{reg.host_port}/team/mirror:v1",
        cache=tmp_cache,
        transport=PLAIN,
        src_credential=cred,
        dest_credential=cred,
    )
    assert result.mounted == 2  # config and layer, no bytes moved
    scopes = {s for r in reg.token_server.requests for s in r.query.get("scope", [])}
    assert "repository:team/app:pull,push" in scopes
    assert {"repository:team/mirror:pull,push", "repository:team/app:pull"} <= scopes


def test_push_of_a_pulled_ref_into_its_registry_mounts_from_the_recorded_repo(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    """The layout records where a ref came from (its full name): pushing it into another
    repository of that registry mounts every blob instead of sending it."""
    built = oci_builder().image("v1", layers=2)
    push_built(built, registry, f"{repo_name}/a:v1")
    source = f"{registry.host_port}/{repo_name}/a:v1"
    pull(source, layout=tmp_path / "l", transport=PLAIN)
    mark = registry.access_log_mark()
    result = push(tmp_path / "l", source, f"{registry.host_port}/{repo_name}/b:v1", transport=PLAIN)
    log = uploads(registry, mark)
    blobs = {built.config.digest, *(layer.digest for layer in built.layers)}
    mounts = [p for m, p in log if m == "POST" and "mount=" in p]
    assert {p.split("mount=")[1].split("&")[0] for p in mounts} == blobs
    assert all(f"from={repo_name}/a" in p for p in mounts)
    assert not [p for m, p in log if m in ("PATCH", "PUT")]
    assert result.mounted == len(blobs) and result.bytes_transferred == built.manifest.size

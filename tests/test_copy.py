"""``hybridstore copy`` between registries and layouts, against the real registry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder, push_built
from support.registry import Registry

from hybridstore.copy import copy
from hybridstore.errors import InvalidInputError
from hybridstore.remote.transport import TransportOptions
from hybridstore.transfer.locator import parse_location

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]


def test_copy_between_repositories_of_one_registry_mounts_every_blob(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
) -> None:
    built = oci_builder().index("v1")
    push_built(built, registry, f"{repo_name}/a:v1")
    mark = registry.access_log_mark()
    result = copy(
        f"docker://{registry.host_port}/{repo_name}/a:v1",
        f"{registry.host_port}/{repo_name}/b:v1",
        cache=tmp_cache,
        transport=PLAIN,
    )
    assert result.digest == built.digest
    log = registry.access_log_requests(mark)
    mounts = [e for e in log if e.method == "POST" and "mount=" in e.path]
    manifests = {built.digest, *(i.digest for i in built.images)}
    layer_blobs = {d for d in built.blobs if d not in manifests}
    assert {e.path.split("mount=")[1].split("&")[0] for e in mounts} == layer_blobs
    assert all(e.status == 201 and f"from={repo_name}/a" in e.path for e in mounts)
    assert not [e for e in log if e.method in ("PATCH", "PUT") and "/blobs/" in e.path]
    assert not [e for e in log if e.method == "GET" and "/blobs/" in e.path]
    assert result.mounted == len(layer_blobs)
    cached = {p.name for p in tmp_cache.glob("blobs/sha256/*")}
    assert not cached & {d.split(":")[1] for d in layer_blobs}  # nothing was downloaded


def test_copy_registry_to_registry_stages_through_the_cache(
    registry: Registry,
    registry_factory,  # type: ignore[no-untyped-def]
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    other = registry_factory()
    b = oci_builder()
    image = b.image("v1", layers=2)
    sbom = b.referrer(image, "sbom")
    push_built(image, registry, f"{repo_name}:v1")
    push_built(sbom, registry, f"{repo_name}:sbom")
    index = b.referrers_index(image, [sbom], tag=False)
    push_built(index, registry, f"{repo_name}:{image.digest.replace(':', '-')}")
    result = copy(
        f"{registry.host_port}/{repo_name}:v1",
        f"{other.host_port}/mirror/app:v1",
        cache=tmp_cache,
        transport=PLAIN,
        include_referrers=True,
    )
    assert result.digest == image.digest and result.referrers == [sbom.digest]
    staged = {p.name for p in (tmp_cache / "blobs" / "sha256").iterdir()}
    assert {d.split(":")[1] for d in image.blobs} <= staged
    # and from the mirror into a layout, referrers and all, digests unchanged
    back = copy(
        f"{other.host_port}/mirror/app:v1",
        f"oci:{tmp_path / 'l'}",
        cache=tmp_cache,
        transport=PLAIN,
        include_referrers=True,
    )
    assert back.digest == image.digest and back.referrers == [sbom.digest]
    names = json.loads((tmp_path / "l" / "index.json").read_bytes())["manifests"]
    assert {m["annotations"]["org.opencontainers.image.ref.name"] for m in names} == {
        f"{other.host_port}/mirror/app:v1",
        f"{other.host_port}/mirror/app:{image.digest.replace(':', '-')}",
    }


def test_copy_layout_to_layout_and_one_platform_into_a_registry(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    b = oci_builder()
    built = b.index("multi")
    done = subprocess.run(
        [*HYBRIDSTORE, "copy", "--json", "--all-platforms", f"oci:{b.path}:multi"]
        + [f"oci:{tmp_path / 'copy'}:site/multi:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["digest"] == built.digest
    files = {p.name for p in (tmp_path / "copy" / "blobs" / "sha256").iterdir()}
    assert files == {d.split(":")[1] for d in built.blobs}

    arm = built.child("linux/arm64/v8")
    result = copy(
        f"oci:{tmp_path / 'copy'}:site/multi:1",
        f"{registry.host_port}/{repo_name}:arm",
        cache=tmp_cache,
        transport=PLAIN,
        platforms=["linux/arm64"],
    )
    assert result.digest == arm.digest  # the platform's manifest became the target


def test_copy_through_an_oci_archive_keeps_digests(
    registry: Registry,
    registry_content,  # type: ignore[no-untyped-def]
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    index = registry_content.index
    archive = tmp_path / "site.tar"
    first = copy(index.ref, f"oci-archive:{archive}", cache=tmp_cache, transport=PLAIN)
    assert archive.is_file() and first.digest == index.digest
    done = subprocess.run(
        [*HYBRIDSTORE, "copy", "--json", "--all-platforms", f"oci-archive:{archive}:{index.ref}"]
        + [f"oci:{tmp_path / 'l'}:restored"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["digest"] == index.digest
    assert not list(tmp_cache.parent.glob(".hybridstore-*"))  # staging layouts are gone


def test_copy_refuses_unknown_transports_clearly(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="unknown transport"):
        parse_location("ftp://example.com/x")
    with pytest.raises(InvalidInputError, match="no path"):
        parse_location("oci:")
    loc = parse_location("oci:/tmp/l:127.0.0.1:5000/app:1.0")
    assert (str(loc.path), loc.name) == ("/tmp/l", "127.0.0.1:5000/app:1.0")
    assert parse_location("oci://r.example.com/c/app:1").kind == "registry"
    done = subprocess.run(
        [*HYBRIDSTORE, "copy", "dir:/tmp/x", f"oci:{tmp_path / 'l'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 10 and done.stderr.count("\n") == 1

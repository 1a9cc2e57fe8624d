"""``hybridstore export`` / ``import``: round trips, determinism, skopeo interop, conflicts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder

from hybridstore.archive.export import compression_for, export_layout, export_to_path
from hybridstore.archive.importer import ImportLimits, import_archive
from hybridstore.errors import (
    ConflictError,
    CorruptionError,
    InvalidArchiveError,
    InvalidInputError,
    NotFoundError,
)
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import verify_layout

HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]
IMAGE = "registry.example.com/team/app:1.0"
INDEX = "registry.example.com/team/multi:2.0"
CHART = "registry.example.com/charts/demo:0.1.0"
SBOM = "registry.example.com/team/app:sbom"
SUFFIXES = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}


def build_sample(b: LayoutBuilder, order: tuple[str, ...] = ("image", "index", "chart")) -> None:
    """One of each kind, built in ``order`` (index.json order differs, content does not)."""
    for kind in order:
        if kind == "image":
            image = b.image(IMAGE, layers=2)
            b.referrer(image, SBOM)
        elif kind == "index":
            b.index(INDEX)
        else:
            b.helm_chart(CHART)


def refs_of(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_bytes())
    return {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }


def blob_names(layout: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (layout / "blobs" / "sha256").iterdir()}


def reachable(b: LayoutBuilder, *names: str) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= set(b.refs[name].blobs)
    return out


def members(archive: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        return tar.getmembers()


@pytest.fixture
def sample(oci_builder: Callable[..., LayoutBuilder]) -> LayoutBuilder:
    b = oci_builder("source")
    build_sample(b)
    return b


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_round_trip_preserves_every_digest(
    sample: LayoutBuilder, tmp_path: Path, tmp_cache: Path, compression: str
) -> None:
    archive = tmp_path / f"out{SUFFIXES[compression]}"
    exported = export_to_path(sample.path, archive)
    assert exported.compression == compression
    assert archive.read_bytes()[:4] != b"" and not list(tmp_path.glob(".out*.tmp"))

    result = import_archive(archive, tmp_path / "dest", cache=tmp_cache)
    assert result.compression == compression
    assert refs_of(tmp_path / "dest") == refs_of(sample.path)
    assert blob_names(tmp_path / "dest") == blob_names(sample.path)
    assert result.blobs_ingested == len(blob_names(sample.path)) == exported.blobs
    for digest in blob_names(sample.path):
        hexpart = digest.split(":")[1]
        data = (tmp_path / "dest" / "blobs/sha256" / hexpart).read_bytes()
        assert hashlib.sha256(data).hexdigest() == hexpart
    assert verify_layout(OCILayout.open(tmp_path / "dest")).ok
    assert "hardlink" in result.link_modes or "reflink" in result.link_modes


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_same_content_gives_byte_identical_archives(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path, compression: str
) -> None:
    first, second = oci_builder("a"), oci_builder("b")
    build_sample(first, ("image", "index", "chart"))
    build_sample(second, ("chart", "image", "index"))  # other index.json order, other mtimes
    os.utime(second.path / "index.json", (1, 1))
    out = [tmp_path / f"{n}{SUFFIXES[compression]}" for n in ("1", "2", "3")]
    export_to_path(first.path, out[0])
    export_to_path(first.path, out[1])
    export_to_path(second.path, out[2])
    assert out[0].read_bytes() == out[1].read_bytes() == out[2].read_bytes()


def test_archive_layout_and_fixed_metadata(sample: LayoutBuilder) -> None:
    buf = io.BytesIO()
    export_layout(sample.path, buf, [INDEX])
    infos = members(buf.getvalue())
    names = [i.name for i in infos]
    assert names[:4] == ["oci-layout", "index.json", "blobs", "blobs/sha256"]
    order = [n.removeprefix("blobs/sha256/") for n in names[4:]]
    assert sorted(order) == sorted(d.split(":")[1] for d in reachable(sample, INDEX))
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:  # parents first
        for i, enc in enumerate(order):
            data = tar.extractfile(f"blobs/sha256/{enc}").read()  # type: ignore[union-attr]
            doc = json.loads(data) if data.startswith(b"{") else {}
            if "schemaVersion" not in doc:
                continue  # a config or layer
            listed = [*doc.get("manifests", []), *doc.get("layers", []), doc.get("config")]
            kids = [d["digest"].split(":")[1] for d in listed if d]
            assert all(order.index(k) > i for k in kids), f"{enc} comes after what it lists"
    for info in infos:
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert info.mode == (0o755 if info.isdir() else 0o644)
        assert info.isdir() or info.isfile()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        index = json.loads(f.read())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        INDEX
    ]
    assert len(buf.getvalue()) % 10240 == 0  # whole tar records


def test_export_by_tag_includes_subject_of_a_referrer(sample: LayoutBuilder) -> None:
    buf = io.BytesIO()
    result = export_layout(sample.path, buf, ["sbom"])  # an unambiguous bare tag
    assert [name for name, _ in result.refs] == [SBOM]
    files = [i.name for i in members(buf.getvalue()) if i.isfile()]
    digests = {"sha256:" + n.rsplit("/", 1)[1] for n in files if n.startswith("blobs/")}
    assert digests == reachable(sample, SBOM) | reachable(sample, IMAGE)  # the subject image too


def test_export_fails_on_a_damaged_or_missing_blob(sample: LayoutBuilder, tmp_path: Path) -> None:
    layer = sample.refs[CHART].blobs
    chart_layer = next(d for d, b in layer.items() if b.media_type.endswith("tar+gzip"))
    path = sample.blob_path(chart_layer)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="damaged"):
        export_to_path(sample.path, tmp_path / "bad.tar", [CHART])
    assert list(tmp_path.glob("*bad.tar*")) == []  # no partial archive, no temp file
    path.unlink()
    with pytest.raises(NotFoundError, match="is not in layout"):
        export_to_path(sample.path, tmp_path / "bad.tar", [CHART])
    with pytest.raises(NotFoundError):
        export_layout(sample.path, io.BytesIO(), ["no-such-ref"])


def test_sparse_index_round_trips(sample: LayoutBuilder, tmp_path: Path, tmp_cache: Path) -> None:
    """A platform-selected pull keeps only some children of an index: still exportable."""
    index = sample.refs[INDEX]
    dropped = index.images[1]
    for digest in dropped.blobs:
        sample.blob_path(digest).unlink()
    archive = _export(sample.path, tmp_path / "sparse.tar", [INDEX])
    result = import_archive(archive, tmp_path / "dest", cache=tmp_cache)
    assert result.refs[0][1].digest.encoded == index.manifest.hex
    assert blob_names(tmp_path / "dest") == reachable(sample, INDEX) - set(dropped.blobs)
    report = verify_layout(OCILayout.open(tmp_path / "dest"))
    assert report.ok and report.absent == [dropped.digest]
    sample.blob_path(index.images[0].layers[0].digest).unlink()  # a kept child must be whole
    with pytest.raises(NotFoundError, match="is not in layout"):
        export_layout(sample.path, io.BytesIO(), [INDEX])


def test_cli_pipes_export_into_import(
    sample: LayoutBuilder, tmp_path: Path, tmp_cache: Path
) -> None:
    export = subprocess.Popen(
        [*HYBRIDSTORE, "export", "--layout", str(sample.path), "-o", "-", "--compress", "zstd",
         IMAGE, CHART],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    imported = subprocess.run(
        [*HYBRIDSTORE, "import", "-", "--layout", str(tmp_path / "dest"), "--json"],
        stdin=export.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert export.stdout is not None
    export.stdout.close()
    assert export.wait() == 0, export.stderr.read() if export.stderr else ""
    assert imported.returncode == 0, imported.stderr
    summary = json.loads(imported.stdout)
    assert summary["compression"] == "zstd"
    assert {r["name"] for r in summary["refs"]} == {IMAGE, CHART}
    assert refs_of(tmp_path / "dest") == {
        IMAGE: sample.refs[IMAGE].digest,
        CHART: sample.refs[CHART].digest,
    }


def test_import_conflict_needs_overwrite(
    sample: LayoutBuilder, oci_builder: Callable[..., LayoutBuilder], tmp_path: Path,
    tmp_cache: Path,
) -> None:  # fmt: skip
    dest = tmp_path / "dest"
    import_archive(_export(sample.path, tmp_path / "a.tar", [CHART]), dest, cache=tmp_cache)
    other = oci_builder("other", seed="other")
    newer = other.helm_chart(CHART, version="0.2.0")
    archive = _export(other.path, tmp_path / "b.tar", [CHART])
    before = (dest / "index.json").read_bytes()

    with pytest.raises(ConflictError, match="--overwrite"):
        import_archive(archive, dest, cache=tmp_cache)
    assert (dest / "index.json").read_bytes() == before
    layer = newer.layers[0].hex
    assert not (tmp_cache / "blobs/sha256" / layer).exists()  # refused before the blobs

    proc = subprocess.run(
        [*HYBRIDSTORE, "--cache", str(tmp_cache), "import", str(archive), "--layout", str(dest)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 8 and proc.stderr.count("\n") == 1, proc.stderr
    result = import_archive(archive, dest, cache=tmp_cache, overwrite=True)
    assert result.replaced == [CHART]
    assert refs_of(dest) == {CHART: newer.digest}

    again = import_archive(archive, dest, cache=tmp_cache)  # same digest: not a conflict
    assert again.replaced == [] and again.blobs_ingested == 0
    assert again.blobs_present == len(newer.blobs)


def test_import_ref_name_and_limits(sample: LayoutBuilder, tmp_path: Path, tmp_cache: Path) -> None:
    one = _export(sample.path, tmp_path / "one.tar", [CHART])
    result = import_archive(one, tmp_path / "d1", cache=tmp_cache, ref_name="local/chart:x")
    assert refs_of(tmp_path / "d1") == {"local/chart:x": sample.refs[CHART].digest}
    both = _export(sample.path, tmp_path / "both.tar", [CHART, IMAGE])
    with pytest.raises(InvalidInputError, match="exactly one"):
        import_archive(both, tmp_path / "d2", cache=tmp_cache, ref_name="x")
    with pytest.raises(InvalidArchiveError, match="more than 3 entries"):
        import_archive(both, tmp_path / "d3", cache=tmp_cache, limits=ImportLimits(max_entries=3))
    with pytest.raises(InvalidArchiveError, match="import limit"):
        import_archive(both, tmp_path / "d4", cache=tmp_cache, limits=ImportLimits(max_size=4096))
    assert result.refs[0][0] == "local/chart:x"
    assert not (tmp_path / "d3").exists() and not (tmp_path / "d4").exists()  # nothing left


def test_compression_for_file_names() -> None:
    assert [compression_for(n) for n in ("a.tar", "a.tar.gz", "a.tgz", "a.TAR.ZST", "a")] == [
        "none", "gzip", "gzip", "zstd", "none",
    ]  # fmt: skip


def _export(layout: Path, path: Path, names: list[str]) -> Path:
    export_to_path(layout, path, names)
    return path


# --- skopeo interop -------------------------------------------------------------------------


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.skopeo
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_skopeo_reads_an_exported_archive(
    sample: LayoutBuilder, tmp_path: Path, compression: str
) -> None:
    archive = tmp_path / f"site{SUFFIXES[compression]}"
    export_to_path(sample.path, archive)
    # NAME is the full ref name exactly as recorded; skopeo splits FILE at the first ':'.
    raw = _skopeo("inspect", "--raw", f"oci-archive:{archive}:{IMAGE}").stdout
    assert raw.encode() == sample.refs[IMAGE].manifest.data
    out = tmp_path / "copied"
    _skopeo("copy", "--all", "--preserve-digests", f"oci-archive:{archive}:{INDEX}",
            f"oci:{out}:multi")  # fmt: skip
    assert refs_of(out) == {"multi": sample.refs[INDEX].digest}
    assert blob_names(out) == reachable(sample, INDEX)


@pytest.mark.skopeo
def test_imports_archives_written_by_skopeo(
    sample: LayoutBuilder, tmp_path: Path, tmp_cache: Path
) -> None:
    named = tmp_path / "named.tar"
    _skopeo("copy", "--preserve-digests", f"oci:{sample.path}:{IMAGE}",
            f"oci-archive:{named}:{IMAGE}")  # fmt: skip
    result = import_archive(named, tmp_path / "dest", cache=tmp_cache)
    assert refs_of(tmp_path / "dest") == {IMAGE: sample.refs[IMAGE].digest}
    assert result.blobs_ingested == len(sample.refs[IMAGE].blobs)

    unnamed = tmp_path / "unnamed.tar"  # skopeo records no ref name without one
    _skopeo("copy", "--preserve-digests", f"oci:{sample.path}:{CHART}", f"oci-archive:{unnamed}")
    with pytest.raises(InvalidArchiveError, match="--ref-name"):
        import_archive(unnamed, tmp_path / "dest", cache=tmp_cache)
    assert refs_of(tmp_path / "dest") == {IMAGE: sample.refs[IMAGE].digest}
    import_archive(unnamed, tmp_path / "dest", cache=tmp_cache, ref_name="charts/demo:0.1.0")
    assert refs_of(tmp_path / "dest")["charts/demo:0.1.0"] == sample.refs[CHART].digest
    assert verify_layout(OCILayout.open(tmp_path / "dest")).ok


def test_import_through_an_existing_cache_reuses_blobs(
    sample: LayoutBuilder, tmp_path: Path, tmp_cache: Path
) -> None:
    archive = _export(sample.path, tmp_path / "all.tar.gz", [])
    first = import_archive(archive, tmp_path / "a", cache=tmp_cache)
    second = import_archive(archive, tmp_path / "b", cache=BlobCache(tmp_cache))
    assert first.bytes_ingested > 0 and second.bytes_ingested == 0
    assert second.blobs_present == first.blobs_ingested
    some = next(iter(blob_names(sample.path))).split(":")[1]
    a, b = (tmp_path / d / "blobs/sha256" / some for d in ("a", "b"))
    if second.link_modes.get("hardlink"):
        cached = tmp_cache / "blobs/sha256" / some
        assert os.stat(a).st_ino == os.stat(b).st_ino == os.stat(cached).st_ino
    shutil.rmtree(tmp_path / "a")
    assert verify_layout(OCILayout.open(tmp_path / "b")).ok

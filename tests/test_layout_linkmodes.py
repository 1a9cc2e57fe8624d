"""Blobs entering a layout through the shared cache: hardlink, reflink (real XFS), copy
across filesystems, and EMLINK on one blob."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.oci_builder import Blob, BuiltArtifact, BuiltImage, LayoutBuilder

from hybridstore.errors import DigestMismatchError, LinkError, NotFoundError
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.store import linking
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import verify_layout
from hybridstore.store.linking import LinkMode

NAME = "registry.example.com/test/app:1.0"


def _push(layout: OCILayout, built: BuiltImage | BuiltArtifact, name: str | None = NAME) -> None:
    """Push every blob of ``built`` through the cache, children first, then tag it."""
    order = [*built.layers, built.config, built.manifest]
    for blob in order:
        layout.push_bytes(Descriptor.from_json(blob.descriptor()), blob.data)
    if name is not None:
        layout.tag(Descriptor.from_json(built.descriptor()), name)


def _blobs(built: BuiltImage | BuiltArtifact) -> list[Blob]:
    return list(built.blobs.values())


def _ino(path: Path) -> int:
    return os.stat(path).st_ino


@pytest.fixture
def scratch(tmp_path: Path) -> LayoutBuilder:
    """Builds content (in a throwaway layout) for the tests to push."""
    return LayoutBuilder(tmp_path / "scratch")


# --- storage interface -----------------------------------------------------------------------


def test_push_goes_through_the_cache_and_hardlinks(tmp_path: Path, scratch: LayoutBuilder) -> None:
    cache = BlobCache(tmp_path / "cache")
    layout = OCILayout.create(tmp_path / "layout", cache=cache, link_mode="hardlink")
    img = scratch.image(None, layers=2)
    _push(layout, img)
    for blob in _blobs(img):
        d = Digest.parse(blob.digest)
        assert _ino(layout.blob_path(d)) == _ino(cache.path(d))
        assert os.stat(cache.path(d)).st_nlink == 2
        with layout.fetch(Descriptor.from_json(blob.descriptor())) as f:
            assert f.read() == blob.data
    assert layout.resolve(NAME).digest == Digest.parse(img.digest)
    assert layout.add_blob_from_cache(Digest.parse(img.config.digest), img.config.size) is None

    # The cache goes away entirely (prune, rm -rf): the layout does not care.
    shutil.rmtree(cache.root)
    report = verify_layout(OCILayout.open(tmp_path / "layout"))
    assert report.ok, report.problems
    assert report.blobs_checked == len(_blobs(img))


def test_push_stream_verifies_before_anything_is_linked(
    tmp_path: Path, scratch: LayoutBuilder
) -> None:
    layout = OCILayout.create(tmp_path / "layout", cache=BlobCache(tmp_path / "cache"))
    img = scratch.image(None, layers=1)
    layer = img.layers[0]
    desc = Descriptor.from_json(layer.descriptor())
    with pytest.raises(DigestMismatchError):
        layout.push(desc, io.BytesIO(b"\0" * layer.size))
    assert not layout.exists(desc)
    layout.push(desc, io.BytesIO(layer.data))
    assert layout.exists(desc)
    assert layout.blob_path(desc.digest).read_bytes() == layer.data


def test_a_wrong_size_layout_blob_is_replaced(tmp_path: Path, scratch: LayoutBuilder) -> None:
    cache = BlobCache(tmp_path / "cache")
    layout = OCILayout.create(tmp_path / "layout", cache=cache, link_mode="copy")
    blob = scratch.image(None, layers=1).layers[0]
    desc = Descriptor.from_json(blob.descriptor())
    cache.ingest_bytes(desc.digest, blob.data)
    path = layout.blob_path(desc.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob.data[:10])  # a truncated leftover
    assert not layout.exists(desc)
    assert layout.add_blob_from_cache(desc.digest, desc.size) is LinkMode.COPY
    assert path.read_bytes() == blob.data


def test_emlink_on_the_shared_tiny_blob_copies_only_that_blob(
    tmp_path: Path, scratch: LayoutBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The empty config ``{}`` is shared by every ORAS artifact: it hits the link limit first."""
    real_link = linking.link_file
    empty = Digest.parse("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")

    def link(src: Path, dst: Path) -> None:
        if src.name == empty.encoded:
            raise OSError(errno.EMLINK, "Too many links", str(src))
        real_link(src, dst)

    monkeypatch.setattr(linking, "link_file", link)
    cache = BlobCache(tmp_path / "cache")
    layout = OCILayout.create(tmp_path / "layout", cache=cache, link_mode="hardlink")
    art = scratch.artifact(None, file_count=2)
    modes = {}
    for blob in _blobs(art):
        d = Digest.parse(blob.digest)
        cache.ingest_bytes(d, blob.data)
        modes[blob.digest] = layout.add_blob_from_cache(d, blob.size)
    assert modes.pop(str(empty)) is LinkMode.COPY
    assert set(modes.values()) == {LinkMode.HARDLINK}
    assert _ino(layout.blob_path(empty)) != _ino(cache.path(empty))
    assert stat.S_IMODE(os.stat(layout.blob_path(empty)).st_mode) == 0o444
    for other in modes:
        d = Digest.parse(other)
        assert _ino(layout.blob_path(d)) == _ino(cache.path(d))
    layout.tag(Descriptor.from_json(art.descriptor()), "artifact")
    assert verify_layout(layout).ok


# --- across filesystems ----------------------------------------------------------------------


def test_across_filesystems_auto_copies_with_one_warning(
    tmp_path: Path, other_fs: Path, scratch: LayoutBuilder, caplog: pytest.LogCaptureFixture
) -> None:
    cache = BlobCache(other_fs / "cache")
    layout = OCILayout.create(tmp_path / "layout", cache=cache, link_mode="auto")
    one = scratch.image(None, layers=2, seed="one")
    two = scratch.image(None, layers=2, seed="two")
    with caplog.at_level(logging.WARNING, logger="hybridstore.store.linking"):
        _push(layout, one, "one")
        _push(layout, two, "two")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "HYBRIDSTORE_LINK_MODE" in warnings[0].getMessage()
    assert layout.linker.decided is LinkMode.COPY
    for blob in [*_blobs(one), *_blobs(two)]:
        path = layout.blob_path(Digest.parse(blob.digest))
        assert path.read_bytes() == blob.data
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert verify_layout(layout).ok


def test_across_filesystems_hardlink_fails_clearly(
    tmp_path: Path, other_fs: Path, scratch: LayoutBuilder
) -> None:
    cache = BlobCache(other_fs / "cache")
    layout = OCILayout.create(tmp_path / "layout", cache=cache, link_mode=LinkMode.HARDLINK)
    img = scratch.image(None, layers=1)
    with pytest.raises(LinkError, match="different filesystems") as info:
        _push(layout, img)
    assert "--link-mode auto or copy" in str(info.value)
    assert layout.refs() == {}
    assert list((tmp_path / "layout" / "blobs" / "sha256").iterdir()) == []


# --- reflink on a real XFS -------------------------------------------------------------------


def _shared_extents(path: Path) -> bool:
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True)
    return out.returncode == 0 and "shared" in out.stdout


def test_reflink_on_xfs_makes_read_only_clones(
    xfs: Path, scratch: LayoutBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(tempfile.mkdtemp(dir=xfs))
    cache = BlobCache(root / "cache")
    layout = OCILayout.create(root / "layout", cache=cache, link_mode="reflink")
    clones: list[int] = []
    real_clone = linking.clone_file

    def counting_clone(src_fd: int, dst_fd: int) -> None:
        real_clone(src_fd, dst_fd)
        clones.append(dst_fd)

    monkeypatch.setattr(linking, "clone_file", counting_clone)
    img = scratch.image(None, layers=1, raw_layer_size=1 << 20)
    _push(layout, img)
    assert len(clones) == len(_blobs(img))  # FICLONE really ran, once per blob
    for blob in _blobs(img):
        d = Digest.parse(blob.digest)
        mine, theirs = layout.blob_path(d), cache.path(d)
        assert _ino(mine) != _ino(theirs)
        assert mine.read_bytes() == theirs.read_bytes() == blob.data
        assert stat.S_IMODE(os.stat(mine).st_mode) == 0o444
    layer = layout.blob_path(Digest.parse(img.layers[0].digest))
    if shutil.which("filefrag"):
        assert _shared_extents(layer), "the layer's extents are not shared with the cache"
    # Root ignores 0444, so write through it: copy-on-write keeps the cache blob intact.
    with open(layer, "r+b") as f:
        f.write(b"\xff" * 4096)
    assert cache.path(Digest.parse(img.layers[0].digest)).read_bytes() == img.layers[0].data
    assert not verify_layout(layout).ok


def test_auto_on_xfs_picks_reflink(xfs: Path, scratch: LayoutBuilder) -> None:
    root = Path(tempfile.mkdtemp(dir=xfs))
    layout = OCILayout.create(root / "layout", cache=BlobCache(root / "cache"), link_mode="auto")
    img = scratch.image(None, layers=1)
    _push(layout, img)
    assert layout.linker.decided is LinkMode.REFLINK
    assert verify_layout(layout).ok


def test_link_blob_takes_a_found_cache_file_and_reports_one_pruned_since(tmp_path: Path) -> None:
    """The pull path links the file ``BlobCache.hit`` just found, without asking the cache
    again; a file pruned in between is a NotFoundError (the caller fetches it again)."""
    cache = BlobCache(tmp_path / "cache")
    layout = OCILayout.create(tmp_path / "layout", cache=cache)
    data = b"found in the cache"
    d = Digest.of_bytes(data)
    hit = cache.hit(d, len(data)) or cache.ingest_bytes(d, data)
    assert layout.link_blob(hit.path, d, len(data)) is not None
    assert layout.exists(Descriptor("application/octet-stream", d, len(data)))
    assert layout.link_blob(hit.path, d, len(data)) is None  # already here

    torn = tmp_path / "layout" / "blobs" / "sha256" / d.encoded
    torn.unlink()
    torn.write_bytes(data[:5])  # a layout blob of the wrong size is replaced, not kept
    assert layout.link_blob(hit.path, d, len(data)) is not None
    assert torn.read_bytes() == data

    gone = b"pruned before it was linked"
    g = Digest.of_bytes(gone)
    path = cache.ingest_bytes(g, gone).path
    os.chmod(path, 0o644)
    os.unlink(path)
    with pytest.raises(NotFoundError, match="pruned"):
        layout.link_blob(path, g, len(gone))
    assert not layout.exists(Descriptor("application/octet-stream", g, len(gone)))

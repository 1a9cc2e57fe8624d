"""Deferred directory fsync: a blob's data is fsynced before it is visible, its name by
``BlobCache.sync()``, once per directory, before anything that names it is written."""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder

import hybridstore.fs.files
import hybridstore.store.ingest
import hybridstore.store.layout_files
from hybridstore.archive.export import export_to_path
from hybridstore.archive.importer import import_archive
from hybridstore.errors import StorageError
from hybridstore.fs.files import fsync_dir, start_writeback
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.store.cache import BlobCache
from hybridstore.store.ingest import WRITEBACK_STEP
from hybridstore.store.layout import OCILayout


@pytest.fixture
def dir_syncs(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """Every directory the cache fsyncs, counted (the real fsync still runs)."""
    seen: Counter[Path] = Counter()

    def recording(path: str | os.PathLike[str]) -> None:
        seen[Path(path)] += 1
        fsync_dir(path)

    monkeypatch.setattr(hybridstore.fs.files, "fsync_dir", recording)
    return seen


def _blob(i: int) -> tuple[Digest, bytes]:
    data = f"blob number {i}".encode()
    return Digest.of_bytes(data), data


def test_publishing_leaves_the_directory_pending_until_sync(
    tmp_path: Path, dir_syncs: Counter[Path]
) -> None:
    cache = BlobCache(tmp_path / "cache")
    alg_dir = cache.blobs_dir / "sha256"
    assert cache.unsynced_dirs == frozenset()
    for i in range(20):
        cache.ingest_bytes(*_blob(i))
    assert cache.unsynced_dirs == {alg_dir}
    assert dir_syncs[alg_dir] == 0  # no fsync of blobs/sha256 per published blob
    cache.sync()
    assert cache.unsynced_dirs == frozenset()
    assert dir_syncs[alg_dir] == 1  # one for all twenty
    cache.sync()  # nothing pending: nothing to do
    assert dir_syncs[alg_dir] == 1


def test_cache_hits_and_lost_publish_races_add_nothing_to_sync(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    digest, data = _blob(0)
    cache.ingest_bytes(digest, data)
    cache.sync()
    assert not cache.ingest_bytes(digest, data).fetched  # a hit publishes nothing
    assert cache.unsynced_dirs == frozenset()

    other_digest, other_data = _blob(1)
    elsewhere = tmp_path / "other-writer"

    def source(offset: int) -> tuple[int, list[bytes]]:
        elsewhere.write_bytes(other_data)  # another process publishes it first
        os.link(elsewhere, cache.path(other_digest))
        return offset, [other_data[offset:]]

    assert cache.ingest(other_digest, len(other_data), source).fetched
    assert cache.unsynced_dirs == frozenset()  # that entry is the other writer's to sync


def test_a_failing_directory_fsync_is_one_storage_error_and_stays_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = BlobCache(tmp_path / "cache")
    cache.ingest_bytes(*_blob(0))

    def broken(path: str | os.PathLike[str]) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hybridstore.fs.files, "fsync_dir", broken)
    with pytest.raises(StorageError, match=r"cannot sync .*blobs/sha256.*\[EIO\]"):
        cache.sync()
    assert cache.unsynced_dirs == {cache.blobs_dir / "sha256"}  # a later sync() retries
    monkeypatch.setattr(hybridstore.fs.files, "fsync_dir", fsync_dir)
    cache.sync()
    assert cache.unsynced_dirs == frozenset()


def test_threads_publishing_while_others_sync(tmp_path: Path) -> None:
    """The pending set is shared by pool threads: whatever the interleaving, a final
    ``sync()`` leaves nothing pending and every blob is there."""
    cache = BlobCache(tmp_path / "cache")
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(k * 25, (k + 1) * 25):
                cache.ingest_bytes(*_blob(i))
                if i % 5 == 0:
                    cache.sync()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and errors == []
    cache.sync()
    assert cache.unsynced_dirs == frozenset()
    assert all(cache.exists(_blob(i)[0]) for i in range(200))


def test_the_layout_syncs_its_cache_before_writing_index_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = BlobCache(tmp_path / "cache")
    layout = OCILayout.create(tmp_path / "layout", cache=cache)
    digest, data = _blob(0)
    layout.push_bytes(Descriptor("application/octet-stream", digest, len(data)), data)
    assert cache.unsynced_dirs  # linked into the layout, not yet durable in the cache

    pending_at_write: list[frozenset[Path]] = []
    real_write = hybridstore.store.layout_files.atomic_write_bytes

    def recording_write(path: str | os.PathLike[str], data: bytes, **kw: object) -> bool:
        if Path(path).name == "index.json":
            pending_at_write.append(cache.unsynced_dirs)
        return real_write(path, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(hybridstore.store.layout_files, "atomic_write_bytes", recording_write)
    manifest = (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    )
    desc = Descriptor(
        "application/vnd.oci.image.index.v1+json", Digest.of_bytes(manifest), len(manifest)
    )
    layout.push_bytes(desc, manifest)
    layout.tag(desc, "v1")
    assert pending_at_write == [frozenset()]


def test_import_leaves_no_cache_entry_unsynced(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    source = oci_builder("source")
    source.image("registry.example.com/team/app:1.0", layers=3)
    archive = tmp_path / "app.tar"
    export_to_path(source.path, archive)
    cache = BlobCache(tmp_path / "cache")
    # The layout has a cache object of its own: the import must sync the one it ingested into.
    target = OCILayout.create(tmp_path / "dest", cache=BlobCache(tmp_path / "cache"))
    result = import_archive(archive, target, cache=cache)
    assert result.blobs_ingested > 0
    assert cache.unsynced_dirs == frozenset()


def test_big_blobs_are_handed_to_the_disk_while_they_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write-behind: every written byte range is handed over once, in order, before the
    final fsync, whatever the chunk sizes (small ones are buffered first)."""
    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(
        hybridstore.store.ingest, "start_writeback", lambda fd, off, n: ranges.append((off, n))
    )
    data = os.urandom(3 * WRITEBACK_STEP + 12345)
    pieces = [data[i : i + 777_777] for i in range(0, len(data), 777_777)]  # odd sizes
    cache = BlobCache(tmp_path / "cache")
    digest = Digest.of_bytes(data)
    res = cache.ingest(digest, len(data), lambda offset: (offset, iter(pieces)))
    assert res.fetched and Path(res.path).read_bytes() == data
    assert ranges and ranges[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:], strict=False))
    assert all(n >= WRITEBACK_STEP for _, n in ranges)
    assert ranges[-1][0] + ranges[-1][1] > 2 * WRITEBACK_STEP


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_writeback_hint_is_found_and_harmless(tmp_path: Path) -> None:
    assert hybridstore.fs.files._sync_file_range() is not None  # a typo would silently disable it
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 65536)
        start_writeback(fd, 0, 65536)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 65536

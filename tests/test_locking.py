"""The hand-written ``FileLock``: exclusion, hand-over after an unlink, death of the holder,
and what the cache and a layout do on a filesystem that cannot lock at all."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder

from hybridstore.errors import StorageError
from hybridstore.fs import locking
from hybridstore.fs.locking import FileLock
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import prune_cache
from hybridstore.store.layout import OCILayout


def test_a_held_lock_excludes_another_until_released(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.try_acquire() and first.is_locked
    assert not second.try_acquire() and not second.is_locked
    first.release()
    assert not first.is_locked
    assert second.try_acquire()
    second.release()
    second.release()  # releasing twice is harmless
    assert path.exists(), "the lock file stays for the next holder"


def test_taking_a_lock_twice_through_one_object_is_a_bug(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock")
    assert lock.try_acquire()
    with pytest.raises(RuntimeError, match="already locked"):
        lock.try_acquire()
    lock.release()


def test_a_lock_file_unlinked_by_its_holder_hands_over_to_the_file_now_at_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter that opened the old file and locks it after the holder unlinked it
    must not count that orphan as the lock: it locks the new file instead."""
    path = tmp_path / "x.lock"
    holder = FileLock(path)
    assert holder.try_acquire()
    real_flock = fcntl.flock

    def flock_after_the_holder_leaves(fd: int, operation: int) -> None:
        if holder.is_locked:  # the waiter has opened the old inode: now the holder leaves
            path.unlink()
            holder.release()
        real_flock(fd, operation)

    monkeypatch.setattr(locking.fcntl, "flock", flock_after_the_holder_leaves)
    waiter = FileLock(path)
    assert waiter.try_acquire()
    monkeypatch.setattr(locking.fcntl, "flock", real_flock)
    assert path.exists()
    assert not FileLock(path).try_acquire(), "the waiter holds the file at the path"
    waiter.release()


def test_the_kernel_drops_the_lock_of_a_killed_holder(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from hybridstore.fs.locking import FileLock; "
            "assert FileLock(Path(sys.argv[1])).try_acquire(); print('held', flush=True); "
            "sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert not FileLock(path).try_acquire()
        holder.kill()
        holder.wait()
        assert FileLock(path).try_acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    os.symlink(tmp_path / "elsewhere", tmp_path / "x.lock")
    with pytest.raises(OSError):
        FileLock(tmp_path / "x.lock").try_acquire()


@pytest.fixture
def no_flock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem whose ``flock`` is not implemented (as on some FUSE mounts)."""

    def refuse(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(locking.fcntl, "flock", refuse)


@pytest.mark.usefixtures("no_flock")
def test_the_cache_ingests_without_single_flight_where_flock_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = BlobCache(tmp_path / "cache")
    assert cache.locks_trusted  # ext4 or similar: trusted until flock itself refuses
    data = os.urandom(3000)
    with caplog.at_level(logging.WARNING, logger="hybridstore.store.cache"):
        result = cache.ingest_bytes(Digest.of_bytes(data), data)
        cache.ingest_bytes(Digest.of_bytes(b"second"), b"second")
    assert result.path.read_bytes() == data
    assert not cache.locks_trusted, "no cross-process resume without working locks"
    assert sorted((tmp_path / "cache" / "locks").iterdir()) == []
    assert sorted((tmp_path / "cache" / "ingest").iterdir()) == []
    warnings = [r.getMessage() for r in caplog.records if "cannot lock files" in r.getMessage()]
    assert len(warnings) == 1, warnings


@pytest.mark.usefixtures("no_flock")
def test_a_layout_still_tags_where_flock_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    desc = Descriptor.from_json(LayoutBuilder(tmp_path).artifact(None).descriptor())
    with caplog.at_level(logging.WARNING, logger="hybridstore.store.layout"):
        OCILayout.open(tmp_path).tag(desc, "v1")
    assert OCILayout.open(tmp_path).resolve("v1").digest == desc.digest
    assert "cannot lock files" in caplog.text


def test_other_lock_failures_are_storage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, operation: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(locking.fcntl, "flock", broken)
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(StorageError, match="lock"):
        cache.ingest_bytes(Digest.of_bytes(b"x"), b"x")


@pytest.mark.usefixtures("no_flock")
def test_prune_sweeps_stale_lock_files_where_flock_is_missing(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    cache.ingest_bytes(Digest.of_bytes(b"kept"), b"kept")
    stale = cache.lock_path(Digest.of_bytes(b"killed holder"))
    stale.write_bytes(b"")
    an_hour_ago = stale.stat().st_mtime - 7200
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert prune_cache(cache, grace=3600, dry_run=True).swept == (stale,)
    assert stale.exists()
    assert prune_cache(cache, grace=3600).swept == (stale,)
    assert not stale.exists()

"""Nothing unverified is ever published: bad sources, resume edge cases, full or RO disks."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from test_cache_support import (
    RecordingSource,
    assert_only_verified_blobs,
    blob_files,
    expect_line,
    ingest_files,
    reap,
    spawn,
    tell,
    write_blob_file,
)

import hybridstore.store.ingest as ingest_file
from hybridstore.errors import (
    DigestMismatchError,
    InvalidInputError,
    LockTimeoutError,
    NetworkError,
    SizeMismatchError,
    StorageError,
)
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import cache_info, verify_cache

DATA = bytes(range(256)) * 12_000  # ~3 MiB, several write chunks
DIGEST = Digest.of_bytes(DATA)


def assert_nothing_left(root: Path) -> None:
    assert blob_files(root) == []
    assert ingest_files(root) == []


def test_corrupt_source_is_refused_naming_both_digests(tmp_path: Path) -> None:
    bad = bytearray(DATA)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(DigestMismatchError) as e:
        BlobCache(tmp_path).ingest(DIGEST, len(DATA), RecordingSource(bytes(bad)))
    assert str(DIGEST) in str(e.value) and str(Digest.of_bytes(bytes(bad))) in str(e.value)
    assert "\n" not in str(e.value)
    assert_nothing_left(tmp_path)


def test_short_body_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SizeMismatchError, match=f"expected {len(DATA)} bytes, got 1000"):
        BlobCache(tmp_path).ingest(DIGEST, len(DATA), RecordingSource(DATA[:1000]))
    assert_nothing_left(tmp_path)


def test_over_long_body_is_stopped_early(tmp_path: Path) -> None:
    sent = 0

    def endless(offset: int) -> tuple[int, Iterable[bytes]]:
        def chunks() -> Iterator[bytes]:
            nonlocal sent
            yield DATA
            while True:
                sent += 1 << 20
                yield b"\0" * (1 << 20)

        return offset, chunks()

    with pytest.raises(SizeMismatchError, match="more than the expected"):
        BlobCache(tmp_path).ingest(DIGEST, len(DATA), endless)
    assert sent == 1 << 20  # stopped at the first byte too many, not at the end of the body
    assert_nothing_left(tmp_path)


def test_corrupt_source_with_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(DigestMismatchError):
        BlobCache(tmp_path).ingest(DIGEST, None, RecordingSource(DATA + b"x"))
    assert_nothing_left(tmp_path)


def test_source_error_keeps_the_partial_for_resume(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)

    def breaks(offset: int) -> tuple[int, Iterable[bytes]]:
        def chunks() -> Iterator[bytes]:
            yield DATA[:100_000]
            raise NetworkError("connection reset")

        return offset, chunks()

    with pytest.raises(NetworkError):
        cache.ingest(DIGEST, len(DATA), breaks)
    assert cache.partial_path(DIGEST).stat().st_size == 100_000
    assert blob_files(tmp_path) == []
    source = RecordingSource(DATA)
    r = cache.ingest(DIGEST, len(DATA), source)
    assert source.calls == [100_000]
    assert (r.resumed_from, r.bytes_transferred) == (100_000, len(DATA) - 100_000)
    assert r.path.read_bytes() == DATA and ingest_files(tmp_path) == []


def _leave_partial(cache: BlobCache, content: bytes) -> None:
    cache._prepare()
    cache.partial_path(DIGEST).write_bytes(content)


def test_source_that_ignores_range_restarts_from_zero(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    _leave_partial(cache, DATA[:5000])
    source = RecordingSource(DATA, honor_range=False)
    r = cache.ingest(DIGEST, len(DATA), source)
    assert source.calls == [5000]
    assert (r.resumed_from, r.bytes_transferred) == (0, len(DATA))
    assert r.path.read_bytes() == DATA  # the full body was not appended to the prefix


def test_source_starting_elsewhere_is_asked_again_from_zero(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    _leave_partial(cache, DATA[:5000])
    calls: list[int] = []

    def odd(offset: int) -> tuple[int, Iterable[bytes]]:
        calls.append(offset)
        start = 17 if offset else 0
        return start, [DATA[start:]]

    assert cache.ingest(DIGEST, len(DATA), odd).path.read_bytes() == DATA
    assert calls == [5000, 0]


def test_complete_partial_is_published_without_the_source(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    _leave_partial(cache, DATA)
    source = RecordingSource(DATA)
    r = cache.ingest(DIGEST, len(DATA), source)
    assert source.calls == []  # no request for bytes past the end (no 416 loop)
    assert (r.fetched, r.bytes_transferred, r.resumed_from) == (True, 0, len(DATA))


def test_rejected_prefix_restarts_from_zero_once(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    _leave_partial(cache, b"\0" * 4096)  # e.g. NUL-filled after a power loss
    source = RecordingSource(DATA)
    r = cache.ingest(DIGEST, len(DATA), source)
    assert source.calls == [4096, 0]
    assert r.restarted and r.resumed_from == 4096
    assert r.path.read_bytes() == DATA


def test_bad_source_after_rejected_prefix_fails_without_looping(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    _leave_partial(cache, DATA[:4096])
    bad = DATA[:-1] + b"?"
    source = RecordingSource(bad)
    with pytest.raises(DigestMismatchError):
        cache.ingest(DIGEST, len(DATA), source)
    assert source.calls == [4096, 0]
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("content", [DATA[:-1] + b"?", DATA + b"extra"], ids=["wrong", "long"])
def test_full_length_or_longer_bad_partial_is_discarded(tmp_path: Path, content: bytes) -> None:
    cache = BlobCache(tmp_path)
    _leave_partial(cache, content)
    source = RecordingSource(DATA)
    assert cache.ingest(DIGEST, len(DATA), source).path.read_bytes() == DATA
    assert source.calls == [0]


def test_untrusted_locks_use_unique_temps_and_never_resume(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, trust_locks=False)
    seen: list[str] = []

    def breaks(offset: int) -> tuple[int, Iterable[bytes]]:
        def chunks() -> Iterator[bytes]:
            yield DATA[:1000]
            seen.extend(ingest_files(tmp_path))
            raise NetworkError("reset")

        return offset, chunks()

    with pytest.raises(NetworkError):
        cache.ingest(DIGEST, len(DATA), breaks)
    assert len(seen) == 1 and seen[0].endswith(".tmp") and ".partial" not in seen[0]
    assert ingest_files(tmp_path) == []  # no cross-process resume without trusted locks
    source = RecordingSource(DATA)
    assert cache.ingest(DIGEST, len(DATA), source).fetched and source.calls == [0]


def test_silently_succeeding_locks_still_publish_only_verified_blobs(tmp_path: Path) -> None:
    """Four writers at once with no real lock (as on NFS/Lustre), two with corrupt sources."""
    size = 4 << 20
    src = tmp_path / "src"
    digest = write_blob_file(src, size, seed="unlocked")
    root = tmp_path / "cache"
    corrupt_at = [str(size + 1), str(size // 3), str(size + 1), str(size - 1)]
    procs = [
        spawn("ingest-unlocked", str(root), str(digest), str(size), str(src), c) for c in corrupt_at
    ]
    try:
        for p in procs:
            expect_line(p, "ready")
        for p in procs:
            tell(p, "go")
        results = [json.loads(expect_line(p, "{")) for p in procs]
        assert [p.wait(timeout=60) for p in procs] == [0] * 4
    finally:
        reap(procs)
    for honest in (results[0], results[2]):
        assert honest.get("file_digest") == str(digest)
    for corrupt in (results[1], results[3]):
        # Either refused, or it found the honest blob already published and never wrote.
        assert corrupt.get("error") == "DigestMismatchError" or corrupt["fetched"] is False
    assert_only_verified_blobs(root)
    assert len(blob_files(root)) == 1 and ingest_files(root) == []


def test_enospc_mid_write_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = [1 << 20]

    def full_disk(fd: int, data: memoryview) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, data[: budget[0]])
        budget[0] -= n
        return n

    monkeypatch.setattr(ingest_file, "write_some", full_disk)
    with pytest.raises(StorageError) as e:
        BlobCache(tmp_path).ingest(DIGEST, len(DATA), RecordingSource(DATA))
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device [ENOSPC]" in msg and "prune" in msg
    assert e.value.errno == errno.ENOSPC and e.value.exit_code == 11
    assert_nothing_left(tmp_path)


@pytest.fixture
def mount_point() -> Iterator[Path]:
    """An empty directory to mount a small filesystem on (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = Path(tempfile.mkdtemp(prefix="hs-mnt-"))
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)
    d.rmdir()


def _mount(args: list[str]) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount ({r.stderr.strip()}); needs CAP_SYS_ADMIN")


def test_real_enospc_on_a_tiny_tmpfs(mount_point: Path) -> None:
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)])
    cache = BlobCache(mount_point / "cache")
    with pytest.raises(StorageError, match=r"\[ENOSPC\]") as e:
        cache.ingest(DIGEST, len(DATA), RecordingSource(DATA))
    assert "\n" not in str(e.value)
    assert_nothing_left(mount_point / "cache")


def test_read_only_cache_is_one_clear_error(mount_point: Path) -> None:
    _mount(["-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)])
    root = mount_point / "cache"
    cache = BlobCache(root)
    old = cache.ingest_bytes(Digest.of_bytes(b"old"), b"old").path
    os.utime(old, (1, 1))
    _mount(["-o", "remount,ro", str(mount_point)])
    with pytest.raises(StorageError, match=r"Read-only file system \[EROFS\]") as e:
        BlobCache(root).ingest_bytes(Digest.of_bytes(b"new"), b"new")
    assert "\n" not in str(e.value) and "--cache" in str(e.value)
    # Reading still works on a read-only cache.
    ro = BlobCache(root)
    assert ro.exists(Digest.of_bytes(b"old")) and cache_info(ro).blob_count == 1
    assert verify_cache(ro).ok
    # The CLI reports a failed prune as one line, no traceback.
    r = subprocess.run(
        [sys.executable, "-c", "from hybridstore.cli import main; main()",
         "--cache", str(root), "cache", "prune", "--older-than", "1d", "--grace", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 11
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("hybridstore: error: cannot remove")
    assert "Traceback" not in r.stderr and old.exists()


NOBODY = 65534  # the uid and gid the ingest-as-nobody worker drops to


def _nobody_can_enter(directory: Path) -> bool:
    """Whether uid/gid 65534 may search ``directory`` and every directory above it."""
    for d in [directory, *directory.parents]:
        st = d.stat()
        if st.st_uid == NOBODY:
            bit = stat.S_IXUSR
        elif st.st_gid == NOBODY:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A fresh 0755 directory that user ``nobody`` can reach, for the workers that drop to it.

    Not ``tmp_path`` (pytest makes its base 0700) and not blindly ``$TMPDIR``:
    when any directory above the cache is closed to ``nobody`` every access
    fails with EACCES before the behaviour under test is reached. The first
    candidate whose every parent ``nobody`` can search is used; if none is,
    the test is skipped saying so.
    """
    if os.geteuid() != 0:
        pytest.skip("the worker drops from root to nobody")
    candidates = dict.fromkeys(
        Path(c).resolve() for c in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm")
    )
    usable = [c for c in candidates if c.is_dir() and _nobody_can_enter(c)]
    if not usable:
        pytest.skip(
            f"none of {', '.join(map(str, candidates))} can be reached by user nobody "
            f"(uid {NOBODY}); set TMPDIR to a directory it can search"
        )
    base = Path(tempfile.mkdtemp(prefix="hs-nobody-", dir=usable[0]))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base)


def test_unwritable_cache_dir_as_non_root(nobody_dir: Path) -> None:
    root = nobody_dir / "cache"
    root.mkdir(mode=0o555)
    root.chmod(0o555)
    p = spawn("ingest-as-nobody", str(root))
    try:
        out = json.loads(expect_line(p, "{"))
        assert p.wait() == 0
    finally:
        reap([p])
    assert out["error"] == "StorageError" and out["errno"] == errno.EACCES
    # The write into the cache directory was refused, not the way to it (a closed parent).
    assert f"cannot set up the cache in {root}" in out["message"], out["message"]
    assert "Permission denied [EACCES]" in out["message"] and "\n" not in out["message"]
    assert os.listdir(root) == []


def test_lock_timeout_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    holder = spawn("hold-lock", str(tmp_path), str(DIGEST))
    try:
        expect_line(holder, "locked")
        monkeypatch.setenv("HYBRIDSTORE_LOCK_TIMEOUT", "0.3")
        caplog.set_level(logging.INFO, logger="hybridstore.store.cache")
        source = RecordingSource(DATA)
        with pytest.raises(LockTimeoutError, match="HYBRIDSTORE_LOCK_TIMEOUT") as e:
            BlobCache(tmp_path).ingest(DIGEST, len(DATA), source)
        assert str(DIGEST) in str(e.value) and e.value.exit_code == 7
        assert f"waiting for {DIGEST} held by another process" in caplog.text
        assert source.calls == []
    finally:
        tell(holder, "release")
        expect_line(holder, "released")
        reap([holder])
    r = BlobCache(tmp_path).ingest(DIGEST, len(DATA), RecordingSource(DATA))
    assert r.fetched and r.path.read_bytes() == DATA


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_lock_timeout_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("HYBRIDSTORE_LOCK_TIMEOUT", value)
    with pytest.raises(InvalidInputError, match="HYBRIDSTORE_LOCK_TIMEOUT"):
        BlobCache(tmp_path).ingest_bytes(Digest.of_bytes(b"x"), b"x")


def test_partial_linked_to_a_published_blob_is_never_written(tmp_path: Path) -> None:
    """A holder killed between link and unlink leaves the partial as a second name of the blob."""
    cache = BlobCache(tmp_path)
    published = cache.ingest_bytes(DIGEST, DATA).path
    os.link(published, cache.partial_path(DIGEST))
    published.chmod(0o644)
    published.write_bytes(DATA[:-1] + b"?")  # corrupt (same size): exists() cannot tell
    os.unlink(published)  # e.g. pruned; the partial still names the bad inode
    layout_link = tmp_path / "layout-blob"
    os.link(cache.partial_path(DIGEST), layout_link)
    source = RecordingSource(DATA)
    assert cache.ingest(DIGEST, len(DATA), source).path.read_bytes() == DATA
    assert source.calls == [0]  # the linked partial was discarded, not resumed or truncated
    assert layout_link.read_bytes() == DATA[:-1] + b"?"  # the other inode was left untouched


def test_read_only_complete_partial_is_published_as_non_root(nobody_dir: Path) -> None:
    """A holder killed after fchmod 0444 but before link leaves a whole, read-only partial."""
    src = nobody_dir / "src"
    src.write_bytes(DATA)
    cache = BlobCache(nobody_dir / "cache")
    _leave_partial(cache, DATA)
    cache.partial_path(DIGEST).chmod(0o444)
    for p in [cache.root, *cache.root.rglob("*")]:
        os.chown(p, NOBODY, NOBODY)
    worker = spawn("ingest-as-nobody", str(cache.root), str(src))
    try:
        out = json.loads(expect_line(worker, "{"))
        assert worker.wait() == 0
    finally:
        reap([worker])
    assert out == {"error": None, "bytes_transferred": 0}  # published, nothing fetched
    assert cache.path(DIGEST).read_bytes() == DATA and ingest_files(cache.root) == []

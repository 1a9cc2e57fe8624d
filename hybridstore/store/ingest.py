"""One ingest into the cache: the file the bytes go to, how it is filled from a source
(hashed and counted as bytes arrive, resumed from a partial's prefix), and what the
ingest did. Locks, the choice of file, publishing and durability are ``cache.py``'s.

``fill`` is the resume protocol: re-hash what a partial holds, ask the source
for the rest (an HTTP Range request), start over from byte 0 if the source
cannot resume, and once more if the resumed blob fails verification.
``write_some`` is the one seam where blob bytes reach the OS (tests inject
ENOSPC there). ``open_partial`` opens a resumable partial safely.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from hybridstore.errors import DigestMismatchError, IntegrityError, NetworkError, SizeMismatchError
from hybridstore.fs.files import start_writeback
from hybridstore.oci.digest import Digest

__all__ = [
    "BlobSource",
    "CHUNK_SIZE",
    "IngestFile",
    "IngestResult",
    "fill",
    "open_partial",
    "stream_source",
    "write_all",
    "write_some",
]

log = logging.getLogger("hybridstore.store.cache")

BlobSource = Callable[[int], tuple[int, Iterable[bytes]]]
"""``source(offset)`` opens the content from byte ``offset`` and returns
``(actual_start, chunks)``: ``actual_start`` is ``offset`` when it could resume,
0 when it restarted from the beginning. It may raise hybridstore errors."""

CHUNK_SIZE: Final = 1 << 20  # hashing and writing in 1 MiB pieces is the fastest here
# Written data beyond this is handed to the disk while the rest still arrives: the
# final fsync of a 512 MiB blob went from 0.13 s to 3 ms here (benchmarks, issue 8).
WRITEBACK_STEP: Final = 8 << 20


@dataclass(frozen=True)
class IngestResult:
    """What one ``ingest`` call did."""

    digest: Digest
    size: int
    path: Path  # blobs/<alg>/<enc> in the cache
    fetched: bool  # False when the blob was already present (no source call at all)
    bytes_transferred: int  # bytes read from the source by this call
    resumed_from: int  # offset a resume (range request) started at; 0 if none
    restarted: bool = False  # a partial was rejected and the blob fetched again from byte 0


def write_some(fd: int, data: memoryview) -> int:
    """Write some of ``data``: the one seam where blob bytes reach the OS (tests inject ENOSPC)."""
    return os.write(fd, data)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[write_some(fd, view) :]


class IngestFile:
    """One ingest file: hashes and counts bytes as they arrive, writes them in large pieces."""

    def __init__(self, fd: int, path: Path, digest: Digest, size: int | None) -> None:
        self.fd, self.path, self.digest, self.expected_size = fd, path, digest, size
        self.size = 0
        self._hash = hashlib.new(digest.algorithm)
        self._buf = bytearray()
        self._file_end = 0  # bytes in the file (``size`` less what waits in ``_buf``)
        self._written_back = 0  # the file's bytes before this offset are on their way to disk

    def load_prefix(self) -> int:
        """Re-hash what an earlier writer left in the file; position at its end."""
        length = os.fstat(self.fd).st_size
        if length == 0:
            return 0  # a new file (the usual case): nothing to read back
        if self.expected_size is not None and length > self.expected_size:
            self.reset()
            return 0
        os.lseek(self.fd, 0, os.SEEK_SET)
        while chunk := os.read(self.fd, CHUNK_SIZE):
            self._hash.update(chunk)
            self.size += len(chunk)
        self._file_end = self._written_back = self.size
        return self.size

    def reset(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self._hash = hashlib.new(self.digest.algorithm)
        self.size = self._file_end = self._written_back = 0
        del self._buf[:]

    def add(self, chunk: bytes) -> None:
        n = len(chunk)
        if self.expected_size is not None and self.size + n > self.expected_size:
            raise SizeMismatchError(
                f"{self.digest}: the source sent more than the expected {self.expected_size} "
                "bytes; nothing was stored"
            )
        self._hash.update(chunk)
        self.size += n
        if n >= CHUNK_SIZE:
            self.flush()
            self._write(chunk)
        else:
            self._buf += chunk
            if len(self._buf) >= CHUNK_SIZE:
                self.flush()

    def flush(self) -> None:
        if self._buf:
            with memoryview(self._buf) as view:
                self._write(view)
            del self._buf[:]

    def _write(self, data: bytes | memoryview) -> None:
        write_all(self.fd, data)
        self._file_end += len(data)
        if self._file_end - self._written_back >= WRITEBACK_STEP:
            start_writeback(self.fd, self._written_back, self._file_end - self._written_back)
            self._written_back = self._file_end

    def problem(self) -> IntegrityError | None:
        """Why the bytes so far are not the expected blob, or ``None`` if they are."""
        if self.expected_size is not None and self.size != self.expected_size:
            return SizeMismatchError(
                f"{self.digest}: expected {self.expected_size} bytes, got {self.size} "
                "(the source ended early); nothing was stored"
            )
        actual = Digest(self.digest.algorithm, self._hash.copy().hexdigest())
        if actual != self.digest:
            return DigestMismatchError(
                f"digest mismatch: expected {self.digest}, got {actual} "
                f"({self.size} bytes); nothing was stored"
            )
        return None


def open_partial(path: Path) -> int:
    """Open (or create) a resumable partial for writing; only under its digest's lock.

    A partial that is not a plain single-link file is discarded rather than
    written: a holder killed between ``link`` and ``unlink`` leaves the partial
    as a second name of the published blob, and writing it would change that
    blob (and every layout linking it). One killed after ``fchmod 0444`` is
    made writable again (we own it).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags | os.O_EXCL, 0o644)  # the usual case: no partial yet
    except FileExistsError:
        st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.unlink(path)
        return os.open(path, flags | os.O_EXCL, 0o644)
    if not st.st_mode & stat.S_IWUSR:
        os.chmod(path, 0o644)
    return os.open(path, flags, 0o644)


# -- filling ---------------------------------------------------------------------------------


def fill(
    sink: IngestFile, source: BlobSource, storage_failure: Callable[[OSError], Exception]
) -> tuple[int, int, bool]:
    """Bring ``sink`` to the verified blob; return (transferred, resumed from, restarted).

    ``storage_failure`` turns an ``OSError`` of the sink into the error to raise; the
    source's own errors propagate unchanged.
    """

    def storage(op: Callable[..., int | None], *args: bytes) -> int:
        try:
            return op(*args) or 0
        except OSError as e:
            raise storage_failure(e) from e

    digest = sink.digest
    transferred = resumed_from = 0
    restarted = False
    have = storage(sink.load_prefix)
    if have:
        if sink.problem() is None:
            log.info("%s: a partial ingest is already complete; publishing it", digest)
            return 0, have, False
        if sink.expected_size is not None and have >= sink.expected_size:
            log.warning("%s: discarding a full-length partial that fails verification", digest)
            storage(sink.reset)
            restarted = True
    while True:
        offset = sink.size
        start, chunks = source(offset)
        if start != offset:
            if start != 0:
                _close_chunks(chunks)
                start, chunks = source(0)
                if start != 0:
                    _close_chunks(chunks)
                    raise NetworkError(
                        f"{digest}: the source started at byte {start} when asked for byte 0"
                    )
            log.info("%s: the source cannot resume at byte %d; starting over", digest, offset)
            storage(sink.reset)
        elif offset:
            resumed_from = resumed_from or offset
            log.info("%s: resuming a partial ingest at byte %d", digest, offset)
        try:
            for chunk in chunks:
                transferred += len(chunk)
                storage(sink.add, chunk)
            storage(sink.flush)
        finally:
            _close_chunks(chunks)
        problem = sink.problem()
        if problem is None:
            return transferred, resumed_from, restarted
        if offset and start == offset and not restarted:
            log.warning(
                "%s: the resumed download failed verification (%s); starting over from byte 0",
                digest, problem,
            )  # fmt: skip
            storage(sink.reset)
            restarted = True
            continue
        raise problem


def _close_chunks(chunks: Iterable[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def stream_source(digest: Digest, stream: IO[bytes]) -> BlobSource:
    """A ``BlobSource`` over a file object: a seekable one resumes, others restart from 0
    (and can be read only once)."""
    try:
        start: int | None = stream.tell() if stream.seekable() else None
    except OSError:
        start = None
    calls = 0

    def source(offset: int) -> tuple[int, Iterable[bytes]]:
        nonlocal calls
        calls += 1
        if start is not None:
            stream.seek(start + offset)
            return offset, _read_chunks(stream)
        if calls > 1:
            raise ValueError(f"{digest}: a non-seekable stream can only be read once")
        return 0, _read_chunks(stream)

    return source


def _read_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_SIZE):
        yield chunk

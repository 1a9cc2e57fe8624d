"""One ingest file of the cache: hashed and counted as bytes arrive, written in large
pieces, checked against the digest and size it must become.

``write_some`` is the one seam where blob bytes reach the OS (tests inject
ENOSPC there). ``open_partial`` opens a resumable partial safely; the
protocol around these files (locks, resume, publish by link) is ``cache.py``'s.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Final

from .digest import Digest
from .errors import DigestMismatchError, IntegrityError, SizeMismatchError

__all__ = ["CHUNK_SIZE", "IngestFile", "open_partial", "write_all", "write_some"]

CHUNK_SIZE: Final = 1 << 20  # hashing and writing in 1 MiB pieces is the fastest here


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

    def load_prefix(self) -> int:
        """Re-hash what an earlier writer left in the file; position at its end."""
        length = os.fstat(self.fd).st_size
        if self.expected_size is not None and length > self.expected_size:
            self.reset()
            return 0
        os.lseek(self.fd, 0, os.SEEK_SET)
        while chunk := os.read(self.fd, CHUNK_SIZE):
            self._hash.update(chunk)
            self.size += len(chunk)
        return self.size

    def reset(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self._hash = hashlib.new(self.digest.algorithm)
        self.size = 0
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
            write_all(self.fd, chunk)
        else:
            self._buf += chunk
            if len(self._buf) >= CHUNK_SIZE:
                self.flush()

    def flush(self) -> None:
        if self._buf:
            with memoryview(self._buf) as view:
                write_all(self.fd, view)
            del self._buf[:]

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
        st = os.lstat(path)
    except FileNotFoundError:
        return os.open(path, flags | os.O_EXCL, 0o644)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.unlink(path)
        return os.open(path, flags | os.O_EXCL, 0o644)
    if not st.st_mode & stat.S_IWUSR:
        os.chmod(path, 0o644)
    return os.open(path, flags, 0o644)

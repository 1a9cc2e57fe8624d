"""A layout's own files, read and written safely: names that are symlinks are refused,
reads are bounded (CVE-2023-25153: an unbounded ``index.json``), writes are atomic.

``OCILayout`` and ``layout_check`` use these for ``oci-layout``, ``index.json`` and
the documents among the blobs.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

from hybridstore.errors import (
    CorruptionError,
    HybridstoreError,
    InvalidDocumentError,
    NotFoundError,
    StorageError,
)
from hybridstore.fs.files import atomic_write_bytes, storage_error
from hybridstore.oci.limits import MAX_INDEX_BYTES, MAX_LAYOUT_FILE_BYTES

__all__ = [
    "BLOBS_DIR",
    "INDEX_FILE",
    "INDEX_LOCK_FILE",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "read_file",
    "read_layout_file",
    "refuse_symlink",
    "write_atomic",
]

LAYOUT_FILE: Final = "oci-layout"
INDEX_FILE: Final = "index.json"
BLOBS_DIR: Final = "blobs"
INDEX_LOCK_FILE: Final = "index.json.lock"
LAYOUT_VERSION: Final = "1.0.0"


def refuse_symlink(path: Path, what: str) -> os.stat_result | None:
    """``lstat`` of ``path`` (``None`` if absent); a symlink there is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise StorageError(
            f"refusing to use {path}: the layout's {what} is a symlink; "
            "replace it with a real one (layouts never follow links)"
        )
    return st


def read_file(path: Path, what: str, limit: int) -> bytes:
    """Read a layout file without following a symlink and without unbounded memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            refuse_symlink(path, what)
        raise StorageError(f"cannot read {path}: {e.strerror}") from e
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptionError(f"{path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidDocumentError(f"{path} is larger than {limit} bytes; refusing to read it")
    return data


def read_layout_file(path: Path, what: str) -> bytes:
    """``oci-layout`` or ``index.json``, read safely (no symlinks, bounded)."""
    limit = MAX_LAYOUT_FILE_BYTES if what == LAYOUT_FILE else MAX_INDEX_BYTES
    return read_file(path, what, limit)


def write_atomic(path: Path, data: bytes, what: str, *, replace: bool = True) -> None:
    """Temp file beside ``path``, fsync, ``os.replace`` (or no-clobber link), fsync dir."""
    refuse_symlink(path, what)
    try:
        atomic_write_bytes(path, data, mode=0o644, overwrite=replace)
    except OSError as e:
        if isinstance(e, HybridstoreError):
            raise
        raise storage_error(e, "write", path) from e

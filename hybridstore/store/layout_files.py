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
from typing import Any, Final

from hybridstore.errors import (
    ConflictError,
    CorruptionError,
    HybridstoreError,
    InvalidDocumentError,
    NotFoundError,
    StorageError,
)
from hybridstore.fs.files import atomic_write_bytes, storage_error
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.jsondoc import load_json_object
from hybridstore.oci.limits import MAX_INDEX_BYTES, MAX_LAYOUT_FILE_BYTES

__all__ = [
    "refuse_foreign_dir",
    "BLOBS_DIR",
    "INDEX_FILE",
    "INDEX_LOCK_FILE",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "check_index",
    "check_layout_version",
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


def check_layout_version(raw: bytes, where: object) -> None:
    """``oci-layout`` must declare the one version the image spec defines (oras-go:
    ``ErrUnsupportedVersion``); every command refuses another, so none rewrites it."""
    obj = load_json_object(raw, what=f"{where}", limit=MAX_LAYOUT_FILE_BYTES)
    version = obj.get("imageLayoutVersion")
    if version != LAYOUT_VERSION:
        raise InvalidDocumentError(
            f"{where}: unsupported imageLayoutVersion {version!r} (this hybridstore reads "
            f"{LAYOUT_VERSION!r}); use a tool that knows that version"
        )


def check_index(raw: bytes, where: object) -> dict[str, Any]:
    """A layout's ``index.json`` as a JSON object: an image index of schemaVersion 2.

    Another schemaVersion is refused by every command (import too), so no command keeps
    or rewrites an index it does not understand."""
    doc = load_json_object(raw, what=f"{where}", limit=MAX_INDEX_BYTES)
    version = doc.get("schemaVersion")
    if version != 2 or isinstance(version, bool):
        raise InvalidDocumentError(
            f"{where}: unsupported schemaVersion {version!r} (an image index has 2); "
            "use a tool that knows that version"
        )
    media_type = doc.get("mediaType", mt.OCI_INDEX)
    if media_type != mt.OCI_INDEX:
        raise InvalidDocumentError(f"{where}: mediaType {media_type!r} is not an image index")
    if not isinstance(doc.get("manifests"), list):
        raise InvalidDocumentError(f"{where} is not an image index (no manifests list)")
    return doc


def write_atomic(path: Path, data: bytes, what: str, *, replace: bool = True) -> None:
    """Temp file beside ``path``, fsync, ``os.replace`` (or no-clobber link), fsync dir."""
    refuse_symlink(path, what)
    try:
        atomic_write_bytes(path, data, mode=0o644, overwrite=replace)
    except OSError as e:
        if isinstance(e, HybridstoreError):
            raise
        raise storage_error(e, "write", path) from e


def refuse_foreign_dir(root: Path) -> None:
    """A directory with content but no ``oci-layout`` is someone's files, not a layout."""
    try:
        with os.scandir(root) as it:
            first = next(it, None)
    except (FileNotFoundError, NotADirectoryError):
        return  # created below (or refused there, if a file is in the way)
    except OSError as e:
        raise storage_error(e, "read", root) from e
    if first is not None:
        raise ConflictError(
            f"{root} is not empty and is not an OCI layout (no {LAYOUT_FILE}, but "
            f"{first.name!r} and maybe more); choose an empty or new directory, or pass "
            "--init (pull, import) to make this one a layout as well"
        )

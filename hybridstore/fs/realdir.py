"""Directories a store keeps under its root are real directories inside that root.

A cache or layout root is the user's choice (it may itself be a symlink), but what a
store creates below it (``blobs/``, ``blobs/<alg>/``, ``ingest/``, ``locks/``, ...)
must not lead elsewhere: a planted ``blobs/sha256 -> /somewhere`` would make every
write land outside the root and every read trust files nobody verified (the
pre-existing destination symlink class: CVE-2025-53547, GHSA-8xwf-rjm4-xvhv).

``real_dir`` walks the components from an open descriptor of the root (``openat``
style, ``O_NOFOLLOW``), creating missing ones. A component that is a symlink is
replaced by a real directory when that loses nothing (the link dangles or points to
an empty directory: an ``ln -s`` of a fresh mount point, say); any other symlink or
non-directory is refused with a ``StorageError`` that names it and the fix.
``check_real_dir`` is the read-only twin: it creates and replaces nothing, and takes
absence (or a link it would replace) as "nothing there".
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Final

from hybridstore.errors import StorageError
from hybridstore.fs.files import fsync_dir, storage_error

__all__ = ["check_real_dir", "real_dir"]

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def real_dir(root: Path, rel: str, hint: str = "") -> Path:
    """``root/rel`` as real directories (created as needed); ``StorageError`` otherwise."""
    _walk(root, rel, hint, create=True)
    return root / rel


def check_real_dir(root: Path, rel: str, hint: str = "") -> bool:
    """Whether ``root/rel`` exists; ``StorageError`` if any component is not a real
    directory. Creates and replaces nothing (for readers)."""
    return _walk(root, rel, hint, create=False)


def _walk(root: Path, rel: str, hint: str, *, create: bool) -> bool:
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        return False
    except OSError as e:
        raise storage_error(e, "open", root, hint) from e
    try:
        done: list[str] = []
        for part in rel.split("/"):
            done.append(part)
            child = _open_child(fd, part, root / "/".join(done), hint, create=create)
            if child is None:
                return False
            os.close(fd)
            fd = child
        return True
    finally:
        os.close(fd)


def _open_child(parent: int, part: str, path: Path, hint: str, *, create: bool) -> int | None:
    """An fd of the real directory ``part`` in ``parent`` (``None``: absent, not creating)."""
    for _ in range(3):  # absent -> created -> opened; a replaced link takes one more round
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(part, 0o755, dir_fd=parent)
            except FileExistsError:
                continue  # another process made it first
            except OSError as e:
                raise storage_error(e, "create", path, hint) from e
            fsync_dir(path.parent)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise storage_error(e, "open", path, hint) from e
            _refuse_link(parent, part, path)
            if not create:
                return None  # nothing to read there; the first write replaces the link
            with contextlib.suppress(FileNotFoundError):  # another process may be first
                os.unlink(part, dir_fd=parent)  # the real directory is made on the next round
    raise StorageError(f"{path} keeps changing under us; {hint or 'try again'}")


def _refuse_link(parent: int, part: str, path: Path) -> None:
    """Refuse a non-directory, or a symlink whose replacement would lose something."""
    st = os.stat(part, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        raise StorageError(f"{path} is not a directory; move it away so it can be one")
    if _empty_or_dangling(parent, part):
        return
    target = os.readlink(part, dir_fd=parent)
    raise StorageError(
        f"{path} is a symlink (to {target}); refusing to read or write outside "
        f"{path.parent}: replace the link with a real directory (move its contents in)"
    )


def _empty_or_dangling(parent: int, part: str) -> bool:
    try:
        fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        return not os.listdir(fd)
    finally:
        os.close(fd)

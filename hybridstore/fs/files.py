"""Small filesystem helpers shared by the cache and layouts.

They exist so that every file others may see is written the same durable,
atomic way (temp file in the same directory, fsync, rename or link, fsync the
directory), and so that an ``OSError`` from disk reaches the user as one
``StorageError`` line that names the path and the fix.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from hybridstore.errors import StorageError

__all__ = [
    "scan_dir",
    "LOCAL_FILESYSTEMS",
    "DeferredDirSyncs",
    "atomic_write_bytes",
    "filesystem_type",
    "fsync_dir",
    "start_writeback",
    "storage_error",
    "unlink_quietly",
]

# Filesystems whose flock(2) is enforced by the one kernel every user of the
# directory runs on. Network and FUSE filesystems are left out on purpose: on
# some of them flock silently succeeds for everyone (huggingface_hub#4228).
LOCAL_FILESYSTEMS = frozenset(
    {
        "bcachefs", "btrfs", "ext2", "ext3", "ext4", "f2fs", "jfs", "overlay",
        "ramfs", "reiserfs", "tmpfs", "xfs", "zfs",
    }
)  # fmt: skip

_HINTS = {
    errno.ENOSPC: "free some space or use another directory",
    errno.EDQUOT: "free some space (quota exceeded) or use another directory",
    errno.EACCES: "check its permissions or use another directory",
    errno.EPERM: "check its permissions or use another directory",
    errno.EROFS: "the filesystem is read-only; use another directory",
}


def storage_error(
    exc: OSError, action: str, path: str | os.PathLike[str], hint: str = ""
) -> StorageError:
    """Turn ``exc`` into a one-line ``StorageError``: what failed, where, why, and what to do."""
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc)
    if name:
        reason = f"{reason} [{name}]"
    fix = hint or _HINTS.get(exc.errno or 0, "")
    message = f"cannot {action} {os.fspath(path)}: {reason}"
    if fix:
        message += f"; {fix}"
    err = StorageError(message.replace("\n", " "))
    err.errno = exc.errno  # str(err) stays the message alone (no strerror/filename set)
    return err


def unlink_quietly(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` if it can be removed; for clean-up that must not mask another error."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries durable (after a create, link, rename or unlink in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems cannot fsync a directory; nothing more to do
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


class DeferredDirSyncs:
    """Directories that got new entries whose fsync is deferred: ``sync`` fsyncs each once.

    Thread-safe. ``sync`` holds the lock while it syncs, so a ``sync`` that returns,
    in any thread, has covered every directory added before it was called.
    """

    def __init__(self) -> None:
        self._dirs: set[Path] = set()
        self._lock = threading.Lock()

    def add(self, directory: Path) -> None:
        with self._lock:
            self._dirs.add(directory)

    @property
    def pending(self) -> frozenset[Path]:
        with self._lock:
            return frozenset(self._dirs)

    def sync(self, hint: str = "") -> None:
        """fsync every pending directory; one that fails stays pending (``StorageError``)."""
        with self._lock:
            for directory in sorted(self._dirs):
                try:
                    fsync_dir(directory)
                except OSError as e:
                    raise storage_error(e, "sync", directory, hint) from e
                self._dirs.discard(directory)


def scan_dir(
    directory: str | os.PathLike[str], hint: str = ""
) -> Iterator[tuple[os.DirEntry[str], os.stat_result]]:
    """The entries of ``directory`` with their ``lstat``, streamed one at a time (flat
    memory at any size); nothing when it does not exist, entries that vanish skipped."""
    try:
        it = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise storage_error(e, "list", directory, hint) from e
    with it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield entry, st


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, overwrite: bool = True
) -> bool:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a mix.

    With ``overwrite=False`` an existing file is kept (publish by ``link``,
    ``EEXIST`` is fine) and ``False`` is returned. A symlink planted at
    ``path`` is replaced, never written through. Raises ``OSError``.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, target)
            written = True
        else:
            try:
                os.link(tmp, target)
                written = True
            except FileExistsError:
                written = False
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    if written:
        fsync_dir(target.parent)
    return written


def _unescape_mount(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type (``ext4``, ``nfs4``, ...) of the filesystem holding ``path``; ``None`` if unknown.

    Reads ``/proc/self/mountinfo`` (Linux); the longest mount point that
    contains the real path wins. ``path`` need not exist yet.
    """
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    real = os.path.realpath(probe)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    best, best_type = -1, None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        mount_point = _unescape_mount(fields[4])
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= best:  # later entries shadow earlier ones
            best, best_type = len(mount_point), right.split()[0]
    return best_type


_SYNC_FILE_RANGE_WRITE: Final = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux); the standard library does not wrap it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only for blobs big enough to need it: a few ms of import

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing ``[offset, offset+length)`` of ``fd`` to disk now,
    without waiting (``SYNC_FILE_RANGE_WRITE``), so the fsync that makes a big blob
    durable finds little left to do instead of flushing it all at the end. A hint:
    a no-op where unsupported, never a replacement for that fsync."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE)

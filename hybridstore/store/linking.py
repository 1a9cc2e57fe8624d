"""Materialize a cache blob at a layout path: reflink, else hardlink, else copy.

A layout must stay self-contained (crane and others reject symlinked blobs),
so a blob is either a copy-on-write clone (``FICLONE``: separate inode, shared
extents), a hard link (same read-only inode as the cache blob) or a plain copy.

``auto`` picks the first that works for a (cache, layout) pair and keeps that
decision in a ``Linker``; only "this filesystem cannot do that" errors fall
through (``EXDEV``, ``EPERM``, ``EOPNOTSUPP``/``ENOTSUP``, ``ENOTTY``, ``ENOSYS``,
``EINVAL``). ``EMLINK`` (one inode hit the filesystem's link limit, typical for
tiny blobs shared by thousands of layouts) copies that one blob only. An
explicitly requested mode that cannot work raises ``LinkError`` rather than
silently copying.

Every result appears atomically at its final name: hard links go straight to
the final name (``EEXIST`` means another writer already put the same content
there); clones and copies are written to a temp name beside it, made read-only,
fsynced and renamed. The syscalls go through the module-level seams
``link_file`` and ``clone_file`` so tests can inject errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import platform
import secrets
import shutil
import stat
import struct
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Final

from hybridstore.errors import (
    HybridstoreError,
    InvalidInputError,
    LinkError,
    NotFoundError,
    StorageError,
)
from hybridstore.fs.files import fsync_dir, storage_error
from hybridstore.fs.seal import seal

__all__ = [
    "ENV_LINK_MODE",
    "FICLONE",
    "LinkMode",
    "Linker",
    "TEMP_PREFIX",
    "clone_file",
    "ficlone_request",
    "link_file",
    "materialize",
]

log = logging.getLogger(__name__)

ENV_LINK_MODE: Final = "HYBRIDSTORE_LINK_MODE"

# Temp files written next to their final name start with this, so verify and gc
# can tell our leftovers from foreign files.
TEMP_PREFIX: Final = ".hybridstore-tmp-"

READ_ONLY: Final = 0o444

# Errors meaning "this filesystem pair cannot do that", never "something broke".
_UNSUPPORTED: Final = frozenset(
    {
        errno.EXDEV,
        errno.EPERM,
        errno.EOPNOTSUPP,
        errno.ENOTSUP,
        errno.ENOTTY,
        errno.ENOSYS,
        errno.EINVAL,
    }
)


class LinkMode(str, Enum):
    """How a layout blob shares storage with its cache blob."""

    AUTO = "auto"
    REFLINK = "reflink"
    HARDLINK = "hardlink"
    COPY = "copy"

    @classmethod
    def parse(cls, value: LinkMode | str | None) -> LinkMode:
        """``value`` as a mode; ``None`` means ``$HYBRIDSTORE_LINK_MODE``, else ``auto``."""
        if isinstance(value, LinkMode):
            return value
        where = "link mode"
        if value is None:
            value = os.environ.get(ENV_LINK_MODE) or cls.AUTO.value
            where = ENV_LINK_MODE
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InvalidInputError(f"invalid {where} {value!r}: choose one of {choices}") from None

    def __str__(self) -> str:
        return self.value


# --- FICLONE --------------------------------------------------------------------------------

# Linux ioctl encoding per architecture family: (value of _IOC_WRITE, _IOC_SIZEBITS).
# asm-generic is (1, 14); powerpc, mips, sparc and alpha use (4, 13); parisc swaps the
# read/write bits: (2, 14). An architecture not listed here gets no FICLONE at all.
_GENERIC_ARCHES: Final = (
    "x86_64", "amd64", "i386", "i486", "i586", "i686", "x86", "aarch64", "arm64", "arm",
    "riscv", "s390", "loongarch", "ia64", "m68k", "sh", "csky", "arc", "hexagon",
    "microblaze", "nios2", "openrisc", "or1k", "xtensa",
)  # fmt: skip
_IOC_LAYOUTS: Final[tuple[tuple[tuple[str, ...], int, int], ...]] = (
    (("ppc", "powerpc", "mips", "sparc", "alpha"), 4, 13),
    (("parisc",), 2, 14),
    (_GENERIC_ARCHES, 1, 14),
)


def ficlone_request(machine: str | None = None, system: str | None = None) -> int | None:
    """The ``FICLONE`` ioctl number, ``_IOW(0x94, 9, int)``, for this machine.

    ``None`` where it is unknown (not Linux, or an architecture whose ioctl
    encoding is not listed): reflink is then reported as unsupported instead of
    sending a wrong request number that could mean something else.
    """
    if (system if system is not None else sys.platform) != "linux":
        return None
    if machine is None:
        known = getattr(fcntl, "FICLONE", None)  # Python >= 3.12 takes it from the C headers
        if isinstance(known, int):
            return known
        machine = platform.machine()
    machine = machine.lower()
    for prefixes, ioc_write, size_bits in _IOC_LAYOUTS:
        if machine.startswith(prefixes):
            size = struct.calcsize("i")
            return (ioc_write << (16 + size_bits)) | (size << 16) | (0x94 << 8) | 9
    return None


FICLONE: Final = ficlone_request()


# --- seams ----------------------------------------------------------------------------------


def link_file(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (seam: tests replace this to inject errors)."""
    os.link(src, dst)


def clone_file(src_fd: int, dst_fd: int) -> None:
    """Make ``dst_fd`` a copy-on-write clone of ``src_fd`` (seam, like ``link_file``)."""
    if FICLONE is None:
        raise OSError(
            errno.EOPNOTSUPP,
            f"reflink is not supported on {sys.platform}/{platform.machine()} by hybridstore",
        )
    fcntl.ioctl(dst_fd, FICLONE, src_fd)


# --- helpers --------------------------------------------------------------------------------


def _temp_path(dst: Path) -> Path:
    return dst.with_name(f"{TEMP_PREFIX}{dst.name[:16]}-{os.getpid()}-{secrets.token_hex(4)}")


def _as_path(path: str | os.PathLike[str]) -> Path:
    return path if isinstance(path, Path) else Path(path)  # Path(Path) re-parses it


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _storage_error(action: str, e: OSError, src: Path) -> HybridstoreError:
    """The library error for a failed filesystem call while materializing ``src``."""
    if e.errno == errno.ENOENT and not os.path.lexists(src):
        return NotFoundError(f"cannot {action}: cache blob {src} is gone (pruned?); fetch it again")
    return storage_error(e, action, e.filename or src)


def _copy_fds(src_fd: int, dst_fd: int) -> int:
    """Copy everything from ``src_fd`` to ``dst_fd`` in the kernel where possible."""
    total = 0
    if hasattr(os, "copy_file_range"):
        try:
            while n := os.copy_file_range(src_fd, dst_fd, 1 << 30):
                total += n
            return total
        except OSError as e:
            if total or e.errno not in _UNSUPPORTED | {errno.EBADF}:
                raise
    with open(src_fd, "rb", closefd=False) as fsrc, open(dst_fd, "wb", closefd=False) as fdst:
        shutil.copyfileobj(fsrc, fdst, 1 << 20)
        fdst.flush()
        total = fdst.tell()
    return total


def _write_temp(src: Path, dst: Path, mode: LinkMode) -> Path:
    """Clone or copy ``src`` to a fresh read-only, fsynced temp file beside ``dst``."""
    tmp = _temp_path(dst)
    src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        dst_fd = os.open(tmp, flags, 0o600)
        try:
            if mode is LinkMode.REFLINK:
                clone_file(src_fd, dst_fd)
            else:
                copied = _copy_fds(src_fd, dst_fd)
                expected = os.fstat(src_fd).st_size
                if copied != expected:
                    raise StorageError(
                        f"copy of {src} stopped after {copied} of {expected} bytes; retry"
                    )
            os.fchmod(dst_fd, READ_ONLY)  # clones and copies carry no mode of their own
            seal(dst_fd, os.fstat(dst_fd))  # a faithful copy of a verified blob
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(src_fd)
    return tmp


def _publish_temp(tmp: Path, dst: Path, sync_dir: bool) -> None:
    try:
        os.replace(tmp, dst)  # replaces a planted symlink itself, never writes through it
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(dst.parent)


def _hardlink(src: Path, dst: Path, sync_dir: bool) -> bool:
    """Link ``src`` at ``dst``; ``False`` when a regular file was already there."""
    try:
        link_file(src, dst)
    except FileExistsError:
        if _is_regular(dst):
            return False
        # Something else (a planted symlink, ...) holds the name: replace it atomically.
        tmp = _temp_path(dst)
        link_file(src, tmp)
        _publish_temp(tmp, dst, sync_dir)
        return True
    if sync_dir:
        fsync_dir(dst.parent)
    return True


def _reason(mode: LinkMode, e: OSError) -> str:
    name = errno.errorcode.get(e.errno or 0, str(e.errno))
    return f"{mode.value} failed with {name}: {e.strerror or e}"


# --- the decision holder --------------------------------------------------------------------


class Linker:
    """Materializes blobs from one cache into one layout, remembering what works.

    ``auto`` is decided on the first blob that succeeds and then kept: later
    errors are real errors, except ``EMLINK`` which copies that blob only.
    Thread-safe, so a parallel transfer can share one ``Linker``.

    ``sync_dirs=False`` leaves the directory fsync to the caller: a layout
    fsyncs its blob directories once before writing ``index.json`` instead of
    once per blob (500 small blobs cost 500 directory fsyncs otherwise).
    """

    def __init__(self, mode: LinkMode | str | None = None, *, sync_dirs: bool = True) -> None:
        self.requested = LinkMode.parse(mode)
        self.sync_dirs = sync_dirs
        self.decided: LinkMode | None = None if self.requested is LinkMode.AUTO else self.requested
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()
        self._warned = False

    def materialize(self, src: Path, dst: Path) -> LinkMode | None:
        """Put ``src``'s content at ``dst``; the mode used, or ``None`` if ``dst`` was there.

        A regular file already at ``dst`` is taken as the same content (both
        names come from the same digest); the caller verifies if it must.
        """
        src, dst = _as_path(src), _as_path(dst)
        decided = self.decided
        # A hard link finds a file already at dst by EEXIST; look first only where a clone
        # or copy would otherwise be written and thrown away (one lstat less per blob).
        if decided is not LinkMode.HARDLINK and _is_regular(dst):
            return None
        if decided is not None:
            return self._run(decided, src, dst, explicit=self.requested is not LinkMode.AUTO)
        with self._lock:  # first blob(s) of an auto pair: probe in order, once
            if self.decided is not None:
                return self._run(self.decided, src, dst, explicit=False)
            return self._probe(src, dst)

    def _probe(self, src: Path, dst: Path) -> LinkMode | None:
        reasons: list[str] = []
        for mode in (LinkMode.REFLINK, LinkMode.HARDLINK):
            try:
                used = self._attempt(mode, src, dst)
            except HybridstoreError:
                raise
            except OSError as e:
                if e.errno not in _UNSUPPORTED:
                    raise _storage_error(f"link {src.name} into {dst.parent}", e, src) from e
                reasons.append(_reason(mode, e))
                log.debug("link mode %s unsupported for %s -> %s: %s", mode, src, dst, e)
                continue
            if used is None:  # the name was already taken: nothing learned, decide later
                return None
            self.decided = mode
            if reasons:
                log.debug("linking %s -> %s by %s (%s)", src.parent, dst.parent, mode, reasons[0])
            return used
        self.decided = LinkMode.COPY
        self.fallback_reason = "; ".join(reasons)
        self._warn_copy(src, dst)
        return self._run(LinkMode.COPY, src, dst, explicit=False)

    def _warn_copy(self, src: Path, dst: Path) -> None:
        if self._warned:
            return
        self._warned = True
        log.warning(
            "cannot reflink or hardlink blobs from %s into %s (%s); copying them, which costs "
            "disk space per layout. Put cache and layout on one filesystem, or set %s=copy "
            "(--link-mode copy) to silence this",
            src.parent,
            dst.parent,
            self.fallback_reason,
            ENV_LINK_MODE,
        )

    def _attempt(self, mode: LinkMode, src: Path, dst: Path) -> LinkMode | None:
        """One try of ``mode``; ``EMLINK`` on a hard link copies this blob instead."""
        if mode is LinkMode.HARDLINK:
            try:
                return mode if _hardlink(src, dst, self.sync_dirs) else None
            except OSError as e:
                if e.errno != errno.EMLINK:
                    raise
                log.info("%s has too many links (EMLINK); copying this blob instead", src.name)
                return self._attempt(LinkMode.COPY, src, dst)
        tmp = _write_temp(src, dst, mode)
        _publish_temp(tmp, dst, self.sync_dirs)
        return mode

    def _run(self, mode: LinkMode, src: Path, dst: Path, *, explicit: bool) -> LinkMode | None:
        try:
            return self._attempt(mode, src, dst)
        except HybridstoreError:
            raise
        except OSError as e:
            if explicit and mode is not LinkMode.COPY and e.errno in _UNSUPPORTED:
                raise self._explicit_error(mode, src, dst, e) from e
            raise _storage_error(f"{mode.value} {src.name} into {dst.parent}", e, src) from e

    @staticmethod
    def _explicit_error(mode: LinkMode, src: Path, dst: Path, e: OSError) -> LinkError:
        why = {
            errno.EXDEV: "the cache and the layout are on different filesystems",
            errno.EPERM: "the filesystem or the kernel refuses it (protected_hardlinks, "
            "blob owned by another user?)",
        }.get(
            e.errno or 0,
            "the filesystem does not support reflinks (XFS with reflink=1, btrfs and bcachefs do)"
            if mode is LinkMode.REFLINK
            else "the filesystem does not support it",
        )
        return LinkError(
            f"--link-mode {mode.value} cannot link {src} to {dst}: {why} "
            f"({errno.errorcode.get(e.errno or 0, e.errno)}); use --link-mode auto or copy "
            f"(or {ENV_LINK_MODE}=auto)"
        )


def materialize(src: Path, dst: Path, mode: LinkMode | str | None = None) -> LinkMode | None:
    """One-off ``Linker(mode).materialize(src, dst)``; hold a ``Linker`` for many blobs."""
    return Linker(mode).materialize(src, dst)

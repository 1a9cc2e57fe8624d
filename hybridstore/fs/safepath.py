"""Writing files below a directory when the names come from untrusted content.

Artifact layers name their own files (``org.opencontainers.image.title``), Helm
charts name their archive (``name``/``version``), tar entries name themselves;
each of these has been used to write outside the target directory (oras#33,
GHSA-8xwf-rjm4-xvhv, CVE-2021-21272, CVE-2024-25620, CVE-2026-35206). So:

- names are checked lexically first: relative, ``/``-separated, no empty,
  ``.`` or ``..`` component, no backslash, drive letter, NUL or control
  character;
- the directory is then walked one component at a time from an open file
  descriptor of the output root (``openat`` style, ``O_NOFOLLOW``), so a
  symlink already present anywhere below the root is refused, never followed
  (a lexical check alone is what GHSA-8xwf-rjm4-xvhv bypassed);
- files are written to a temp name in their final directory, fsynced and
  renamed into place, so a reader never sees half a file and a name that is a
  symlink is refused rather than written through.

The output root itself is the user's choice and may be a symlink.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from hybridstore.errors import StorageError, UnsafePathError
from hybridstore.fs.files import storage_error

__all__ = ["ConfinedDir", "check_component", "check_relative_path"]

_DRIVE: Final = re.compile(r"[A-Za-z]:")
_MAX_NAME: Final = 255
_MAX_PATH: Final = 4096
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_relative_path(name: str, what: str) -> tuple[str, ...]:
    """The components of a safe relative path, or ``UnsafePathError`` saying why not."""
    why = _problem(name)
    if why is not None:
        shown = name if len(name) <= 100 else name[:100] + "..."
        raise UnsafePathError(f"refusing {what} {shown!r}: {why}")
    return tuple(name.split("/"))


def check_component(name: str, what: str) -> str:
    """A single safe path component (no separators at all): chart names and versions."""
    parts = check_relative_path(name, what)
    if len(parts) != 1:
        raise UnsafePathError(f"refusing {what} {name!r}: it must not contain '/'")
    return parts[0]


def _problem(name: str) -> str | None:
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > _MAX_PATH:
        return f"longer than {_MAX_PATH} characters"
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        return "it contains control characters"
    if name.startswith("/"):
        return "it is an absolute path"
    if "\\" in name:
        return "it contains a backslash (a path separator elsewhere)"
    if _DRIVE.match(name):
        return "it starts with a drive letter"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "it has an empty, '.' or '..' component"
        if len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME:
            return f"a component is longer than {_MAX_NAME} bytes"
    return None


class ConfinedDir:
    """An output directory; every write below it stays below it (see the module docstring).

    Created (with parents) if missing. Use as a context manager or call ``close``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise storage_error(e, "open the output directory", self.root) from e

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ConfinedDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks ------------------------------------------------------------------------

    def check(self, parts: tuple[str, ...], what: str) -> None:
        """Refuse ``parts`` if a symlink or non-directory is in the way (nothing is created)."""
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                st = _lstat(part, fd)
                if st is None:
                    return  # the rest will be created
                shown = "/".join(parts[: i + 1])
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafePathError(
                        f"refusing {what} {'/'.join(parts)!r}: {shown!r} in {self.root} is a "
                        "symlink (remove it; extract never follows links)"
                    )
                last = i == len(parts) - 1
                if last:
                    if stat.S_ISDIR(st.st_mode):
                        raise UnsafePathError(
                            f"refusing {what} {shown!r}: a directory of that name is in {self.root}"
                        )
                    return
                if not stat.S_ISDIR(st.st_mode):
                    raise UnsafePathError(
                        f"refusing {what} {'/'.join(parts)!r}: {shown!r} in {self.root} is "
                        "not a directory"
                    )
                new = _step(fd, part, self.root)
                os.close(fd)
                fd = new
        finally:
            os.close(fd)

    def exists(self, name: str) -> bool:
        """Whether a top-level entry ``name`` exists (links included)."""
        return _lstat(name, self.fd) is not None

    # -- writing -----------------------------------------------------------------------

    def write(
        self, parts: tuple[str, ...], chunks: Iterable[bytes], what: str, mode: int = 0o644
    ) -> int:
        """Write ``chunks`` atomically as ``parts``; returns the byte count."""
        self.check(parts, what)
        parent = self._parent(parts, what)
        name = parts[-1]
        tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
        total = 0
        try:
            try:
                fd = os.open(
                    tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=parent,
                )
            except OSError as e:
                raise storage_error(e, "create a file in", self.root / "/".join(parts[:-1])) from e
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    total += len(chunk)
                os.fchmod(fd, mode)
                os.fsync(fd)
            except OSError as e:
                raise storage_error(e, "write", self.root / "/".join(parts)) from e
            finally:
                os.close(fd)
            st = _lstat(name, parent)
            if st is not None and (stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise UnsafePathError(
                    f"refusing {what} {'/'.join(parts)!r}: it became a link or directory"
                )
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            tmp = ""
            _fsync_fd(parent)
        finally:
            if tmp:
                try:
                    os.unlink(tmp, dir_fd=parent)
                except FileNotFoundError:
                    pass
            os.close(parent)
        return total

    def mkdir(self, parts: tuple[str, ...], what: str) -> None:
        """Create the directory ``parts`` (and its parents) without following links."""
        fd = self._parent((*parts, "x"), what)
        os.close(fd)

    def rename_into(self, name: str, target: ConfinedDir) -> None:
        """Move the top-level entry ``name`` into ``target`` (same filesystem); refuses to
        replace anything there."""
        if target.exists(name):
            raise UnsafePathError(
                f"{target.root / name} already exists; remove it or extract elsewhere"
            )
        try:
            os.rename(name, name, src_dir_fd=self.fd, dst_dir_fd=target.fd)
        except OSError as e:
            raise storage_error(e, "move into place", target.root / name) from e
        _fsync_fd(target.fd)

    def _parent(self, parts: tuple[str, ...], what: str) -> int:
        """An fd of ``parts``' parent directory, creating missing directories (no links)."""
        fd = os.dup(self.fd)
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise storage_error(e, "create a directory in", self.root) from e
                new = _step(fd, part, self.root, what="/".join(parts), label=what)
                os.close(fd)
                fd = new
        except BaseException:
            os.close(fd)
            raise
        return fd


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _step(fd: int, part: str, root: Path, what: str = "", label: str = "path") -> int:
    """Open the subdirectory ``part`` of ``fd`` without following a link (``fd`` stays open)."""
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(
                f"refusing {label} {what or part!r}: {part!r} below {root} is a symlink or "
                "not a directory"
            ) from None
        raise StorageError(f"cannot open {part!r} below {root}: {e.strerror}") from e


def _fsync_fd(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise

"""The cache's list of layouts that link from it: one small file per layout.

The cache stays ref-free: what it records of a layout is where it is, never
what it holds (refs and digests live only in the layout's ``index.json``)::

    <cache>/layouts/<sha256 of the path>.json   {"path": "/abs/dir", "device": D, "inode": I}

The file's mtime is the layout's "last used" (bumped each time a command links
into it). One file per layout means no shared mutable index: concurrent pulls
into different layouts write different files, pulls into one layout write the
same bytes, and every write is atomic (temp, fsync, rename, fsync the
directory), so nothing is lost or torn at any kill.

A record is a hint, never trusted: the directory's device and inode number are
kept so that a layout deleted, or moved away and replaced by another directory
at that path, is seen as such (``missing`` / ``replaced``) rather than read as
the layout that was recorded. A moved layout is recorded again at its new path
by the next command that links into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hybridstore.fs.files import atomic_write_bytes, fsync_dir, storage_error
from hybridstore.fs.realdir import check_real_dir, real_dir
from hybridstore.store.cache_layout import CACHE_HINT
from hybridstore.store.layout_files import LAYOUT_FILE

__all__ = ["KnownLayout", "LayoutRegistry", "REGISTRY_DIR"]

log = logging.getLogger(__name__)

REGISTRY_DIR: Final = "layouts"
_MAX_ENTRY: Final = 64 * 1024  # a record is a path and two numbers; anything bigger is not ours


@dataclass(frozen=True)
class KnownLayout:
    """One record, checked against the filesystem when it was read."""

    path: Path
    record: Path  # the registry file
    last_used: float  # epoch seconds: the last time a command linked into it
    state: str  # "live" | "missing" (gone, or no longer a layout) | "replaced" (other dir)

    @property
    def live(self) -> bool:
        return self.state == "live"

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "last_used": self.last_used, "state": self.state}


class LayoutRegistry:
    """The ``layouts/`` directory of the cache at ``cache_root``."""

    def __init__(self, cache_root: Path) -> None:
        self.directory = cache_root / REGISTRY_DIR

    @staticmethod
    def _record_name(path: Path) -> str:
        return hashlib.sha256(os.fsencode(path)).hexdigest() + ".json"

    def _checked_dir(self, create: bool) -> bool:
        """Whether the registry directory exists (made if ``create``): a real directory
        inside the cache root, never a symlink followed out of it (``fs.realdir``)."""
        root, name = self.directory.parent, self.directory.name
        if create:
            real_dir(root, name, CACHE_HINT)
            return True
        return check_real_dir(root, name, CACHE_HINT)

    def record(self, layout_root: Path) -> None:
        """Note that a command links into the layout at ``layout_root`` (made absolute).
        Nothing is written where the cache itself does not exist (yet): it holds nothing
        of the layout's to find or to keep."""
        if not self.directory.parent.is_dir():
            return
        path = Path(os.path.realpath(layout_root))
        st = os.stat(path)
        data = json.dumps(
            {"path": str(path), "device": st.st_dev, "inode": st.st_ino}, sort_keys=True
        ).encode()
        self._checked_dir(create=True)
        target = self.directory / self._record_name(path)
        with contextlib.suppress(OSError):
            if _read(target) == data:
                os.utime(target)  # the same layout again: only its "last used" moves
                return
        try:
            atomic_write_bytes(target, data)
        except OSError as e:
            raise storage_error(e, "write", target, CACHE_HINT) from e

    def __iter__(self) -> Iterator[KnownLayout]:
        """Every record, streamed (one directory entry at a time), each checked."""
        if not self._checked_dir(create=False):
            return
        try:
            it = os.scandir(self.directory)
        except OSError as e:
            raise storage_error(e, "list", self.directory, CACHE_HINT) from e
        with it:
            for entry in it:
                if not entry.name.endswith(".json") or entry.name.startswith("."):
                    continue
                known = self._load(Path(entry.path))
                if known is not None:
                    yield known

    def _load(self, record: Path) -> KnownLayout | None:
        try:
            st = os.lstat(record)
            if not stat.S_ISREG(st.st_mode):
                return None
            obj = json.loads(_read(record))
            path = Path(obj["path"])
            device, inode = int(obj["device"]), int(obj["inode"])
        except FileNotFoundError:
            return None  # forgotten meanwhile
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring %s: not a layout record (%s)", record, e)
            return None
        if record.name != self._record_name(path):
            log.warning("ignoring %s: its name does not match the path it records", record)
            return None
        return KnownLayout(path, record, st.st_mtime, _state(path, device, inode))

    def forget(self, known: KnownLayout) -> bool:
        """Remove ``known``'s record unless the layout came back (re-recorded or live
        again) since it was read; whether it was removed."""
        again = self._load(known.record)
        if again is None or again.live or again.last_used != known.last_used:
            return False
        try:
            os.unlink(known.record)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise storage_error(e, "remove", known.record, CACHE_HINT) from e
        fsync_dir(self.directory)
        return True


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read(_MAX_ENTRY)


def _state(path: Path, device: int, inode: int) -> str:
    try:
        st = os.stat(path)
        header = os.lstat(path / LAYOUT_FILE)
    except OSError:
        return "missing"
    if not stat.S_ISDIR(st.st_mode) or not stat.S_ISREG(header.st_mode):
        return "missing"
    return "live" if (st.st_dev, st.st_ino) == (device, inode) else "replaced"

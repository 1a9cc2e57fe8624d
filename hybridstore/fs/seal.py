"""A verification seal kept in a blob file's own mtime, so reuse needs no re-hash.

Whoever has just checked a blob's bytes against its digest (publishing it,
re-hashing it in ``cache verify``, linking a copy into a layout) sets the
file's mtime to "now" with a nanosecond part derived from the file's inode
number and size. Any later ``write(2)`` to the file sets the mtime to the
kernel's clock instead, which breaks the seal; a cache hit or a "present"
layout blob whose seal is broken is re-hashed before it is reused. Checking
costs nothing beyond the ``lstat`` every reuse already does, and the cache
stays free of per-blob bookkeeping files (the seconds still mean "last used",
for LRU pruning).

What it detects: bytes changed through the filesystem after the last
verification (a blob made writable and edited in place, truncated and
rewritten, or a file copied or restored under the name, which gets a new
inode). What it does not: changes that bypass ``write(2)`` (bit rot, editing
the block device) or a deliberate ``touch`` that forges the nanoseconds. Those
need a full re-hash: ``cache verify``, ``layout verify``, ``pull --verify``.
On filesystems that keep whole-second timestamps the seal never holds, so
every reuse is re-hashed: slower, never wrong.
"""

from __future__ import annotations

import os
import time
from typing import Final

__all__ = ["is_sealed", "seal"]

_NS: Final = 1_000_000_000
_MOD: Final = 999_999_937  # a prime below 10**9: seals spread over every nanosecond value


def _seal_ns(st: os.stat_result) -> int:
    """The nanosecond part a sealed file of this inode and size carries (never 0, which
    is what a whole-second filesystem stores for every write)."""
    return (st.st_ino * 0x9E3779B1 + st.st_size) % _MOD + 1


def is_sealed(st: os.stat_result) -> bool:
    """Whether the file was last written by a sealing verifier (see the module docstring)."""
    return st.st_mtime_ns % _NS == _seal_ns(st)


def seal(
    target: int | str | os.PathLike[str], st: os.stat_result, *, keep_time: bool = False
) -> None:
    """Mark ``target`` (a path or an open fd, whose ``lstat``/``fstat`` is ``st``) as
    verified; its mtime becomes now, or stays within the second it was with
    ``keep_time`` (a check is not a use). Raises ``OSError`` (e.g. ``EPERM``)."""
    now = time.time_ns()
    at = st.st_mtime_ns if keep_time else now
    stamped = at - at % _NS + _seal_ns(st)
    if stamped > at:  # never later than it was: "last used" stays <= now
        stamped -= _NS
    if isinstance(target, int):
        os.utime(target, ns=(now, stamped))
    else:
        os.utime(target, ns=(now, stamped), follow_symlinks=False)

"""Looking after a ``BlobCache``: inventory (info, du), full re-verification, pruning.

Kept apart from ``cache.py`` because none of it is on the pull path: it scans
the whole cache, and it is the only code that ever deletes a published blob.

Pruning is safe while pulls run because (1) a blob whose "last used" time
(its mtime, see ``cache.py``) is within the grace period is never removed, and
every pull touches or publishes a blob before handing it out; (2) each removal
re-checks the file right before unlinking it; (3) removing a cache blob never
breaks a layout (layouts hold their own link or copy) nor a reader that has it
open; a pull that finds its blob gone fetches it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hybridstore.errors import InvalidDigestError, InvalidInputError
from hybridstore.fs.files import fsync_dir, scan_dir, storage_error
from hybridstore.fs.locking import cannot_lock_here, held_elsewhere
from hybridstore.fs.seal import is_sealed, seal
from hybridstore.oci.digest import SUPPORTED_ALGORITHMS, Digest
from hybridstore.store.cache import CACHE_HINT
from hybridstore.store.layout_registry import REGISTRY_DIR

if TYPE_CHECKING:
    from hybridstore.store.cache import BlobCache

__all__ = [
    "AreaUsage",
    "BadBlob",
    "DEFAULT_GRACE",
    "CacheInfo",
    "DiskUsage",
    "IngestEntry",
    "PruneEntry",
    "PruneReport",
    "VerifyReport",
    "cache_info",
    "disk_usage",
    "prune_cache",
    "scan_ingest",
    "verify_cache",
]

log = logging.getLogger("hybridstore.store.cache")

_STALE_AFTER = 3600.0  # verify lists ingest files untouched this long as stale


def _jsonable(value: Any) -> Any:
    if isinstance(value, (Path, Digest)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


class _Json:
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths and digests as strings)."""
        out = _jsonable(self)
        assert isinstance(out, dict)
        return out

# Blobs used, and ingest files written, less than this many seconds ago survive prune:
# a pull in flight may be about to link them.
DEFAULT_GRACE: Final = 3600.0


@dataclass(frozen=True)
class IngestEntry(_Json):
    """A file under ``ingest/``: a resumable partial, a writer's temp file, or foreign."""

    path: Path
    digest: Digest | None
    kind: str  # "partial" | "temp" | "other"
    size: int
    mtime: float  # last written, epoch seconds
    age: float  # seconds since last written, when scanned


@dataclass(frozen=True)
class CacheInfo(_Json):
    root: Path
    exists: bool
    layout_version: int | None
    locks_trusted: bool  # cross-process resume enabled (local filesystem)
    blob_count: int
    blob_bytes: int
    shared_count: int  # blobs also hard-linked from a layout (link count > 1)
    shared_bytes: int
    partial_count: int
    partial_bytes: int
    quarantined_count: int


@dataclass(frozen=True)
class AreaUsage(_Json):
    name: str
    files: int
    bytes: int  # apparent size
    disk_bytes: int  # allocated blocks


@dataclass(frozen=True)
class DiskUsage(_Json):
    root: Path
    areas: tuple[AreaUsage, ...]
    cache_only_bytes: int  # blob bytes no layout links (what deleting the cache frees)
    total_bytes: int
    total_disk_bytes: int


@dataclass(frozen=True)
class BadBlob(_Json):
    path: Path
    digest: Digest | None
    reason: str
    links: int  # other hard links (layouts) still sharing the bad content
    quarantined_to: Path | None = None


@dataclass(frozen=True)
class VerifyReport(_Json):
    root: Path
    checked: int
    checked_bytes: int
    corrupt: tuple[BadBlob, ...]
    unknown: tuple[Path, ...]  # files under blobs/ that are not blobs this code can verify
    ingests: tuple[IngestEntry, ...]
    stale_ingests: tuple[IngestEntry, ...]
    repaired: bool

    @property
    def ok(self) -> bool:
        """No corrupt blob is left in ``blobs/``."""
        return all(b.quarantined_to is not None for b in self.corrupt)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "ok": self.ok}


@dataclass(frozen=True)
class PruneEntry(_Json):
    digest: Digest
    path: Path
    size: int
    last_used: float  # epoch seconds (the blob's mtime)
    links: int


@dataclass(frozen=True)
class PruneReport(_Json):
    root: Path
    dry_run: bool
    removed: tuple[PruneEntry, ...]  # empty when they were streamed to ``on_remove``
    removed_count: int
    removed_bytes: int
    freed_bytes: int  # of removed_bytes, what no layout still links (disk space actually freed)
    kept_in_grace: int  # blobs a policy selected but the grace period protected
    remaining_bytes: int
    max_size: int | None
    budget_met: bool | None
    swept: tuple[Path, ...] = field(default=())  # stale ingest/lock/quarantine files
    swept_bytes: int = 0


def _digest_from_ingest_name(name: str) -> Digest | None:
    alg, sep, rest = name.partition("-")
    if not sep or alg not in SUPPORTED_ALGORITHMS:
        return None
    try:
        return Digest.parse(f"{alg}:{rest.split('.', 1)[0]}")
    except InvalidDigestError:
        return None


def scan_ingest(cache: BlobCache, now: float | None = None) -> list[IngestEntry]:
    """Every regular file under ``ingest/``, classified."""
    now = time.time() if now is None else now
    out = []
    for entry, st in scan_dir(cache.ingest_dir, CACHE_HINT):
        if not stat.S_ISREG(st.st_mode):
            continue
        digest = _digest_from_ingest_name(entry.name)
        if digest is not None and entry.name.endswith(".partial"):
            kind = "partial"
        elif digest is not None and entry.name.endswith(".tmp"):
            kind = "temp"
        else:
            kind = "other"
        age = now - st.st_mtime
        out.append(IngestEntry(Path(entry.path), digest, kind, st.st_size, st.st_mtime, age))
    return sorted(out, key=lambda e: e.path)


def cache_info(cache: BlobCache) -> CacheInfo:
    version = cache.check_layout()
    count = size = shared = shared_bytes = 0
    for _, st in cache.blobs():
        count += 1
        size += st.st_size
        if st.st_nlink > 1:
            shared += 1
            shared_bytes += st.st_size
    partials = scan_ingest(cache)
    quarantined = sum(1 for _ in scan_dir(cache.quarantine_dir, CACHE_HINT))
    return CacheInfo(
        root=cache.root,
        exists=cache.root.is_dir(),
        layout_version=version,
        locks_trusted=cache.locks_trusted,
        blob_count=count,
        blob_bytes=size,
        shared_count=shared,
        shared_bytes=shared_bytes,
        partial_count=len(partials),
        partial_bytes=sum(e.size for e in partials),
        quarantined_count=quarantined,
    )


def _walk(directory: Path) -> Iterator[os.stat_result]:
    for entry, st in scan_dir(directory, CACHE_HINT):
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(Path(entry.path))
        else:
            yield st


def disk_usage(cache: BlobCache) -> DiskUsage:
    cache.check_layout()
    areas = []
    cache_only = 0
    known = ("blobs", "ingest", "locks", "quarantine")
    for name in known:
        files = nbytes = disk = 0
        for st in _walk(cache.root / name):
            files += 1
            nbytes += st.st_size
            disk += st.st_blocks * 512
            if name == "blobs" and st.st_nlink == 1:
                cache_only += st.st_size
        areas.append(AreaUsage(name, files, nbytes, disk))
    other: list[os.stat_result] = []
    for entry, st in scan_dir(cache.root, CACHE_HINT):
        if entry.name not in known:
            other.extend(_walk(Path(entry.path)) if stat.S_ISDIR(st.st_mode) else [st])
    areas.append(
        AreaUsage(
            "other",
            len(other),
            sum(st.st_size for st in other),
            sum(st.st_blocks * 512 for st in other),
        )
    )
    return DiskUsage(
        root=cache.root,
        areas=tuple(areas),
        cache_only_bytes=cache_only,
        total_bytes=sum(a.bytes for a in areas),
        total_disk_bytes=sum(a.disk_bytes for a in areas),
    )


def _check_blob(cache: BlobCache, path: Path, digest: Digest, st: os.stat_result) -> BadBlob | None:
    if not stat.S_ISREG(st.st_mode):
        return BadBlob(path, digest, "is not a regular file", 0)
    try:
        actual = cache.hash_file(path, digest.algorithm)
    except FileNotFoundError:
        return None  # pruned while we looked
    except OSError as e:
        raise storage_error(e, "read", path, CACHE_HINT) from e
    if actual == digest:
        if not is_sealed(st):  # verified now: later reuse need not hash it again
            with contextlib.suppress(OSError):
                seal(path, st, keep_time=True)
        return None
    return BadBlob(path, digest, f"content hashes to {actual}", st.st_nlink - 1)


def _named_blobs(
    cache: BlobCache, unknown: list[Path]
) -> Iterator[tuple[Path, Digest, os.stat_result]]:
    """Every file under ``blobs/<alg>/`` named like a blob, streamed; the rest goes to
    ``unknown`` (files this code cannot verify)."""
    for alg_entry, alg_st in scan_dir(cache.blobs_dir, CACHE_HINT):
        if not stat.S_ISDIR(alg_st.st_mode) or alg_entry.name not in SUPPORTED_ALGORITHMS:
            unknown.append(Path(alg_entry.path))
            continue
        for entry, st in scan_dir(alg_entry.path, CACHE_HINT):
            try:
                digest = Digest.parse(f"{alg_entry.name}:{entry.name}")
            except InvalidDigestError:
                unknown.append(Path(entry.path))
                continue
            yield Path(entry.path), digest, st


def verify_cache(
    cache: BlobCache, *, repair: bool = False, workers: int | None = None
) -> VerifyReport:
    """Re-hash every blob; report (and with ``repair`` move to ``quarantine/``) corrupt ones.

    Streams the cache with a bounded window of blobs in flight, so memory stays
    flat however many blobs there are. A good blob is sealed as verified.
    """
    cache.check_layout()
    unknown: list[Path] = []
    corrupt: list[BadBlob] = []
    checked = checked_bytes = 0
    workers = workers or min(4, os.cpu_count() or 1)
    window: deque[tuple[Path, os.stat_result, Future[BadBlob | None]]] = deque()

    def settle() -> None:
        path, st, future = window.popleft()
        bad = future.result()
        if bad is not None and repair:
            moved = cache.set_aside(path, st, bad.reason)
            bad = BadBlob(bad.path, bad.digest, bad.reason, bad.links, moved)
        if bad is not None:
            corrupt.append(bad)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # hashlib releases the GIL
        for path, digest, st in _named_blobs(cache, unknown):
            checked += 1
            checked_bytes += st.st_size
            window.append((path, st, pool.submit(_check_blob, cache, path, digest, st)))
            if len(window) >= workers * 4:
                settle()
        while window:
            settle()
    ingests = scan_ingest(cache)
    return VerifyReport(
        root=cache.root,
        checked=checked,
        checked_bytes=checked_bytes,
        corrupt=tuple(corrupt),
        unknown=tuple(sorted(unknown)),
        ingests=tuple(ingests),
        stale_ingests=tuple(e for e in ingests if e.age > _STALE_AFTER),
        repaired=repair,
    )


def _probe_free(lock_path: Path) -> bool:
    """Whether nobody holds ``lock_path``, without creating or changing anything."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True  # a live holder always has its lock file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if held_elsewhere(e):
            return False
        if not cannot_lock_here(e):  # where nothing can lock, nobody holds it
            raise
    finally:
        os.close(fd)
    return True


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise storage_error(e, "remove", path, CACHE_HINT) from e


def _sweep(cache: BlobCache, cutoff: float, dry_run: bool) -> list[tuple[Path, int]]:
    """Stale ingest files (unlocked, untouched for the grace period), lock files, quarantine,
    and layout-registry temp files."""
    swept: list[tuple[Path, int]] = []
    for entry in scan_ingest(cache):
        if entry.mtime >= cutoff:
            continue
        if entry.kind == "partial" and entry.digest is not None and cache.locks_trusted:
            lock_path = cache.lock_path(entry.digest)
            if dry_run:
                if _probe_free(lock_path):
                    swept.append((entry.path, entry.size))
                continue
            with cache.lock_at(lock_path, str(lock_path), wait=False) as free:
                if free and os.lstat(entry.path).st_mtime < cutoff:
                    _remove(entry.path)
                    swept.append((entry.path, entry.size))
            continue
        if not dry_run:
            _remove(entry.path)
        swept.append((entry.path, entry.size))
    records = cache.root / REGISTRY_DIR  # temp files of a recorder killed mid-write
    for directory, suffix in (
        (cache.locks_dir, ".lock"),
        (cache.quarantine_dir, ""),
        (records, ".tmp"),
    ):
        for dentry, st in scan_dir(directory, CACHE_HINT):
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                continue
            if not dentry.name.endswith(suffix):
                continue
            path = Path(dentry.path)
            if dry_run:
                if suffix != ".lock" or _probe_free(path):
                    swept.append((path, st.st_size))
            elif suffix == ".lock" and cache.locks_trusted:
                with cache.lock_at(path, str(path), wait=False) as free:
                    if free:
                        swept.append((path, st.st_size))
            else:
                _remove(path)
                swept.append((path, st.st_size))
    return swept


class _Policy:
    """Which blobs ``prune`` may remove: every selector given must match."""

    def __init__(
        self,
        now: float,
        older_than: float | None,
        unlinked: bool,
        referenced: set[str] | None,
        grace: float,
    ) -> None:
        self.older = None if older_than is None else now - older_than
        self.unlinked = unlinked
        self.referenced = referenced
        self.grace_cutoff = now - grace

    def matches(self, digest: Digest, st: os.stat_result) -> bool:
        return (
            (self.older is None or st.st_mtime < self.older)
            and (not self.unlinked or st.st_nlink == 1)
            and (self.referenced is None or str(digest) not in self.referenced)
        )

    def still_removable(self, entry: PruneEntry) -> bool:
        """Re-check right before unlinking: same file, still unused, still unlinked if
        required (a pull that used the blob meanwhile bumped its mtime)."""
        try:
            st = os.lstat(entry.path)
        except FileNotFoundError:
            return False
        cutoff = self.grace_cutoff if self.older is None else min(self.grace_cutoff, self.older)
        unchanged = st.st_mtime == entry.last_used and st.st_mtime < cutoff
        return unchanged and (not self.unlinked or st.st_nlink == 1)


def _lru_cutoff(mtimes: array[int], sizes: array[int], need: int) -> tuple[int, int]:
    """The mtime (ns) up to which least-recently-used candidates must go to free ``need``
    bytes, and how many bytes must still come from those at exactly that mtime.

    Narrows a 1024-bucket histogram over the candidates' mtimes instead of
    sorting them, so memory stays at the two flat arrays however many there are.
    """
    lo, hi = min(mtimes), max(mtimes)
    while lo < hi:
        width = (hi - lo) // 1024 + 1
        buckets = [0] * 1025
        for t, n in zip(mtimes, sizes, strict=True):
            if lo <= t <= hi:
                buckets[(t - lo) // width] += n
        for b, n in enumerate(buckets):
            if n >= need:
                lo, hi = lo + b * width, min(hi, lo + (b + 1) * width - 1)
                break
            need -= n
        else:  # every candidate is needed, and still not enough
            return hi, need
        if width == 1:
            break
    return lo, need


def prune_cache(
    cache: BlobCache,
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    unlinked: bool = False,
    unreferenced: bool = False,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    on_remove: Callable[[PruneEntry], None] | None = None,
) -> PruneReport:
    """Remove blobs by policy, never one used within ``grace`` seconds; sweep stale ingests.

    Policies: ``older_than`` (last used before now - older_than), ``unlinked``
    (no layout hard-links it) and ``unreferenced`` (no ref of any live layout
    the cache knows reaches it: right in every link mode) select blobs; with no
    selector all blobs are candidates for ``max_size``, which removes least
    recently used first until the blobs total at most ``max_size`` bytes. With
    no policy only stale ingest, lock and quarantine files are swept.

    The cache is streamed (twice with ``max_size``), so memory stays flat at
    any size: with ``on_remove`` each removed blob is handed over as it goes and
    not kept in the report (its ``removed`` is then empty; the counts are set).
    """
    for name, value in (("older_than", older_than), ("max_size", max_size), ("grace", grace)):
        if value is not None and value < 0:
            raise InvalidInputError(f"prune: {name} must not be negative, got {value}")
    cache.check_layout()
    now = time.time()
    selecting = older_than is not None or max_size is not None or unlinked or unreferenced
    referenced = None
    if unreferenced:
        from hybridstore.store.cache_layouts import referenced_digests

        referenced = referenced_digests(cache)
    policy = _Policy(now, older_than, unlinked, referenced, grace)
    removed: list[PruneEntry] = []
    count = removed_bytes = freed_bytes = 0
    touched_dirs: set[Path] = set()

    def remove(entry: PruneEntry) -> bool:
        if not dry_run:
            if not policy.still_removable(entry):
                return False
            _remove(entry.path)
            touched_dirs.add(entry.path.parent)
        nonlocal count, removed_bytes, freed_bytes
        count += 1
        removed_bytes += entry.size
        freed_bytes += entry.size if entry.links == 1 else 0
        if on_remove is None:
            removed.append(entry)
        else:
            on_remove(entry)
        return True

    total = kept = 0
    mtimes, sizes = array("q"), array("q")
    for digest, st in cache.blobs() if selecting else ():
        total += st.st_size
        if not policy.matches(digest, st):
            continue
        if st.st_mtime >= policy.grace_cutoff:
            kept += 1
        elif max_size is None:
            remove(PruneEntry(digest, cache.path(digest), st.st_size, st.st_mtime, st.st_nlink))
        else:
            mtimes.append(st.st_mtime_ns)
            sizes.append(st.st_size)
    if max_size is not None and total > max_size and mtimes:
        cutoff_ns, at_cutoff = _lru_cutoff(mtimes, sizes, total - max_size)
        del mtimes, sizes
        for digest, st in cache.blobs():
            due = st.st_mtime_ns < cutoff_ns or (st.st_mtime_ns == cutoff_ns and at_cutoff > 0)
            if not due or st.st_mtime >= policy.grace_cutoff or not policy.matches(digest, st):
                continue
            entry = PruneEntry(digest, cache.path(digest), st.st_size, st.st_mtime, st.st_nlink)
            if remove(entry) and st.st_mtime_ns == cutoff_ns:
                at_cutoff -= st.st_size
    for d in touched_dirs:
        fsync_dir(d)
    removed.sort(key=lambda b: b.last_used)  # least recently used first, as chosen
    swept = _sweep(cache, now - grace, dry_run)
    remaining = total - removed_bytes
    budget_met = None if max_size is None else remaining <= max_size
    return PruneReport(
        root=cache.root,
        dry_run=dry_run,
        removed=tuple(removed),
        removed_count=count,
        removed_bytes=removed_bytes,
        freed_bytes=freed_bytes,
        kept_in_grace=kept if max_size is None or not budget_met else 0,
        remaining_bytes=remaining,
        max_size=max_size,
        budget_met=budget_met,
        swept=tuple(p for p, _ in swept),
        swept_bytes=sum(n for _, n in swept),
    )

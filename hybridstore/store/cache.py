"""The shared blob cache: a ref-free, crash-safe content store many processes share.

On disk (containerd's content store layout, the one ORAS uses for ``ORAS_CACHE``;
an existing directory of that shape works as a cache)::

    <root>/hybridstore-layout       {"cacheLayoutVersion": 1}
    <root>/CACHEDIR.TAG, .gitignore  keep backup tools and git out
    <root>/blobs/<alg>/<encoded>     complete, verified, read-only (0444) blobs
    <root>/ingest/                   in-progress writes, never read as blobs
    <root>/locks/<alg>-<enc>.lock    per-digest single-flight locks
    <root>/quarantine/               blobs that failed a check, set aside for inspection

Publishing: bytes stream into a file under ``ingest/`` while being hashed and
counted (``store/ingest.py``); then fsync, check size and digest, ``os.link``
into ``blobs/`` (``EEXIST``: someone else published it, fine), unlink the ingest
file. Never ``os.replace`` onto a blob: layouts hard-link blob inodes, and
swapping the inode would leave them behind (pnpm#3445). Nothing unverified is
ever visible under ``blobs/``.

Durability: a blob's *data* is fsynced before its name appears, so a visible
name never shows a torn file. The *name* is made durable later, in bulk:
``sync()`` fsyncs each ``blobs/<alg>/`` that got new entries once (per-blob
directory fsyncs were a sixth of a cold 500-blob pull). Whoever writes a
completion marker that may name these blobs calls it first: a layout before
``index.json``, an import before it tags. That is safe because a layout never
depends on the cache's name: it holds its own hard link (sharing the
already-fsynced inode), reflink or copy (fsynced as a file) in its own
``blobs/<alg>/``, which it fsyncs before ``index.json``. After a power loss the
worst case is a missing cache entry (fetched again when next used), never a
layout ref to a missing or torn blob; callers that only read a blob back
(extract, staging an upload) need no ``sync()`` at all.

Single flight: the writer of a digest holds an OS lock for it (``flock``;
the kernel drops it if the holder dies), so a blob crosses the network once per
machine; the others wait until it is published. ``try_ingest`` does not wait:
it hands back a digest someone else is fetching, so a puller can first fetch
what nobody is fetching and come back for the rest (usually cache hits by
then). Correctness never depends on the lock: where locks cannot be trusted
(network and FUSE filesystems, where flock may silently succeed for everyone)
each writer uses its own temp file and only whole, verified files are linked.
Where they are trusted, a holder killed mid-download leaves its partial for the
next holder to resume (``ingest.fill``).

"Used", for pruning, is the blob file's mtime: set when the blob is published,
and bumped by ``touch`` (which ``ingest`` calls on every cache hit and layout
code calls when it links a blob). The blob inode is shared with the layouts
that hard-link it, so their copy's mtime moves too; that is harmless (the file
is content-addressed and read-only, and no OCI tool reads blob mtimes) and
keeps the cache free of per-use bookkeeping files.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, BinaryIO, Final

from hybridstore.errors import (
    IntegrityError,
    InvalidDigestError,
    InvalidInputError,
    LockTimeoutError,
    NotFoundError,
    StorageError,
)
from hybridstore.fs.files import (
    LOCAL_FILESYSTEMS,
    DeferredDirSyncs,
    filesystem_type,
    scan_dir,
    storage_error,
    unlink_quietly,
)
from hybridstore.fs.locking import (
    LOCK_TIMEOUT_ENV,
    FileLock,
    acquire_visibly,
    cannot_lock_here,
    lock_timeout,
)
from hybridstore.fs.realdir import check_real_dir, real_dir
from hybridstore.fs.seal import is_sealed, seal
from hybridstore.oci.digest import SUPPORTED_ALGORITHMS, Digest
from hybridstore.store.cache_layout import (
    CACHE_HINT,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    create_cache,
    layout_version,
)
from hybridstore.store.ingest import (
    CHUNK_SIZE,
    BlobSource,
    IngestFile,
    IngestResult,
    fill,
    open_partial,
    stream_source,
)

__all__ = [
    "BlobCache",
    "BlobSource",
    "CACHE_HINT",
    "CHUNK_SIZE",
    "IngestResult",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "LOCK_TIMEOUT_ENV",
    "lock_timeout",
]

log = logging.getLogger(__name__)

# The areas every cache has (created on first write); quarantine/ appears when needed.
_AREAS: Final = ("blobs", "ingest", "locks")
_QUARANTINE: Final = "quarantine"

_NO_HARDLINKS: Final = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}
)


def _cache_hint(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space (hybridstore cache prune) or {CACHE_HINT}"
    return CACHE_HINT


class BlobCache:
    """The shared, ref-free content-addressed blob store (see the module docstring)."""

    def __init__(
        self, root: str | os.PathLike[str] | None = None, *, trust_locks: bool | None = None
    ) -> None:
        """``trust_locks``: whether cross-process resume may rely on flock; ``None`` decides
        by filesystem type (local filesystems yes, network/FUSE no)."""
        base = Path(root).expanduser() if root is not None else self.default_root()
        self.root: Path = base.absolute()
        self._blobs = os.path.join(self.root, "blobs")  # str: per-blob paths skip pathlib
        self._trust_locks = trust_locks
        self._prepared = False
        self._layout_checked = False
        self._unsynced = DeferredDirSyncs()  # blobs/<alg> with entries not yet durable
        self._alg_dirs: dict[str, Path] = {}  # blobs/<alg> directories known to exist

    def __repr__(self) -> str:
        return f"BlobCache({str(self.root)!r})"

    @staticmethod
    def default_root() -> Path:
        """``HYBRIDSTORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/hybridstore``, else
        ``~/.cache/hybridstore``."""
        env = os.environ.get("HYBRIDSTORE_CACHE_DIR")
        if env:
            return Path(env).expanduser().absolute()
        xdg = os.environ.get("XDG_CACHE_HOME")
        if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore relative values
            return Path(xdg) / "hybridstore"
        return Path.home() / ".cache" / "hybridstore"

    # -- areas -----------------------------------------------------------------

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def ingest_dir(self) -> Path:
        return self.root / "ingest"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def locks_trusted(self) -> bool:
        """Whether flock on this cache's filesystem is enforced for every process using it."""
        if self._trust_locks is None:
            fstype = filesystem_type(self.root)
            self._trust_locks = fstype in LOCAL_FILESYSTEMS
            log.debug("cache %s is on %s; locks trusted: %s", self.root, fstype, self._trust_locks)
        return self._trust_locks

    def path(self, digest: Digest) -> Path:
        """Where ``digest``'s blob lives (may not exist); refuses bad or unverifiable digests."""
        return Path(self._file(digest))

    def _file(self, digest: Digest) -> str:
        alg, enc = digest.path_components()
        return f"{self._blobs}/{alg}/{enc}"

    def _ingest_name(self, digest: Digest) -> str:
        alg, enc = digest.path_components()
        return f"{alg}-{enc}"

    def lock_path(self, digest: Digest) -> Path:
        return self.locks_dir / f"{self._ingest_name(digest)}.lock"

    def partial_path(self, digest: Digest) -> Path:
        """The resumable partial of ``digest``; only the holder of its lock may touch it."""
        return self.ingest_dir / f"{self._ingest_name(digest)}.partial"

    # -- layout ------------------------------------------------------------------

    def check_layout(self) -> int | None:
        """The cache's layout version (``None`` if not yet written); refuse newer ones, and
        refuse an area of the cache that leads out of it (a symlinked ``blobs/sha256``
        would hand out files nobody verified and take writes elsewhere)."""
        version = layout_version(self.root)
        for area in (*_AREAS, _QUARANTINE):
            check_real_dir(self.root, area, CACHE_HINT)
        try:
            algs = [e.name for e in os.scandir(self.blobs_dir) if e.is_symlink()]
        except (FileNotFoundError, NotADirectoryError):
            algs = []
        for alg in algs:
            check_real_dir(self.root, f"blobs/{alg}", CACHE_HINT)
        self._layout_checked = True
        return version

    def _check_layout_once(self) -> None:
        if not self._layout_checked:
            self.check_layout()

    def real_dir(self, area: str) -> Path:
        """The cache's directory ``area`` (``"blobs/sha256"``, ``"layouts"``, ...), created
        as a real directory inside the root; a symlink there is refused, or replaced when
        it dangles or points to an empty directory. Every directory the cache writes
        into comes from here, so the cache never writes outside its root."""
        return real_dir(self.root, area, CACHE_HINT)

    def _prepare(self) -> None:
        """Create the cache on first write: directories, version file, CACHEDIR.TAG, .gitignore."""
        if self._prepared:
            return
        self.check_layout()
        create_cache(self.root, _AREAS)
        self._prepared = True

    # -- reading -------------------------------------------------------------------

    def exists(self, digest: Digest, size: int | None = None) -> bool:
        """Whether the blob is present (with ``size``, if given): one ``lstat``.

        A file of the wrong size is re-hashed to find out who is wrong: a corrupt
        file is moved to ``quarantine/`` (layouts keep their links), one the
        caller has the wrong size for is left alone. Either way: ``False``.
        """
        return self._present(digest, size, self._file(digest)) is not None

    def hit(
        self, digest: Digest, size: int | None = None, *, rehash: bool = False
    ) -> IngestResult | None:
        """The blob if present (as ``exists``) and still as verified, with its use
        recorded (``touch``): what ``ingest`` returns on a cache hit, without lock or
        source; ``None`` if absent.

        A blob whose seal is broken (its bytes were written after it was verified,
        see ``fs/seal.py``), or any blob with ``rehash``, is hashed first; one whose
        content no longer matches is moved to ``quarantine/`` and is not a hit.
        """
        final = self._file(digest)
        st = self._present(digest, size, final)
        if st is None:
            return None
        verified = is_sealed(st)
        if rehash or not verified:
            if not self._still_good(digest, Path(final), st):
                return None
            verified = True
        if not self._record_use(final, st, verified):  # pruned since the check: fetch it again
            return None
        return IngestResult(digest, st.st_size, Path(final), False, 0, 0)

    def _still_good(self, digest: Digest, path: Path, st: os.stat_result) -> bool:
        """Re-hash a blob about to be reused; set it aside if its content changed."""
        try:
            actual = self.hash_file(path, digest.algorithm)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise storage_error(e, "read", path, CACHE_HINT) from e
        if actual == digest:
            return True
        self.set_aside(path, st, f"was changed after it was verified: it hashes to {actual}")
        return False

    def _present(self, digest: Digest, size: int | None, path: str) -> os.stat_result | None:
        """``exists``, returning the blob's ``lstat`` (``path`` is ``_file(digest)``)."""
        self._check_layout_once()
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise storage_error(e, "read", path, CACHE_HINT) from e
        if not stat.S_ISREG(st.st_mode):
            self.set_aside(Path(path), st, "is not a regular file")
            return None
        if size is None or st.st_size == size:
            return st
        try:
            actual = self.hash_file(Path(path), digest.algorithm)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise storage_error(e, "read", path, CACHE_HINT) from e
        if actual != digest:
            self.set_aside(Path(path), st, f"hashes to {actual}")
        else:
            log.warning(
                "%s is %d bytes in the cache, not the %d bytes asked for: the descriptor is wrong",
                digest, st.st_size, size,
            )  # fmt: skip
        return None

    def open(self, digest: Digest) -> BinaryIO:
        """Open the blob for reading; ``NotFoundError`` if absent. An open blob survives pruning."""
        path = self.path(digest)
        self._check_layout_once()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{digest} is not in the cache at {self.root}") from None
        except OSError as e:
            raise storage_error(e, "open", path, CACHE_HINT) from e
        return os.fdopen(fd, "rb")

    def stat(self, digest: Digest) -> os.stat_result:
        path = self.path(digest)
        try:
            return os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{digest} is not in the cache at {self.root}") from None
        except OSError as e:
            raise storage_error(e, "read", path, CACHE_HINT) from e

    def touch(self, digest: Digest) -> None:
        """Record a use of the blob for LRU pruning: its mtime becomes now (see the module
        docstring), keeping the verification seal of an intact blob (``fs/seal.py``).

        Best effort: a blob owned by another user cannot be touched, which only
        makes it look older to ``prune``.
        """
        path = self._file(digest)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is None or not self._record_use(path, st, is_sealed(st)):
            raise NotFoundError(f"{digest} is not in the cache at {self.root}")

    @staticmethod
    def _record_use(path: str | os.PathLike[str], st: os.stat_result, verified: bool) -> bool:
        """``touch`` by path, ``st`` its ``lstat``; ``False`` if the blob is gone. Only a
        ``verified`` blob (sealed, or just re-hashed) is sealed: a broken seal stays broken."""
        try:
            if verified:
                seal(path, st)
            else:
                os.utime(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as e:
            log.debug("cannot record a use of %s: %s", path, e)
        return True

    def blobs(self) -> Iterator[tuple[Digest, os.stat_result]]:
        """Every blob file with a valid name under ``blobs/``, in no particular order;
        streamed (one directory entry at a time), so memory stays flat at any size."""
        self._check_layout_once()
        for alg in SUPPORTED_ALGORITHMS:
            for entry, st in scan_dir(self.blobs_dir / alg, CACHE_HINT):
                try:
                    digest = Digest.parse(f"{alg}:{entry.name}")
                except InvalidDigestError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield digest, st

    def hash_file(self, path: Path, algorithm: str) -> Digest:
        """Digest of a file's content (for verification; never used to name a file)."""
        with open(path, "rb", buffering=0) as f:
            return Digest.of_file(f, algorithm)[0]

    def set_aside(self, path: Path, expected: os.stat_result, reason: str) -> Path | None:
        """Move a bad file out of ``blobs/`` into ``quarantine/``; return where it went.

        Only the inode that was examined is moved: if a good blob was published
        at ``path`` in the meantime, it is put back. Layouts keep their links.
        """
        target = self.quarantine_dir / f"{path.parent.name}-{path.name}.{time.time_ns()}"
        try:
            self.real_dir(_QUARANTINE)
            os.rename(path, target)
        except OSError as e:
            log.warning("%s %s but cannot be moved aside: %s", path, reason, e)
            return None
        moved = os.lstat(target)
        if (moved.st_dev, moved.st_ino) != (expected.st_dev, expected.st_ino):
            try:  # raced with a fresh publish: restore it
                os.link(target, path)
            except FileExistsError:
                pass
            os.unlink(target)
            return None
        log.warning("%s %s; moved to %s", path, reason, target)
        return target

    # -- writing ---------------------------------------------------------------------

    def ingest(self, digest: Digest, size: int | None, source: BlobSource) -> IngestResult:
        """Make ``digest`` present, fetching it from ``source`` at most once per machine.

        Single-flight across processes (waits for another process fetching the
        same digest), resumes a partial left by a killed process, verifies size
        and digest before publishing. Raises ``DigestMismatchError`` /
        ``SizeMismatchError`` (nothing published), ``StorageError`` (disk full,
        not writable), ``LockTimeoutError``, ``UnsupportedAlgorithmError``, or
        whatever the source raises (a resumable partial is kept, unless the source
        raised ``InvalidInputError``: its bytes are not to be continued).
        """
        result = self._ingest(digest, size, source, wait=True)
        assert result is not None  # only an ingest that does not wait gives up
        return result

    def try_ingest(
        self, digest: Digest, size: int | None, source: BlobSource
    ) -> IngestResult | None:
        """``ingest``, unless another process is fetching ``digest`` right now: then
        ``None`` at once, without waiting and without calling ``source``.

        For schedulers that have just looked for the blob (so this goes straight
        for the lock, under which a copy published meanwhile is still found): do
        the blobs nobody else is fetching first, then ``ingest`` the deferred ones.
        """
        return self._ingest(digest, size, source, wait=False)

    def _ingest(
        self, digest: Digest, size: int | None, source: BlobSource, *, wait: bool
    ) -> IngestResult | None:
        final = self.path(digest)
        if size is not None and size < 0:
            raise InvalidInputError(f"{digest}: size must not be negative, got {size}")
        while True:
            if wait:  # also after a wait that ended with the blob published
                hit = self.hit(digest, size)
                if hit is not None:
                    return hit
            self._prepare()
            published = functools.partial(self._published, final, size)
            with self._digest_lock(digest, until=published, wait=wait) as held:
                if held:
                    return self._ingest_locked(digest, size, source, final)
            if not wait:
                log.debug("%s is being fetched by another process; deferring it", digest)
                return None

    def ingest_stream(self, digest: Digest, size: int | None, stream: IO[bytes]) -> IngestResult:
        """Ingest from a file-like object; a seekable one can resume, others restart from 0."""
        return self.ingest(digest, size, stream_source(digest, stream))

    def ingest_bytes(self, digest: Digest, data: bytes) -> IngestResult:
        """Ingest an in-memory blob (manifests, configs)."""
        return self.ingest(digest, len(data), lambda offset: (offset, (data[offset:],)))

    def _digest_lock(
        self, digest: Digest, until: Callable[[], bool] | None = None, *, wait: bool = True
    ) -> AbstractContextManager[bool]:
        """Hold ``digest``'s single-flight lock (see ``lock_at``)."""
        return self.lock_at(self.lock_path(digest), str(digest), until, wait=wait)

    @contextmanager
    def lock_at(
        self,
        path: Path,
        what: str,
        until: Callable[[], bool] | None = None,
        *,
        wait: bool = True,
    ) -> Iterator[bool]:
        """Hold the lock file ``path`` under ``locks/`` (yields ``True``), waiting visibly
        up to ``lock_timeout()``. Yields ``False``, holding nothing, once ``until()`` is
        true, or at once if another process holds it and not ``wait``. Where locks are
        trusted the file is unlinked while held, so ``locks/`` stays small."""
        lock = FileLock(path)
        lockable = True
        try:
            if wait:
                held = acquire_visibly(lock, what, path, log, until=until)
            else:
                held = lock.try_acquire()
        except LockTimeoutError:  # a TimeoutError, hence an OSError: not a storage problem
            raise
        except OSError as e:
            if not cannot_lock_here(e):
                raise storage_error(e, "lock", path, _cache_hint(e)) from e
            self._distrust_locks(e)
            lockable = False
        if not lockable:  # yielded outside the handler, so the body's errors do not chain to it
            unlink_quietly(path)
            yield True  # nothing to hold: writer-unique temp files keep the cache whole
            return
        if not held:
            yield False
            return
        try:
            yield True
        finally:
            if self.locks_trusted:
                # Unlink while held: flock waiters that locked the old inode see
                # st_nlink == 0 and retry (see FileLock), so locks/ stays small.
                unlink_quietly(path)
            lock.release()

    def _distrust_locks(self, e: OSError) -> None:
        """The filesystem refused ``flock``: carry on as where locks cannot be trusted."""
        if self._trust_locks is not False:
            log.warning(
                "cache %s: this filesystem cannot lock files (%s); continuing without "
                "single flight, so concurrent pulls may fetch a blob more than once",
                self.root,
                e.strerror or e,
            )
        self._trust_locks = False

    @staticmethod
    def _published(final: Path, size: int | None) -> bool:
        """Whether a regular file of ``size`` (if known) is at ``final``: one ``lstat``."""
        try:
            st = os.lstat(final)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size)

    def _ingest_locked(
        self, digest: Digest, size: int | None, source: BlobSource, final: Path
    ) -> IngestResult:
        """Fetch and publish ``digest`` under its lock (present by now: a hit, no fetch)."""
        hit = self.hit(digest, size)
        if hit is not None:
            return hit
        resumable = self.locks_trusted
        try:
            if resumable:
                work = self.partial_path(digest)
                fd = open_partial(work)
            else:
                prefix = f"{self._ingest_name(digest)}."
                fd, name = tempfile.mkstemp(dir=self.ingest_dir, prefix=prefix, suffix=".tmp")
                work = Path(name)
        except OSError as e:
            raise storage_error(e, "create a file in", self.ingest_dir, _cache_hint(e)) from e
        sink = IngestFile(fd, work, digest, size)
        discard = True
        try:
            transferred, resumed_from, restarted = fill(
                sink, source, lambda e: storage_error(e, "write", sink.path, _cache_hint(e))
            )
            self._publish(sink, final)
            discard = False  # published, and the ingest file's name is gone already
            return IngestResult(
                digest, sink.size, final, True, transferred, resumed_from, restarted
            )
        except (IntegrityError, StorageError, InvalidInputError):
            raise  # bytes that failed, or a source that is not to be trusted: not resumed
        except BaseException:
            if resumable:  # keep what arrived for the next holder of the lock
                try:
                    sink.flush()
                    discard = False
                except OSError:
                    pass
            raise
        finally:
            os.close(fd)
            if discard:
                unlink_quietly(work)

    def _alg_dir(self, final: Path) -> Path:
        """``final``'s ``blobs/<alg>`` directory, created on first use. One ``Path`` per
        directory, found by string: building and hashing a new one per blob showed up
        in profiles of many-blob pulls."""
        key = os.path.dirname(final)
        parent = self._alg_dirs.get(key)
        if parent is None:
            parent = self.real_dir(f"blobs/{final.parent.name}")
            self._alg_dirs[key] = parent  # never removed: no need to look again
        return parent

    def _publish(self, sink: IngestFile, final: Path) -> None:
        """Make the verified ingest file visible as ``final``: link, never replace."""
        try:
            sink.flush()
            os.fchmod(sink.fd, 0o444)
            seal(sink.fd, os.fstat(sink.fd))  # just verified; "last used" starts now
            os.fsync(sink.fd)
            parent = self._alg_dir(final)
            try:
                os.link(sink.path, final)
            except FileExistsError:
                log.debug("%s was published by another process first", sink.digest)
                with contextlib.suppress(OSError):  # we hand out that inode, as a hit would
                    st = os.lstat(final)
                    self._record_use(final, st, is_sealed(st))
            except OSError as e:
                if e.errno not in _NO_HARDLINKS:
                    raise
                # No hard links here: rename, but still never over an existing blob.
                if not os.path.lexists(final):
                    os.rename(sink.path, final)
                    self._unsynced.add(parent)
            else:
                self._unsynced.add(parent)
            unlink_quietly(sink.path)
        except OSError as e:
            raise storage_error(e, "publish", final, _cache_hint(e)) from e

    # -- durability --------------------------------------------------------------------

    @property
    def unsynced_dirs(self) -> frozenset[Path]:
        """Directories where this object published blobs whose names are not yet durable."""
        return self._unsynced.pending

    def sync(self) -> None:
        """Make the name of every blob this object has published durable: fsync each
        directory with new entries, once. Call it before writing anything that names
        those blobs (see "Durability" above); thread-safe, cheap when nothing is pending."""
        self._unsynced.sync(CACHE_HINT)

"""``OCILayout``: a project's standard OCI image layout, with blobs linked out of the cache.

A layout is ``oci-layout`` + ``index.json`` + ``blobs/<alg>/<encoded>``, readable
by skopeo, umoci, oras, crane and podman. ``index.json`` holds the refs: one
descriptor per name, the name recorded as ``org.opencontainers.image.ref.name``
(and, for full references, ``io.containerd.image.name``). Blobs enter only
through the shared cache and ``linking`` (reflink, hardlink or copy).

``index.json`` changes are transactions: under the lock file ``index.json.lock``
(an OS ``flock``) the index is re-read, changed, written to a temp file,
fsynced, ``os.replace``d and the directory fsynced, so writers in many
processes all land and readers only ever see a whole file. The empty lock file
stays; other tools ignore it as an unknown file. ``index.json`` is the
completion marker: a ref is added only after the blob it names is in place.

Ref names: ``tag`` records the name it is given (callers pass the full
normalised reference); ``resolve`` and ``untag`` find an entry by either
annotation, or by a bare tag (``1.2.3``) when exactly one full name has it,
and layouts written by skopeo/umoci (``ref.name`` = the tag only) just work.

Names inside the layout (``index.json``, ``oci-layout``, ``blobs``,
``blobs/<alg>``) are checked with ``lstat`` and opened with ``O_NOFOLLOW``: a
symlink planted there is refused, never read or written through.
``verify`` and ``gc`` live in ``layout_check``, safe file access in ``layout_files``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, TypeVar, cast

from hybridstore.errors import (
    ConflictError,
    CorruptionError,
    HybridstoreError,
    InvalidDigestError,
    InvalidDocumentError,
    InvalidInputError,
    LockTimeoutError,
    NotFoundError,
    StorageError,
)
from hybridstore.fs.files import fsync_dir, storage_error
from hybridstore.fs.locking import FileLock, acquire_visibly, cannot_lock_here
from hybridstore.fs.seal import is_sealed, seal
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.jsondoc import load_json
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import (
    ANNOTATION_REF_NAME,
    Descriptor,
    Index,
    Manifest,
    parse_document,
)
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout_files import (
    BLOBS_DIR,
    INDEX_FILE,
    INDEX_LOCK_FILE,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    check_index,
    check_layout_version,
    read_file,
    read_layout_file,
    refuse_foreign_dir,
    refuse_symlink,
    write_atomic,
)
from hybridstore.store.layout_refs import (
    IndexEntry,
    check_name,
    find_entries,
    named_descriptor,
    one_descriptor,
)
from hybridstore.store.layout_registry import LayoutRegistry
from hybridstore.store.linking import Linker, LinkMode

__all__ = ["OCILayout"]

log = logging.getLogger(__name__)

# flock is polled (non-blocking tries) so the wait can time out; index.json
# transactions take ~2 ms, so a short poll keeps hand-over between writers quick.
_LOCK_POLL: Final = 0.005


_T = TypeVar("_T")


# --- the layout -----------------------------------------------------------------------------


class OCILayout:
    """An OCI image layout directory; implements the readable, writable and taggable storage.

    Open with ``OCILayout.open`` (must exist), ``OCILayout.create`` /
    ``OCILayout.open_or_create``. ``cache`` is the shared ``BlobCache`` that
    ``push`` and ``add_blob_from_cache`` link from (the default cache when
    omitted); ``link_mode`` is a ``LinkMode`` (default: ``$HYBRIDSTORE_LINK_MODE``,
    else ``auto``), decided once for this layout and cache. The first blob linked
    from the cache records the layout in the cache's layout registry, unless
    ``known=False`` (a throw-away staging layout).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        cache: BlobCache | None = None,
        link_mode: LinkMode | str | None = None,
        create: bool = False,
        known: bool = True,
        init: bool = False,
    ) -> None:
        self.root = Path(root)
        self._cache = cache
        self._unrecorded = known  # recorded in the cache's layout registry on first link
        self.linker = Linker(link_mode, sync_dirs=False)  # see _write_index
        self._thread_lock = threading.RLock()
        self._blobs = os.path.join(self.root, BLOBS_DIR)  # str: per-blob paths skip pathlib
        self._alg_dirs: set[str] = set()  # algorithms whose blobs/<alg> is a real directory
        if create:
            self._initialize(init)
        self._check_layout()

    @classmethod
    def open(cls, root: str | os.PathLike[str], **kwargs: Any) -> OCILayout:
        """An existing layout; ``NotFoundError`` when ``root`` is not one."""
        return cls(root, create=False, **kwargs)

    @classmethod
    def create(cls, root: str | os.PathLike[str], **kwargs: Any) -> OCILayout:
        """Create (or open) a layout at ``root``, making the directory if needed.

        A non-empty directory that is not a layout is refused (``ConflictError``) unless
        ``init=True`` adopts it deliberately: a typo in ``--layout`` must not mix a
        project's own files with ``blobs/`` and ``index.json``."""
        return cls(root, create=True, **kwargs)

    open_or_create = create

    def __repr__(self) -> str:
        return f"OCILayout({str(self.root)!r})"

    # -- files -------------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    @property
    def layout_path(self) -> Path:
        return self.root / LAYOUT_FILE

    @property
    def blobs_path(self) -> Path:
        return self.root / BLOBS_DIR

    @property
    def cache(self) -> BlobCache:
        """The shared cache blobs come from (the default cache unless one was given)."""
        if self._cache is None:
            self._cache = BlobCache()
        return self._cache

    def _initialize(self, init: bool) -> None:
        if not init and refuse_symlink(self.layout_path, LAYOUT_FILE) is None:
            refuse_foreign_dir(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create layout directory {self.root}: {e.strerror}") from e
        with self.locked():
            if refuse_symlink(self.layout_path, LAYOUT_FILE) is None:
                header = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()
                write_atomic(self.layout_path, header, LAYOUT_FILE, replace=False)
            self._blob_root()
            if refuse_symlink(self.index_path, INDEX_FILE) is None:
                empty = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
                self._write_index(empty, replace=False)

    def _check_layout(self) -> None:
        if refuse_symlink(self.layout_path, LAYOUT_FILE) is None:
            raise NotFoundError(
                f"{self.root} is not an OCI layout (no {LAYOUT_FILE} file): check the path, "
                "or pull, copy or import into it first"
            )
        check_layout_version(read_layout_file(self.layout_path, LAYOUT_FILE), self.layout_path)
        refuse_symlink(self.index_path, INDEX_FILE)
        refuse_symlink(self.blobs_path, BLOBS_DIR)

    def _blob_root(self, algorithm: str | None = None) -> Path:
        """``blobs/`` (or ``blobs/<alg>``), created if missing, refused if a symlink."""
        path = self.blobs_path
        parts = [(path, BLOBS_DIR)]
        if algorithm is not None:
            path = path / algorithm
            parts.append((path, f"{BLOBS_DIR}/{algorithm}"))
        for p, what in parts:
            st = refuse_symlink(p, what)
            if st is None:
                try:
                    p.mkdir(exist_ok=True)
                except OSError as e:
                    raise StorageError(f"cannot create {p}: {e.strerror}") from e
                fsync_dir(p.parent)
                st = refuse_symlink(p, what)
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise CorruptionError(f"{p} is not a directory; the layout is damaged")
        if algorithm is not None:
            self._alg_dirs.add(algorithm)
        return path

    def blob_path(self, digest: Digest) -> Path:
        """Where ``digest`` lives in this layout (the only digest-to-path route)."""
        alg, enc = digest.path_components()
        return self.blobs_path / alg / enc

    # -- index.json --------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``index.json``'s lock (one process and thread at a time); gc holds it too."""
        lock_path = self.root / INDEX_LOCK_FILE
        refuse_symlink(lock_path, INDEX_LOCK_FILE)
        with self._thread_lock:
            lock = FileLock(lock_path)
            try:
                what = f"{INDEX_FILE} of {self.root}"
                acquire_visibly(lock, what, lock_path, log, max_poll=_LOCK_POLL)
            except LockTimeoutError:  # a TimeoutError, hence an OSError: not a storage problem
                raise
            except OSError as e:
                if not cannot_lock_here(e):
                    raise StorageError(f"cannot lock {lock_path}: {e.strerror or e}") from e
                # Still atomic (temp file and rename); only concurrent taggers can race.
                log.warning(
                    "%s: this filesystem cannot lock files (%s); another process tagging "
                    "into this layout at the same time could undo this change",
                    self.root,
                    e.strerror or e,
                )
            try:
                yield
            finally:
                lock.release()

    def _read_index(self) -> tuple[dict[str, Any], list[IndexEntry]]:
        doc = check_index(read_layout_file(self.index_path, INDEX_FILE), self.index_path)
        entries = []
        for i, item in enumerate(doc["manifests"]):
            desc = Descriptor.from_json(item, f"{INDEX_FILE} manifests[{i}]")
            entries.append(IndexEntry(item, desc))
        return doc, entries

    def _write_index(self, doc: dict[str, Any], *, replace: bool = True) -> None:
        # index.json is the completion marker: the names of every blob it may
        # reference (linked by this or another process) are made durable first,
        # one fsync per blobs/<alg> directory rather than one per blob. The cache
        # entries they were linked from are synced too, though the layout does not
        # need them (see "Durability" in cache.py): a finished pull leaves a warm cache.
        self._sync_blob_dirs()
        if self._cache is not None:
            self._cache.sync()
        data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        write_atomic(self.index_path, data, INDEX_FILE, replace=replace)

    def _sync_blob_dirs(self) -> None:
        try:
            algs = [e for e in os.scandir(self.blobs_path) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return
        except OSError as e:
            raise storage_error(e, "read", self.blobs_path) from e
        for entry in algs:
            try:
                fsync_dir(Path(entry.path))
            except OSError as e:
                raise storage_error(e, "sync", entry.path) from e

    def _update_index(self, change: Callable[[list[IndexEntry]], _T]) -> _T:
        """Run ``change`` on the entries under the lock; write them back if it changed any."""
        with self.locked():
            doc, entries = self._read_index()
            before = [e.raw for e in entries]
            result = change(entries)
            after = [e.raw for e in entries]
            if after != before:
                doc["manifests"] = after
                self._write_index(doc)
            return result

    def entries(self) -> list[Descriptor]:
        """Every descriptor in ``index.json``, named or not, in order."""
        return [e.desc for e in self._read_index()[1]]

    def refs(self) -> dict[str, Descriptor]:
        """Name -> descriptor for every named entry (the fullest name of each)."""
        return {e.name: e.desc for e in self._read_index()[1] if e.name}

    def resolve(self, ref: str) -> Descriptor:
        """The descriptor ``ref`` names: a full name, an unambiguous tag, or a digest."""
        entries = self._read_index()[1]
        idx = find_entries(entries, ref)
        if idx:
            return one_descriptor(entries, idx, ref)
        with contextlib.suppress(InvalidDigestError):
            return self._resolve_digest(Digest.parse(ref), entries)
        known = ", ".join(sorted(e.name for e in entries if e.name)[:10]) or "none"
        raise NotFoundError(f"no ref {ref!r} in layout {self.root} (refs: {known})")

    def _resolve_digest(self, digest: Digest, entries: list[IndexEntry]) -> Descriptor:
        for e in reversed(entries):
            if e.desc.digest == digest:
                return e.desc
        path = self.blob_path(digest)
        st = refuse_symlink(path, "blob")
        if st is None:
            raise NotFoundError(f"no blob {digest} in layout {self.root}")
        raw = read_file(path, "blob", MAX_DOCUMENT_BYTES)
        try:
            obj = load_json(raw, what=f"blob {digest}")
        except InvalidDocumentError:
            obj = None
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{digest} is not a manifest or index; only those are tagged")
        media_type = obj.get("mediaType")
        if not isinstance(media_type, str):
            media_type = mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
        doc = parse_document(raw, media_type)
        return Descriptor(media_type, digest, len(raw), artifact_type=doc.artifact_type)

    def tag(self, desc: Descriptor, ref: str) -> None:
        """Point ``ref`` at ``desc`` (replacing any entry of that name); its blob must be here."""
        self.tag_many([(desc, ref)])

    def tag_many(
        self,
        items: Iterable[tuple[Descriptor, str]],
        *,
        replace: bool = True,
        untag: Iterable[tuple[Descriptor, str]] = (),
    ) -> None:
        """Tag several refs in one ``index.json`` transaction.

        With ``replace=False`` a name that already points at another digest is a
        ``ConflictError`` (checked under the lock, so nothing is tagged). ``untag``:
        names removed in the same transaction, each only while it still points at
        the given descriptor's digest (``sync`` removing refs it created).
        """
        named = [named_descriptor(desc, check_name(name)) for desc, name in items]
        dropped = [(desc.digest, name) for desc, name in untag]

        def change(entries: list[IndexEntry]) -> None:
            for digest, name in dropped:
                entries[:] = [e for e in entries if name not in e.names or e.desc.digest != digest]
            for new in named:  # checked under the lock, so a concurrent gc cannot interleave
                if not self.exists(new):
                    raise NotFoundError(
                        f"cannot tag {new.ref_name!r}: {new.digest} ({new.size} bytes) is not "
                        f"in layout {self.root}; add its content first"
                    )
                name = new.annotations[ANNOTATION_REF_NAME]
                clash = [e for e in entries if name in e.names and e.desc.digest != new.digest]
                if clash and not replace:
                    raise ConflictError(
                        f"layout {self.root} already has {name!r} -> {clash[0].desc.digest}; "
                        "pass --overwrite to replace it (nothing was tagged)"
                    )
                entries[:] = [e for e in entries if name not in e.names]
                entries.append(IndexEntry(new.to_json(), new))

        self._update_index(change)

    def untag(self, ref: str) -> Descriptor:
        """Remove the entry (entries) ``ref`` names; returns what it pointed to."""

        def change(entries: list[IndexEntry]) -> Descriptor:
            idx = find_entries(entries, ref)
            if not idx:
                raise NotFoundError(f"no ref {ref!r} in layout {self.root}")
            removed = entries[idx[-1]].desc
            drop = set(idx)
            entries[:] = [e for i, e in enumerate(entries) if i not in drop]
            return removed

        return self._update_index(change)

    # -- blobs (storage interface) -----------------------------------------------------------

    def _blob_stat(self, digest: Digest) -> os.stat_result | None:
        """``lstat`` of the blob file when it is a regular file (a symlink does not count)."""
        try:
            alg, enc = digest.path_components()
        except HybridstoreError:
            return None
        return self._file_stat(alg, enc)

    def _file_stat(self, alg: str, enc: str) -> os.stat_result | None:
        if alg not in self._alg_dirs:  # checked once per layout object; gc never removes it
            st = refuse_symlink(self.blobs_path / alg, f"{BLOBS_DIR}/{alg}")
            if st is None or not stat.S_ISDIR(st.st_mode):
                return None
            self._alg_dirs.add(alg)
        try:
            st = os.lstat(f"{self._blobs}/{alg}/{enc}")
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def exists(self, desc: Descriptor) -> bool:
        """Whether the blob is here as a regular file of the right size."""
        st = self._blob_stat(desc.digest)
        return st is not None and st.st_size == desc.size

    def fetch(self, desc: Descriptor) -> AbstractContextManager[IO[bytes]]:
        """Open the blob for reading (size checked; digest checked by whoever consumes it)."""
        path = self.blob_path(desc.digest)
        refuse_symlink(path.parent, f"{BLOBS_DIR}/{desc.digest.algorithm}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"blob {desc.digest} is not in layout {self.root}") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                refuse_symlink(path, "blob")
            raise StorageError(f"cannot read {path}: {e.strerror}") from e
        f = open(fd, "rb")
        size = os.fstat(fd).st_size
        if size != desc.size:
            f.close()
            raise CorruptionError(
                f"blob {desc.digest} in {self.root} has {size} bytes, expected {desc.size}; "
                "run `hybridstore layout verify` and pull it again"
            )
        return f

    def read_blob(self, desc: Descriptor, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
        """A small blob's bytes, digest-verified (for manifests and configs)."""
        if desc.size > limit:
            raise InvalidDocumentError(f"{desc.digest} is {desc.size} bytes, over {limit}")
        with self.fetch(desc) as f:
            data = f.read(desc.size + 1)
        if Digest.of_bytes(data, desc.digest.algorithm) != desc.digest:
            raise CorruptionError(f"blob {desc.digest} in {self.root} does not match its digest")
        return data

    def push(self, desc: Descriptor, stream: IO[bytes]) -> None:
        """Verify ``stream`` into the shared cache, then link it into this layout."""
        if self.exists(desc):
            return
        self.cache.ingest_stream(desc.digest, desc.size, cast(BinaryIO, stream))
        self.add_blob_from_cache(desc.digest, desc.size)

    def push_bytes(self, desc: Descriptor, data: bytes) -> None:
        """``push`` for content already in memory (manifests, configs)."""
        if self.exists(desc):
            return
        if len(data) != desc.size:
            raise InvalidInputError(f"{desc.digest}: {len(data)} bytes given, {desc.size} expected")
        self.cache.ingest_bytes(desc.digest, data)
        self.add_blob_from_cache(desc.digest, desc.size)

    def holds(self, desc: Descriptor, *, rehash: bool = False) -> bool:
        """Whether the blob is here and still as verified: the right size, and sealed
        (``fs/seal.py``) or, when not or with ``rehash``, hashing to its digest (then
        sealed, so the next check is free). A file of the wrong size or content is
        removed, so the caller links a good copy in its place."""
        st = self._blob_stat(desc.digest)
        if st is None:
            return False
        if st.st_size == desc.size and (
            not desc.digest.verifiable or (is_sealed(st) and not rehash)
        ):
            return True
        path = self.blob_path(desc.digest)
        why = f"it has {st.st_size} bytes, not {desc.size}"
        if st.st_size == desc.size:
            try:
                with open(path, "rb", buffering=0) as f:
                    actual = Digest.of_file(f, desc.digest.algorithm)[0]
            except FileNotFoundError:
                return False
            except OSError as e:
                raise storage_error(e, "read", path) from e
            if actual == desc.digest:
                with contextlib.suppress(OSError):
                    seal(path, st, keep_time=True)
                return True
            why = f"its content hashes to {actual}"
        log.warning("replacing %s in %s: %s", desc.digest, self.root, why)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise storage_error(e, "remove", path) from e
        return False

    def add_blob_from_cache(
        self, digest: Digest, size: int, *, rehash: bool = False
    ) -> LinkMode | None:
        """Link (or clone, or copy) a cache blob into the layout.

        Returns the mode used, or ``None`` when the layout already held the blob.
        A blob of the wrong size already here is replaced. The cache blob is
        re-hashed first if its seal is broken, or always with ``rehash``.
        """
        cache = self.cache
        hit = cache.hit(digest, size, rehash=rehash)
        if hit is None:
            raise NotFoundError(f"blob {digest} ({size} bytes) is not in the cache {cache.root}")
        return self.link_blob(hit.path, digest, size)

    def link_blob(self, src: Path, digest: Digest, size: int) -> LinkMode | None:
        """``add_blob_from_cache`` for a caller that has just found the cache file ``src``
        (``BlobCache.hit``): ``NotFoundError`` if it has vanished since (pruned)."""
        alg, enc = digest.path_components()
        if alg not in self._alg_dirs:
            self._blob_root(alg)
        self.record_use()
        dst = Path(f"{self._blobs}/{alg}/{enc}")
        mode = self.linker.materialize(src, dst)  # a free name (the usual case): no lstat first
        if mode is not None:
            return mode
        st = self._file_stat(alg, enc)  # a file was there: is it whole?
        if st is not None and st.st_size == size:
            return None
        if st is not None:
            log.warning("replacing %s in %s: it has the wrong size", digest, self.root)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dst)
        return self.linker.materialize(src, dst)

    def record_use(self) -> None:
        """Record this layout in its cache's layout registry, once per object: on the
        first blob linked, and when a pull names content that was all present already
        (so its "last used" moves). A cache that cannot take the record only warns:
        the layout itself is complete."""
        if not self._unrecorded:
            return
        self._unrecorded = False
        try:
            LayoutRegistry(self.cache.root).record(self.root)
        except (OSError, HybridstoreError) as e:
            log.warning("cannot record %s in the cache's layout registry: %s", self.root, e)

    # -- graph -------------------------------------------------------------------------------

    def document(self, desc: Descriptor) -> Manifest | Index | None:
        """The parsed manifest/index ``desc`` names, if present, known and valid."""
        if not (mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type)):
            return None
        if not self.exists(desc) or desc.size > MAX_DOCUMENT_BYTES:
            return None
        try:
            return parse_document(self.read_blob(desc), desc.media_type)
        except HybridstoreError as e:
            log.debug("not following %s: %s", desc.digest, e)
            return None

    def blob_files(self) -> Iterator[tuple[Path, Digest | None]]:
        """Every file under ``blobs/<alg>/``, with its digest when the name is one."""
        if refuse_symlink(self.blobs_path, BLOBS_DIR) is None:
            return
        for alg_entry in sorted(os.scandir(self.blobs_path), key=lambda e: e.name):
            if not alg_entry.is_dir(follow_symlinks=False):
                yield Path(alg_entry.path), None
                continue
            for f in sorted(os.scandir(alg_entry.path), key=lambda e: e.name):
                try:
                    digest: Digest | None = Digest.parse(f"{alg_entry.name}:{f.name}")
                except InvalidDigestError:
                    digest = None
                yield Path(f.path), digest

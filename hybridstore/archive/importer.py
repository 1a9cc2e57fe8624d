"""Import an OCI layout tar (as ``hybridstore export`` or skopeo writes it) into a layout.

**Import** never extracts anything. ``archive.tar.TarReader`` walks the headers
and accepts only regular files and directories with plain relative names, no
duplicates, within caps on entries and bytes; here only allow-listed members
are accepted (``oci-layout``, ``index.json``, ``blobs/``, ``blobs/<alg>/``,
``blobs/<alg>/<encoded>``; ``manifest.json`` and ``repositories`` are skipped)
and the JSON files are read with byte caps. Each blob streams through
``BlobCache.ingest``, which hashes while writing and publishes nothing that does
not match its name. Only after the end of the archive, once the graph reachable
from the imported refs is complete in the cache, are the blobs linked into the
layout and the refs tagged, in one ``index.json`` transaction. A conflict with
an existing ref is detected as soon as ``index.json`` is read when it comes
first, so a doomed import does not stream gigabytes first.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hybridstore.archive.tar import (
    Compression,
    Member,
    Readable,
    TarReader,
    TarSource,
    quoted,
)
from hybridstore.errors import (
    ConflictError,
    HybridstoreError,
    IntegrityError,
    InvalidArchiveError,
    InvalidDigestError,
    InvalidDocumentError,
    InvalidInputError,
    NotFoundError,
)
from hybridstore.fs.files import storage_error
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.graph import complete_graph
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES, MAX_INDEX_BYTES, MAX_LAYOUT_FILE_BYTES
from hybridstore.oci.model import Descriptor, Index, parse_document
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_dirs import removed_if_failed
from hybridstore.store.layout_files import check_layout_version
from hybridstore.store.layout_refs import names_of
from hybridstore.store.linking import LinkMode

__all__ = ["ImportLimits", "ImportResult", "import_archive"]

log = logging.getLogger("hybridstore.archive.export")

_IGNORED_FILES: Final = frozenset({"manifest.json", "repositories"})
_ALGORITHM: Final = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*", re.ASCII)


@dataclass(frozen=True)
class ImportLimits:
    """Caps that keep a hostile archive from exhausting memory, disk or time."""

    max_entries: int = 100_000  # tar headers, pax records included
    max_size: int = 256 << 30  # uncompressed tar bytes
    max_ratio: int = 100  # a compressed archive expands at most this much (+ RATIO_SLACK)
    max_index_bytes: int = MAX_INDEX_BYTES  # index.json (the layout's own cap)


@dataclass
class ImportResult:
    refs: list[tuple[str, Descriptor]] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # refs that pointed elsewhere before
    skipped: list[str] = field(default_factory=list)  # digests of unnamed index.json entries
    compression: Compression = "none"
    entries: int = 0
    tar_bytes: int = 0
    blobs_ingested: int = 0  # new in the cache
    blobs_present: int = 0  # already in the cache: the archive's copy was skipped
    blobs_unlisted: int = 0  # after index.json, listed by no descriptor: skipped unwritten
    bytes_ingested: int = 0
    link_modes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "refs": [{"name": n, "digest": str(d.digest)} for n, d in self.refs],
            "replaced": self.replaced,
            "skipped": self.skipped,
            "compression": self.compression,
            "entries": self.entries,
            "tarBytes": self.tar_bytes,
            "blobsIngested": self.blobs_ingested,
            "blobsPresent": self.blobs_present,
            "blobsUnlisted": self.blobs_unlisted,
            "bytesIngested": self.bytes_ingested,
            "linkModes": self.link_modes,
        }


# --- import: what the members mean -----------------------------------------------------------


def _blob_digest(name: str) -> Digest:
    """The digest a ``blobs/<alg>/<encoded>`` member name stands for."""
    _, alg, enc = name.split("/")
    try:
        digest = Digest.parse(f"{alg}:{enc}")
    except InvalidDigestError:
        raise InvalidArchiveError(
            f"archive entry {quoted(name)} is not named by a valid digest; refusing it"
        ) from None
    digest.require_verifiable()
    return digest


def _role(member: Member) -> str:
    """What an allow-listed member is: ``dir``, ``layout``, ``index``, ``ignored``, ``blob``."""
    name, parts = member.name, member.name.split("/")
    if member.is_dir:
        if name in ("", "blobs") or (
            len(parts) == 2 and parts[0] == "blobs" and _ALGORITHM.fullmatch(parts[1])
        ):
            return "dir"
    elif name == "oci-layout":
        return "layout"
    elif name == "index.json":
        return "index"
    elif name in _IGNORED_FILES:
        return "ignored"
    elif len(parts) == 3 and parts[0] == "blobs":
        return "blob"
    kind = "directory" if member.is_dir else "file"
    raise InvalidArchiveError(
        f"archive entry {quoted(name)} ({kind}) is not part of an OCI layout (allowed: oci-layout, "
        "index.json, blobs/<alg>/<encoded>, manifest.json, repositories); refusing it"
    )


def _check_layout_file(data: bytes) -> None:
    try:
        check_layout_version(data, "the archive's oci-layout file")
    except InvalidDocumentError as e:
        raise InvalidArchiveError(str(e)) from None


def _parse_index(data: bytes) -> Index:
    try:
        doc = parse_document(data, mt.OCI_INDEX)
    except InvalidInputError as e:
        raise InvalidArchiveError(f"the archive's index.json is not an image index: {e}") from None
    assert isinstance(doc, Index)
    return doc


def _check_size(member: Member, cap: int, hint: str = "") -> None:
    if member.size > cap:
        raise InvalidArchiveError(
            f"the archive's {member.name} is {member.size} bytes, over the {cap}-byte limit{hint}"
        )


def _read_bounded(reader: TarReader, member: Member, cap: int, hint: str = "") -> bytes:
    _check_size(member, cap, hint)
    return reader.read_member()


def _roots(index: Index, ref_name: str | None) -> tuple[list[tuple[str, Descriptor]], list[str]]:
    """The refs an archive's index.json names, sorted; and the digests of unnamed entries."""
    entries = list(index.manifests)
    if ref_name is not None:
        if len(entries) != 1:
            raise InvalidInputError(
                f"--ref-name needs an archive with exactly one index.json entry; this one "
                f"has {len(entries)}"
            )
        return [(ref_name, entries[0])], []
    chosen: dict[str, Descriptor] = {}
    skipped = []
    for desc in entries:
        names = names_of(desc)
        if not names:
            skipped.append(str(desc.digest))
            continue
        old = chosen.get(names[0])
        if old is not None and old.digest != desc.digest:
            raise InvalidArchiveError(
                f"the archive's index.json names {names[0]!r} twice, with different digests"
            )
        chosen[names[0]] = desc
    if not chosen:
        raise InvalidArchiveError(
            "the archive's index.json names no refs (skopeo writes none unless given "
            "oci-archive:FILE:NAME); pass --ref-name NAME to name its one entry"
        )
    return sorted(chosen.items(), key=lambda item: item[0]), skipped


class _Importer:
    """One import's stream pass: checks every member, ingests blobs, keeps the index."""

    def __init__(
        self,
        cache: BlobCache,
        limits: ImportLimits,
        result: ImportResult,
        on_index: Callable[[Index], None],
    ) -> None:
        self.cache = cache
        self.limits = limits
        self.result = result
        self.on_index = on_index
        self.layout_seen = False
        self.index: Index | None = None
        # Once index.json is known: every descriptor met so far (index.json's, then those
        # of each document ingested), so a blob entry is checked before it is written.
        self.declared: dict[Digest, Descriptor] | None = None
        self.unlisted: set[Digest] = set()

    def read(self, raw: Readable) -> None:
        source = TarSource(raw, self.limits.max_size, self.limits.max_ratio)
        self.result.compression = source.compression
        reader = TarReader(source, self.limits.max_entries)
        for member in reader:
            role = _role(member)
            if role == "layout":
                _check_layout_file(_read_bounded(reader, member, MAX_LAYOUT_FILE_BYTES))
                self.layout_seen = True
            elif role == "index":
                hint = " (raise it with --max-index-size if the archive is genuine)"
                self.index = _parse_index(
                    _read_bounded(reader, member, self.limits.max_index_bytes, hint)
                )
                self.declared = {}
                self._declare(self.index.manifests, "index.json")
                self.on_index(self.index)
            elif role == "blob":
                self._ingest(reader, member)
            elif role == "ignored":  # docker-load extras: size-checked, skipped unread
                _check_size(member, self.limits.max_index_bytes)
        self.result.entries = reader.entries
        self.result.tar_bytes = source.count
        if not self.layout_seen or self.index is None:
            missing = "oci-layout" if not self.layout_seen else "index.json"
            raise InvalidArchiveError(
                f"the archive is not an OCI layout (it has no {missing}); docker-save archives "
                "can be converted with `skopeo copy docker-archive:FILE oci-archive:OUT`"
            )

    def reread(self, raw: Readable) -> bool:
        """Another pass over a file archive for the blobs skipped because they came before
        the document listing them (a layout tarred in directory order); each is checked
        against its declared size as in the first pass. Whether any was ingested."""
        before = len(self.unlisted)
        reader = TarReader(TarSource(raw, self.limits.max_size, self.limits.max_ratio),
                           self.limits.max_entries)  # fmt: skip
        for member in reader:
            if _role(member) == "blob":
                digest = _blob_digest(member.name)
                if digest in self.unlisted and digest in (self.declared or {}):
                    self.unlisted.discard(digest)
                    self._ingest(reader, member)
        return len(self.unlisted) < before

    def _declare(self, descriptors: Iterable[Descriptor], where: str) -> None:
        assert self.declared is not None
        for desc in descriptors:
            known = self.declared.setdefault(desc.digest, desc)
            if known.size != desc.size:
                raise InvalidArchiveError(
                    f"the archive declares {desc.digest} as {known.size} and as {desc.size} "
                    f"bytes ({where}); refusing it"
                )

    def _admit(self, member: Member, digest: Digest) -> Descriptor | None:
        """The descriptor a blob entry is checked against once index.json is known;
        ``None`` to ingest unchecked (index.json comes last, as skopeo writes it)."""
        if self.declared is None:
            return None
        desc = self.declared.get(digest)
        if desc is not None and member.size != desc.size:
            raise InvalidArchiveError(
                f"archive entry {member.name} is {member.size} bytes, but its descriptor "
                f"declares {desc.size}; the archive is damaged or was tampered with"
            )
        return desc

    def _follow(self, desc: Descriptor) -> None:
        """After a document is in the cache: what it lists is declared too."""
        if not (mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type)):
            return
        try:
            doc = parse_document(self.read_document(desc), desc.media_type)
        except InvalidInputError:
            return  # reported by the graph check after the stream, naming the ref
        kids = list(doc.children())
        if doc.subject is not None:
            kids.append(doc.subject)
        self._declare(kids, str(desc.digest))

    def _ingest(self, reader: TarReader, member: Member) -> None:
        digest = _blob_digest(member.name)
        desc = self._admit(member, digest)
        if desc is None and self.declared is not None:
            log.debug("skipping %s: no descriptor before it lists it", member.name)
            self.unlisted.add(digest)
            return  # the reader skips its data unread
        calls = 0

        def source(offset: int) -> tuple[int, Iterable[bytes]]:
            nonlocal calls
            calls += 1
            if calls > 1:  # the cache restarts at most once, and never with a fresh source
                raise InvalidArchiveError(f"{member.name} cannot be read twice from a stream")
            return 0, reader.chunks()

        try:
            res = self.cache.ingest(digest, member.size, source)
        except IntegrityError as e:
            raise type(e)(
                f"archive entry {member.name}: {e}; the archive is damaged or was tampered "
                "with, nothing was imported"
            ) from None
        if res.fetched:
            self.result.blobs_ingested += 1
            self.result.bytes_ingested += res.bytes_transferred
        else:
            self.result.blobs_present += 1
        if desc is not None:
            self._follow(desc)

    def read_document(self, desc: Descriptor) -> bytes:
        if desc.size > MAX_DOCUMENT_BYTES:
            raise InvalidDocumentError(
                f"{desc.digest} is {desc.size} bytes, "
                f"over the {MAX_DOCUMENT_BYTES}-byte manifest limit"
            )
        with self.cache.open(desc.digest) as f:
            return f.read(desc.size + 1)

    def missing(self, ref: str, desc: Descriptor) -> HybridstoreError:
        if desc.digest in self.unlisted:
            return InvalidArchiveError(
                f"the archive holds {desc.digest}, needed by {ref}, before any document that "
                "lists it; a stream is read once, so after index.json every blob must follow "
                "the manifest that lists it (hybridstore export writes them so): import it "
                "from a file instead; nothing was imported"
            )
        return InvalidArchiveError(
            f"the archive is incomplete: {desc.digest} ({desc.media_type}, {desc.size} bytes), "
            f"needed by {ref}, is neither in it nor in the cache; nothing was imported"
        )


def _conflicts(
    layout: OCILayout, roots: Sequence[tuple[str, Descriptor]], overwrite: bool
) -> list[str]:
    """Names that already point elsewhere; ``ConflictError`` unless ``overwrite``."""
    replaced = []
    existing = layout.entries()
    for name, desc in roots:
        for old in existing:
            if name in names_of(old) and old.digest != desc.digest:
                if not overwrite:
                    raise ConflictError(
                        f"layout {layout.root} already has {name!r} -> {old.digest}, the archive "
                        f"has {desc.digest}; pass --overwrite to replace it (nothing was tagged)"
                    )
                replaced.append(name)
                break
    return replaced


def import_archive(
    source: Readable | str | os.PathLike[str],
    layout: OCILayout | str | os.PathLike[str],
    *,
    cache: BlobCache | str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    ref_name: str | None = None,
    link_mode: LinkMode | str | None = None,
    limits: ImportLimits | None = None,
    init: bool = False,
) -> ImportResult:
    """Import an OCI layout tar (plain, gzip or zstd) into ``layout`` through ``cache``.

    ``source`` is a path or a readable stream (read once, front to back).
    Refs keep their archive names (``ref_name`` names a single-entry archive's
    one ref instead); a ref that already points elsewhere is a
    ``ConflictError`` unless ``overwrite``. On any error nothing is tagged;
    blobs already verified stay in the cache (content-addressed, prunable), and a
    layout directory this call created is removed again. A non-empty directory that
    is not yet a layout is refused unless ``init``.
    """
    if isinstance(layout, OCILayout):
        return _import(source, layout, cache, overwrite, ref_name, limits)
    with removed_if_failed(layout):
        blob_cache = _as_cache(cache)
        target = OCILayout.open_or_create(layout, cache=blob_cache, link_mode=link_mode, init=init)
        return _import(source, target, blob_cache, overwrite, ref_name, limits)


def _import(
    source: Readable | str | os.PathLike[str],
    target: OCILayout,
    cache: BlobCache | str | os.PathLike[str] | None,
    overwrite: bool,
    ref_name: str | None,
    limits: ImportLimits | None,
) -> ImportResult:
    blob_cache = target.cache if cache is None else _as_cache(cache)
    result = ImportResult()

    def early_check(index: Index) -> None:  # a conflict fails before the blobs stream in
        try:
            roots = _roots(index, ref_name)[0]
        except InvalidInputError:
            return  # reported after the stream, with everything else that is wrong
        _conflicts(target, roots, overwrite)

    importer = _Importer(blob_cache, limits or ImportLimits(), result, early_check)
    if isinstance(source, (str, os.PathLike)):
        try:
            f = open(source, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFoundError(f"archive {os.fspath(source)} does not exist") from None
        except OSError as e:
            raise storage_error(e, "read", source) from e
        with f:
            importer.read(f)
            while importer.unlisted and f.seek(0) == 0 and importer.reread(f):
                pass
    else:
        importer.read(source)
    result.blobs_unlisted = len(importer.unlisted)

    assert importer.index is not None
    roots, result.skipped = _roots(importer.index, ref_name)
    for digest in result.skipped:
        log.warning("skipping the unnamed index.json entry %s", digest)
    blobs = complete_graph(
        roots,
        lambda d: blob_cache.exists(d.digest, d.size),
        importer.read_document,
        importer.missing,
    )
    result.replaced = _conflicts(target, roots, overwrite)
    for desc in blobs:
        mode = target.add_blob_from_cache(desc.digest, desc.size)
        key = mode.value if mode is not None else "present"
        result.link_modes[key] = result.link_modes.get(key, 0) + 1
    blob_cache.sync()  # the imported cache entries are durable before a ref names them
    target.tag_many(((desc, name) for name, desc in roots), replace=overwrite)
    result.refs = roots
    return result


def _as_cache(cache: BlobCache | str | os.PathLike[str] | None) -> BlobCache:
    return cache if isinstance(cache, BlobCache) else BlobCache(cache)

"""A cache-backed OCI layout as either end of a copy.

As a source, blobs are read from the layout's files (re-openable, so uploads
can replay them) and manifests are digest-verified on read. Referrers are found
the way both conventions store them: the ``<name>:sha256-<hex>`` tag-schema
index this code writes, and any ``index.json`` entry whose manifest has the
subject (oras-go's OCI store lists untagged manifests there).

As a destination, every blob enters through the shared cache (single flight,
verified) and is linked in; documents are linked children first, and the root
is tagged last: ``index.json`` is the completion marker, so an interrupted copy
leaves no ref pointing at an incomplete graph. A document with a ``subject``
is recorded in the subject's tag-schema index, which also keeps it reachable
for ``layout gc``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

from hybridstore.errors import InvalidReferenceError, NotFoundError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.convert import to_oci
from hybridstore.oci.digest import Digest
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Descriptor, Index, Manifest
from hybridstore.oci.referrers import (
    fallback_tag,
    filter_referrers,
    merge_fallback_index,
    referrer_descriptor,
    referrers_of_index,
)
from hybridstore.store.cache import CHUNK_SIZE, BlobSource
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_refs import names_of
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.endpoint import BlobOutcome, Opener, Progress, Source
from hybridstore.transfer.locator import explicit_reference

__all__ = ["LayoutSource", "LayoutDestination", "layout_referrers"]

log = logging.getLogger("hybridstore.transfer.engine")


class LayoutSource:
    """Reads from an OCI layout (any writer's: hybridstore, skopeo, umoci, oras)."""

    is_remote = False

    def __init__(self, layout: OCILayout, manifest_limit: int = MAX_DOCUMENT_BYTES) -> None:
        self.layout = layout
        self.manifest_limit = manifest_limit
        #: Where the last resolved ref was pulled from, by its recorded full name.
        self.mount_from: tuple[str, str] | None = None

    @property
    def description(self) -> str:
        return f"layout {self.layout.root}"

    def resolve(self, ref: str) -> Descriptor:
        desc = self.layout.resolve(ref)
        self.mount_from = self._origin(ref, desc)
        return desc

    def _origin(self, ref: str, desc: Descriptor) -> tuple[str, str] | None:
        """The registry and repository ``desc`` was pulled from, read off its full
        name in ``index.json`` (what pull records): a push back into that registry
        can mount the blobs instead of sending them."""
        named = [n for d in self.layout.entries() if d.digest == desc.digest for n in names_of(d)]
        for name in (ref, *named):
            try:
                origin = explicit_reference(name)
            except InvalidReferenceError:
                continue
            if origin is not None:
                return origin.endpoint_host, origin.repository
        return None

    def document(self, desc: Descriptor) -> bytes:
        try:
            return self.layout.read_blob(desc, self.manifest_limit)
        except NotFoundError:
            what = f" ({desc.platform})" if desc.platform else ""
            raise NotFoundError(
                f"manifest {desc.digest}{what} is not in layout {self.layout.root}: it was "
                "left out when the layout was filled (pulled with --platform?); pull it with "
                "--all-platforms, or choose --platform"
            ) from None

    def was_fetched(self, desc: Descriptor) -> bool:
        return False

    def read_blob(self, desc: Descriptor, limit: int) -> bytes:
        return self.layout.read_blob(desc, limit)

    def blob_source(self, desc: Descriptor, progress: Progress) -> BlobSource:
        layout = self.layout

        def chunks(offset: int) -> Iterator[bytes]:
            with layout.fetch(desc) as f:
                f.seek(offset)
                while chunk := f.read(CHUNK_SIZE):
                    progress.advance(desc, len(chunk))
                    yield chunk

        def source(offset: int) -> tuple[int, Iterable[bytes]]:
            return offset, chunks(offset)

        return source

    def opener(self, desc: Descriptor) -> Opener | None:
        if not self.layout.exists(desc):
            raise NotFoundError(f"blob {desc.digest} is not in layout {self.layout.root}")
        return lambda: self.layout.fetch(desc)

    def referrers(
        self, subject: Descriptor, artifact_types: Sequence[str] = ()
    ) -> list[Descriptor]:
        present = [
            d for d in layout_referrers(self.layout, subject.digest) if self.layout.exists(d)
        ]
        return filter_referrers(present, artifact_types)


def layout_referrers(layout: OCILayout, subject: Digest) -> list[Descriptor]:
    """Referrers of ``subject`` recorded in ``layout`` (fallback indexes and direct entries)."""
    tag = fallback_tag(subject)
    found: list[Descriptor] = []
    for entry in layout.entries():
        names = names_of(entry)
        doc = layout.document(entry)
        if doc is None:
            continue
        if any(n == tag or n.endswith(":" + tag) for n in names) and isinstance(doc, Index):
            found.extend(referrers_of_index(doc))
        elif doc.subject is not None and doc.subject.digest == subject:
            found.append(referrer_descriptor(entry, doc))
    return filter_referrers(found, ())


class LayoutDestination:
    """Writes into ``layout`` through the layout's cache; the root is tagged ``ref_name``.

    ``partial=False`` (a layout about to become an archive) takes whole indexes,
    as a registry does. A ``SchedulingDestination``: ``put_local`` places a blob
    this machine already has, ``try_put_blob`` defers one another process is
    fetching (see ``engine.copy_graph``).

    A blob already in the layout or the cache is reused only while it is still
    as verified (its seal, ``fs/seal.py``), or after a re-hash; ``verify=True``
    re-hashes every reused blob. A layout blob of the right size but the wrong
    content is replaced, never reported ``present``.

    ``tag_root=False`` leaves the naming to the caller: ``sync`` tags all its refs
    in one ``index.json`` transaction once every graph is in place."""

    def __init__(
        self,
        layout: OCILayout,
        ref_name: str,
        *,
        partial: bool = True,
        verify: bool = False,
        tag_root: bool = True,
        oci_format: bool = False,
    ) -> None:
        self.layout = layout
        self.cache = layout.cache  # the one the layout links from, so ingest and link agree
        self.ref_name = ref_name
        self.verify = verify
        self.keeps_partial_index = partial
        """False for a layout that will be exported: like a registry, it gets whole indexes."""
        self.tag_root = tag_root
        self.platform_manifest_as_root = tag_root  # sync tags the digest its lock pins
        self.oci_format = oci_format
        """Store Docker schema2 documents in OCI media types (``oci.convert``)."""
        self._converted: dict[str, Descriptor] = {}

    @property
    def name(self) -> str:
        return self.ref_name

    def put_blob(self, desc: Descriptor, src: Source, progress: Progress) -> BlobOutcome:
        outcome = self._put(desc, src, progress, wait=True)
        assert outcome is not None  # only a put that does not wait defers
        return outcome

    def try_put_blob(self, desc: Descriptor, src: Source, progress: Progress) -> BlobOutcome | None:
        # The engine calls this right after put_local found nothing: do not look again.
        return self._put(desc, src, progress, wait=False)

    def put_local(self, desc: Descriptor, progress: Progress) -> BlobOutcome | None:
        if self.layout.holds(desc, rehash=self.verify):
            return self._done(desc, progress, "present", False, 0)
        hit = self.cache.hit(desc.digest, desc.size, rehash=self.verify)
        if hit is None:
            return None
        try:
            mode = self.layout.link_blob(hit.path, desc.digest, desc.size)
        except NotFoundError:
            return None  # pruned between the check and the link: fetch it
        return self._done(desc, progress, _mode_name(mode), False, 0)

    def _put(
        self, desc: Descriptor, src: Source, progress: Progress, *, wait: bool
    ) -> BlobOutcome | None:
        fetched, transferred = False, 0
        for attempt in range(2):
            local = self.put_local(desc, progress) if wait or attempt else None
            if local is not None:
                return local
            source = _announced(desc, src.blob_source(desc, progress), progress)
            ingest = self.cache.ingest if wait else self.cache.try_ingest
            res = ingest(desc.digest, desc.size, source)
            if res is None:
                return None  # another process is fetching it: the caller comes back later
            fetched = fetched or res.fetched
            if src.is_remote:
                transferred += res.bytes_transferred
            try:
                mode = self.layout.link_blob(res.path, desc.digest, desc.size)
            except NotFoundError:
                # A concurrent `cache prune` removed it between ingest and link: fetch again.
                if attempt:
                    raise
                continue
            return self._done(desc, progress, _mode_name(mode), fetched, transferred)
        raise AssertionError("unreachable")

    @staticmethod
    def _done(
        desc: Descriptor, progress: Progress, mode: str, fetched: bool, transferred: int
    ) -> BlobOutcome:
        action = "fetched" if fetched else ("present" if mode == "present" else "linked")
        outcome = BlobOutcome(
            str(desc.digest), desc.size, desc.media_type, fetched, transferred, mode, action
        )
        progress.done(desc, outcome)
        return outcome

    def put_document(
        self, desc: Descriptor, raw: bytes, doc: Manifest | Index, src: Source
    ) -> BlobOutcome:
        fetched, moved = src.was_fetched(desc), desc.size
        if self.oci_format:  # children come first, so theirs are already converted
            new, raw = to_oci(desc, raw, self._converted)
            self._converted[str(desc.digest)] = desc = new
        if self.layout.holds(desc, rehash=self.verify):
            mode = "present"
        else:
            if self.cache.hit(desc.digest, desc.size, rehash=self.verify) is None:
                self.cache.ingest_bytes(desc.digest, raw)
            mode = _mode_name(self.layout.add_blob_from_cache(desc.digest, desc.size))
        if doc.subject is not None:
            self._record_referrer(doc.subject.digest, referrer_descriptor(desc, doc))
        return BlobOutcome(
            str(desc.digest),
            desc.size,
            desc.media_type,
            fetched,
            moved if fetched and src.is_remote else 0,
            mode,
            "fetched" if fetched else ("present" if mode == "present" else "linked"),
        )

    def put_root(
        self, desc: Descriptor, raw: bytes, doc: Manifest | Index, src: Source
    ) -> BlobOutcome:
        outcome = self.put_document(desc, raw, doc, src)
        self.cache.sync()  # the graph's cache entries are durable before index.json names it
        self.layout.record_use()  # also when every blob was present: "last used" moves
        if self.tag_root:
            self.layout.tag(self._converted.get(str(desc.digest), desc), self.ref_name)
        return outcome

    def _record_referrer(self, subject: Digest, referrer: Descriptor) -> None:
        """Add ``referrer`` to the subject's tag-schema index in this layout."""
        name = fallback_name(self.ref_name, subject)
        existing: bytes | None = None
        try:
            current = self.layout.resolve(name)
            existing = self.layout.read_blob(current)
        except NotFoundError:
            pass
        raw = merge_fallback_index(existing, referrer)
        if raw is None:
            return
        index = Descriptor(mt.OCI_INDEX, Digest.of_bytes(raw), len(raw))
        self.layout.push_bytes(index, raw)
        self.layout.tag(index, name)


def fallback_name(ref_name: str, subject: Digest) -> str:
    """The layout ref of ``subject``'s referrers index, beside ``ref_name``:
    ``registry/repo:sha256-<hex>`` for a full reference, else ``sha256-<hex>``."""
    tag = fallback_tag(subject)
    try:
        ref = explicit_reference(ref_name)
    except InvalidReferenceError:
        ref = None
    return f"{ref.name}:{tag}" if ref is not None else tag


def _announced(desc: Descriptor, source: BlobSource, progress: Progress) -> BlobSource:
    """``source`` that reports ``progress.start`` when the cache first calls it, i.e. only
    for a blob that really crosses (not for one another process published meanwhile)."""
    started = False

    def announced(offset: int) -> tuple[int, Iterable[bytes]]:
        nonlocal started
        if not started:
            started = True
            progress.start(desc)
        return source(offset)

    return announced


def _mode_name(mode: LinkMode | None) -> str:
    """How a blob entered the layout; ``present`` when it was already there."""
    return mode.value if mode is not None else "present"

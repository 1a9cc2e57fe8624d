"""The graph copy engine: one walk for pull, push and copy.

``copy_graph(src, ref, dst)`` resolves ``ref`` at the source, walks the
manifest graph (index -> selected manifests -> config and layers; with
``include_referrers`` also every manifest attached through ``subject``,
recursively), moves the blobs the destination lacks concurrently, then stores
the documents children first and the root last under its name. Whatever the
pair (registry -> layout is a pull, layout -> registry a push, registry ->
registry or layout -> layout a copy), documents are moved as their exact
bytes, so every digest is preserved on every hop.

Platforms: into a layout, one chosen platform (the host's by default, or one
``--platform``) makes that platform's manifest the ref, as skopeo and crane record
it, so skopeo and umoci read the layout on any host; several ``--platform`` keep an
index with only those children, ``--all-platforms`` the whole index. A registry
must hold every child of an index it stores, so a copy into a registry takes
the whole index by default, and ``--platform`` picks one child manifest that
then becomes the target itself (as ``oras copy --platform`` does).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from hybridstore.errors import InvalidInputError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.graph import Node, is_foreign_layer, walk
from hybridstore.oci.model import (
    Descriptor,
    Index,
    Manifest,
    Platform,
    parse_document,
)
from hybridstore.oci.platforms import select_platforms
from hybridstore.transfer.endpoint import (
    BlobOutcome,
    Destination,
    Progress,
    SchedulingDestination,
    Source,
)
from hybridstore.transfer.pools import BlobPools, gather

__all__ = [
    "BlobOutcome",
    "CopyOptions",
    "CopyResult",
    "Progress",
    "copy_graph",
]

log = logging.getLogger("hybridstore.transfer.engine")

_MAX_REFERRER_DOCUMENTS = 10_000  # a bound on attached content, against loops and floods


@dataclass(frozen=True)
class CopyOptions:
    platforms: tuple[Platform, ...] = ()
    """Wanted platforms of an image index; empty means the host platform for layouts
    and the whole index for registries."""
    all_platforms: bool = False
    concurrency: int = 8
    include_nondistributable: bool = False
    include_referrers: bool = False
    referrer_types: tuple[str, ...] = ()
    """With ``include_referrers``: only referrers of these artifact types (all if empty)."""
    verify: bool = False
    """Re-hash every blob reused from a layout or the cache (``LayoutDestination``)."""

@dataclass
class CopyResult:
    reference: str
    ref_name: str
    digest: str
    media_type: str
    size: int
    blobs: list[BlobOutcome] = field(default_factory=list)
    referrers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    resolved_from: str = ""
    """Where an offline pull found the tag (a layout, and when it was last used)."""
    platform: str | None = None
    """When the ref named an index and one platform was taken: that platform."""
    index: str | None = None
    """When the ref named an index and its platform manifest became the target: the index."""
    converted_from: str | None = None
    """With ``--format oci``: the digest the root had before its media types were converted."""

    def _count(self, action: str) -> int:
        return sum(1 for b in self.blobs if b.action == action)

    @property
    def fetched(self) -> int:
        return sum(1 for b in self.blobs if b.fetched)

    @property
    def reused(self) -> int:
        return sum(1 for b in self.blobs if not b.fetched)

    @property
    def uploaded(self) -> int:
        return self._count("uploaded")

    @property
    def mounted(self) -> int:
        return self._count("mounted")

    @property
    def present(self) -> int:
        return self._count("present")

    @property
    def bytes_transferred(self) -> int:
        return sum(b.bytes_transferred for b in self.blobs)

    @property
    def link_modes(self) -> list[str]:
        return sorted({b.link_mode for b in self.blobs if b.link_mode})

    def to_json(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "ref_name": self.ref_name,
            "digest": self.digest,
            "media_type": self.media_type,
            "size": self.size,
            "blobs_fetched": self.fetched,
            "blobs_reused": self.reused,
            "blobs_uploaded": self.uploaded,
            "blobs_mounted": self.mounted,
            "blobs_present": self.present,
            "bytes_transferred": self.bytes_transferred,
            "link_modes": self.link_modes,
            "referrers": list(self.referrers),
            "seconds": round(self.seconds, 3),
            "resolved_from": self.resolved_from,
            "platform": self.platform,
            "index": self.index,
            "converted_from": self.converted_from,
            "blobs": [b.__dict__ for b in self.blobs],
        }


@dataclass
class _Plan:
    """What a copy moves: documents as exact bytes (parents before children), blobs once."""

    documents: list[tuple[Descriptor, bytes, Manifest | Index]] = field(default_factory=list)
    referrers: list[tuple[Descriptor, bytes, Manifest | Index]] = field(default_factory=list)
    blobs: dict[str, Descriptor] = field(default_factory=dict)


def copy_graph(
    src: Source,
    ref: str,
    dst: Destination,
    options: CopyOptions,
    progress: Progress | None = None,
    pools: BlobPools | None = None,
    *,
    reference: str | None = None,
) -> CopyResult:
    """Copy what ``ref`` names at ``src`` to ``dst`` (see the module docstring)."""
    started = time.monotonic()
    progress = progress or Progress()
    root = index = src.resolve(ref)
    if mt.is_index(root.media_type):
        if not dst.keeps_partial_index:
            root = _registry_root(src, root, options)
        elif dst.platform_manifest_as_root and not options.all_platforms:
            root = _single_platform(src, root, options) or root
    plan = _plan(src, root, options, dst.keeps_partial_index)
    result = CopyResult(
        reference or f"{src.description}:{ref}",
        dst.name,
        str(root.digest),
        root.media_type,
        root.size,
        platform=str(root.platform) if root is not index and root.platform else None,
        index=str(index.digest) if root is not index else None,
    )
    own_pools = pools is None
    pools = pools or BlobPools(options.concurrency)
    try:
        result.blobs.extend(_put_blobs(src, dst, list(plan.blobs.values()), progress, pools))
    finally:
        if own_pools:
            pools.shutdown(wait=True)
    # Children before parents, so every stored document is complete; referrers
    # before the root, whose naming is the last step.
    head, *children = plan.documents
    for desc, raw, doc in reversed(children):
        result.blobs.append(dst.put_document(desc, raw, doc, src))
    for desc, raw, doc in reversed(plan.referrers):
        result.blobs.append(dst.put_document(desc, raw, doc, src))
        if doc.subject is not None:
            result.referrers.append(str(desc.digest))
    stored = dst.put_root(*head, src)
    result.blobs.append(stored)
    if stored.digest != result.digest:  # the destination converted it (--format oci)
        result.converted_from = result.digest
        result.digest, result.media_type, result.size = (
            stored.digest,
            stored.media_type,
            stored.size,
        )
    result.seconds = time.monotonic() - started
    return result


def _put_blobs(
    src: Source,
    dst: Destination,
    blobs: list[Descriptor],
    progress: Progress,
    pools: BlobPools,
) -> list[BlobOutcome]:
    """Put every blob at ``dst``; the outcomes in ``blobs`` order.

    A ``SchedulingDestination`` (a layout) gets three passes. Blobs this
    machine already has are placed inline, so a warm pull starts no worker
    thread. The rest go to the pools with ``try_put_blob``, which defers a blob
    another process is fetching right now instead of queueing on its lock:
    eight processes pulling one image spread over its blobs rather than all
    waiting for the first. Last, the deferred blobs are waited for; most are
    cache hits by then. Each blob still crosses the network once per machine.
    """
    if not isinstance(dst, SchedulingDestination):
        return gather([pools.submit(dst.put_blob, d, src, progress) for d in blobs])
    outcomes: list[BlobOutcome | None] = [None] * len(blobs)
    tried: list[tuple[int, Future[BlobOutcome | None]]] = []
    try:
        for i, desc in enumerate(blobs):
            outcomes[i] = dst.put_local(desc, progress)
            if outcomes[i] is None:
                tried.append((i, pools.submit(dst.try_put_blob, desc, src, progress)))
        for i, future in tried:
            outcomes[i] = future.result()
    except BaseException:
        for _, future in tried:
            future.cancel()
        raise
    deferred = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if deferred:
        log.debug(
            "%d blob(s) were being fetched by another process; waiting for them", len(deferred)
        )
    waited = gather([pools.submit(dst.put_blob, blobs[i], src, progress) for i in deferred])
    for i, outcome in zip(deferred, waited, strict=True):
        outcomes[i] = outcome
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(blobs)  # a waiting put_blob never defers
    return done


def _registry_root(src: Source, root: Descriptor, options: CopyOptions) -> Descriptor:
    """For a registry destination: the whole index, or the one child ``--platform`` picks."""
    if options.all_platforms or not options.platforms:
        return root
    doc = parse_document(src.document(root), root.media_type)
    assert isinstance(doc, Index)
    chosen = select_platforms(doc, options.platforms, all_platforms=False)
    if len(chosen) != 1:
        raise InvalidInputError(
            f"--platform matched {len(chosen)} manifests; a registry destination takes one "
            "platform (its manifest becomes the target) or the whole index (--all-platforms)"
        )
    return chosen[0]


def _single_platform(src: Source, root: Descriptor, options: CopyOptions) -> Descriptor | None:
    """For a layout: the one platform manifest the selection leaves (the host's by default,
    or one --platform), which becomes the ref itself, as skopeo and crane record it. An
    index holding only that child would name platforms that are absent, and skopeo on
    another host ("no descriptor found") and umoci refuse such a layout; a manifest reads
    everywhere. None when the selection keeps several (the sparse index stays)."""
    doc = parse_document(src.document(root), root.media_type)
    assert isinstance(doc, Index)
    chosen = select_platforms(doc, options.platforms, all_platforms=False)
    if len(chosen) == 1 and chosen[0].platform is not None:
        return chosen[0]
    return None


def _plan(src: Source, root: Descriptor, options: CopyOptions, partial: bool) -> _Plan:
    """Walk ``root``'s graph at ``src`` (and, with ``include_referrers``, everything
    attached to it through ``subject``, recursively): documents read as exact bytes,
    the blobs they name collected once."""
    plan = _Plan()

    def visit(node: Node) -> Manifest | Index | None:
        desc = node.desc
        if not (mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type)):
            if is_foreign_layer(desc) and not options.include_nondistributable:
                log.info("skipping non-distributable layer %s", desc.digest.short)
            else:
                plan.blobs.setdefault(str(desc.digest), desc)
            return None
        raw = src.document(desc)
        doc = parse_document(raw, desc.media_type)
        (plan.referrers if node.attached else plan.documents).append((desc, raw, doc))
        return doc

    def select(index: Index) -> list[Descriptor]:
        if partial:
            return select_platforms(index, options.platforms, options.all_platforms)
        return list(index.manifests)

    def attached(node: Node) -> list[Descriptor]:
        if node.doc is None:
            return []
        if len(plan.documents) + len(plan.referrers) > _MAX_REFERRER_DOCUMENTS:
            raise InvalidInputError(
                f"more than {_MAX_REFERRER_DOCUMENTS} documents with referrers; "
                "narrow them with --referrer-type"
            )
        return list(src.referrers(node.desc, options.referrer_types))

    referrers = attached if options.include_referrers else None
    for _ in walk([root], visit, subjects=False, select=select, referrers=referrers):
        pass
    return plan

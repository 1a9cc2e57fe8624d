"""Sources for ``pull --offline``: content this machine already has, no socket.

A digest-pinned reference is read from the shared cache. A tag is resolved
from the target layout if it holds that reference, else from the known layout
(the cache's layout registry) that holds exactly that reference and was used
most recently; its content then comes from that layout, or from the cache
where the layout is sparse. Nothing here imports the registry client.

``check_complete`` walks the whole graph before anything is written, so a
missing manifest or blob is one error naming every piece that is missing,
and the target layout is left as it was.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from hybridstore.errors import NotFoundError
from hybridstore.oci.digest import Digest
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Descriptor, Index, Manifest, parse_document
from hybridstore.oci.reference import Reference
from hybridstore.store.cache import BlobCache, BlobSource
from hybridstore.store.cache_layouts import live_layouts
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_refs import names_of
from hybridstore.transfer.endpoint import BlobOutcome, Opener, Progress, Source
from hybridstore.transfer.engine import CopyOptions, copy_graph
from hybridstore.transfer.layout_endpoint import LayoutSource

__all__ = ["CacheSource", "OfflineOrigin", "check_complete", "offline_origin"]

_HINT = "pull it once without --offline"


class CacheSource:
    """Reads documents and blobs from the shared cache; ``resolve`` knows one root."""

    is_remote = False
    mount_from = None

    def __init__(self, cache: BlobCache, root: Descriptor, what: str) -> None:
        self.cache = cache
        self.root = root
        self.what = what  # the reference, for messages

    @property
    def description(self) -> str:
        return f"cache {self.cache.root}"

    def resolve(self, ref: str) -> Descriptor:
        return self.root

    def _missing(self, desc: Descriptor) -> NotFoundError:
        return NotFoundError(
            f"offline: {desc.digest} ({desc.media_type}) of {self.what} is not in the cache "
            f"at {self.cache.root}; {_HINT}"
        )

    def document(self, desc: Descriptor) -> bytes:
        return self.read_blob(desc, MAX_DOCUMENT_BYTES)

    def was_fetched(self, desc: Descriptor) -> bool:
        return False

    def read_blob(self, desc: Descriptor, limit: int) -> bytes:
        if desc.size > limit or self.cache.hit(desc.digest, desc.size) is None:
            raise self._missing(desc)
        with self.cache.open(desc.digest) as f:
            return f.read(desc.size + 1)  # a hit is verified (sealed or re-hashed)

    def blob_source(self, desc: Descriptor, progress: Progress) -> BlobSource:
        raise self._missing(desc)  # the destination found no cache hit: nothing to read

    def opener(self, desc: Descriptor) -> Opener | None:
        if not self.cache.exists(desc.digest, desc.size):
            raise self._missing(desc)
        return lambda: self.cache.open(desc.digest)

    def referrers(
        self, subject: Descriptor, artifact_types: Sequence[str] = ()
    ) -> list[Descriptor]:
        return []  # the cache keeps no graph: referrers come only from layouts


@dataclass(frozen=True)
class OfflineOrigin:
    """Where an offline pull of one reference reads from."""

    source: Source
    ref: str  # as the source resolves it
    note: str  # for the output: which layout, and when it was last used ("" for the cache)


def _holds_exactly(layout: OCILayout, name: str) -> Descriptor | None:
    """The entry named exactly ``name`` (the full reference), if any."""
    for desc in layout.entries():
        if name in names_of(desc):
            return desc
    return None


def offline_origin(ref: Reference, target: OCILayout | None, cache: BlobCache) -> OfflineOrigin:
    """Resolve ``ref`` without the network (see the module docstring)."""
    name = str(ref)
    if ref.digest is not None:
        root = _cached_root(cache, ref.digest, name)
        return OfflineOrigin(CacheSource(cache, root, name), str(ref.digest), "")
    if target is not None and _holds_exactly(target, name) is not None:
        return OfflineOrigin(LayoutSource(target), name, f"target layout {target.root}")
    best: tuple[float, OCILayout] | None = None
    for known, layout in live_layouts(cache):
        if (best is None or known.last_used > best[0]) and _holds_exactly(layout, name):
            best = (known.last_used, layout)
    if best is None:
        raise NotFoundError(
            f"offline: no layout this cache knows holds {name} (see hybridstore cache layouts); "
            f"{_HINT}, or pin it by digest"
        )
    used, layout = best
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(used))
    note = f"layout {layout.root} (last used {when})"
    return OfflineOrigin(LayoutSource(layout), name, note)


def _cached_root(cache: BlobCache, digest: Digest, name: str) -> Descriptor:
    """The descriptor of a cached manifest or index, from its own bytes."""
    hit = cache.hit(digest)
    if hit is None or hit.size > MAX_DOCUMENT_BYTES:
        raise NotFoundError(
            f"offline: manifest {digest} of {name} is not in the cache at {cache.root}; {_HINT}"
        )
    with cache.open(digest) as f:
        raw = f.read(hit.size)
    doc = parse_document(raw)
    return Descriptor(doc.media_type, digest, len(raw), artifact_type=doc.artifact_type)


class _Checker:
    """A destination that stores nothing: it notes every blob neither the target
    layout, the cache nor the source has."""

    keeps_partial_index = True
    platform_manifest_as_root = True  # checks what pull --offline then copies
    name = ""

    def __init__(self, target: OCILayout | None, cache: BlobCache) -> None:
        self.target = target
        self.cache = cache
        self.missing: list[str] = []

    def _outcome(self, desc: Descriptor) -> BlobOutcome:
        return BlobOutcome(str(desc.digest), desc.size, desc.media_type, False, 0, "")

    def put_blob(self, desc: Descriptor, src: Source, progress: Progress) -> BlobOutcome:
        here = self.target is not None and self.target.exists(desc)
        if not here and not self.cache.exists(desc.digest, desc.size):
            try:
                src.opener(desc)
            except NotFoundError:
                self.missing.append(f"{desc.digest} ({desc.media_type}, {desc.size} bytes)")
        return self._outcome(desc)

    def put_document(
        self, desc: Descriptor, raw: bytes, doc: Manifest | Index, src: Source
    ) -> BlobOutcome:
        return self._outcome(desc)

    put_root = put_document


def check_complete(
    origin: OfflineOrigin, target: OCILayout | None, cache: BlobCache, options: CopyOptions
) -> None:
    """Raise ``NotFoundError`` naming every blob of the graph this machine lacks."""
    checker = _Checker(target, cache)
    copy_graph(origin.source, origin.ref, checker, options)
    if checker.missing:
        shown = ", ".join(checker.missing[:5])
        more = f" and {len(checker.missing) - 5} more" if len(checker.missing) > 5 else ""
        raise NotFoundError(
            f"offline: {len(checker.missing)} blob(s) of {origin.ref} are on this machine "
            f"neither in the cache nor in {origin.source.description}: {shown}{more}; {_HINT}"
        )

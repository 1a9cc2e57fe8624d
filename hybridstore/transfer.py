"""The graph copy engine: registry -> shared cache -> cache-backed layout.

Walks a manifest graph (index -> selected manifests -> config and layers),
fetches only what the cache lacks (every blob through the cache's
single-flight, verifying writer), links everything into the layout, and tags
last: ``index.json`` is the completion marker, so an interrupted pull leaves no
ref pointing at an incomplete graph.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import mediatypes as mt
from .cache import BlobCache
from .errors import NotFoundError
from .layout import OCILayout
from .linking import LinkMode
from .model import Descriptor, Index, Manifest, Platform, host_platform, parse_document
from .reference import Reference
from .remote.repository import Repository

__all__ = ["PullOptions", "PullResult", "BlobOutcome", "Progress", "pull_graph"]

log = logging.getLogger("hybridstore.transfer")


@dataclass(frozen=True)
class PullOptions:
    platforms: tuple[Platform, ...] = ()
    """Wanted platforms of an image index; empty means the host platform."""
    all_platforms: bool = False
    concurrency: int = 8
    include_nondistributable: bool = False
    ref_name: str | None = None


@dataclass(frozen=True)
class BlobOutcome:
    digest: str
    size: int
    media_type: str
    fetched: bool
    bytes_transferred: int
    link_mode: str


@dataclass
class PullResult:
    reference: str
    ref_name: str
    digest: str
    media_type: str
    size: int
    blobs: list[BlobOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fetched(self) -> int:
        return sum(1 for b in self.blobs if b.fetched)

    @property
    def reused(self) -> int:
        return sum(1 for b in self.blobs if not b.fetched)

    @property
    def bytes_transferred(self) -> int:
        return sum(b.bytes_transferred for b in self.blobs)

    @property
    def link_modes(self) -> list[str]:
        return sorted({b.link_mode for b in self.blobs})

    def to_json(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "ref_name": self.ref_name,
            "digest": self.digest,
            "media_type": self.media_type,
            "size": self.size,
            "blobs_fetched": self.fetched,
            "blobs_reused": self.reused,
            "bytes_transferred": self.bytes_transferred,
            "link_modes": self.link_modes,
            "seconds": round(self.seconds, 3),
            "blobs": [b.__dict__ for b in self.blobs],
        }


class Progress:
    """Progress events; the CLI subclasses this to draw bars. Methods may be
    called from worker threads."""

    def start(self, desc: Descriptor) -> None:
        """A blob is about to be fetched from the network."""

    def advance(self, desc: Descriptor, nbytes: int) -> None:
        """``nbytes`` more bytes of ``desc`` arrived."""

    def done(self, desc: Descriptor, outcome: BlobOutcome) -> None:
        """``desc`` is in the cache and linked into the layout."""


def pull_graph(
    repo: Repository,
    ref: Reference,
    cache: BlobCache,
    layout: OCILayout,
    options: PullOptions,
    progress: Progress | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> PullResult:
    """Pull ``ref`` from ``repo`` into ``layout`` through ``cache``; tag it last."""
    started = time.monotonic()
    progress = progress or Progress()
    root = repo.resolve(ref.reference)
    walker = _GraphWalker(repo, cache, layout, options, progress)
    manifests, blobs = walker.walk(root)
    ref_name = options.ref_name or str(ref)
    result = PullResult(str(ref), ref_name, str(root.digest), root.media_type, root.size)
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=max(1, options.concurrency))
    try:
        result.blobs.extend(pool.map(walker.transfer_blob, blobs))
    finally:
        if own_pool:
            pool.shutdown(wait=True)
    # Manifests are linked children first, so every linked document is complete.
    for desc in reversed(manifests):
        result.blobs.append(walker.link_document(desc))
    layout.tag(root, ref_name)
    result.seconds = time.monotonic() - started
    return result


class _GraphWalker:
    def __init__(
        self,
        repo: Repository,
        cache: BlobCache,
        layout: OCILayout,
        options: PullOptions,
        progress: Progress,
    ) -> None:
        self.repo = repo
        self.cache = cache
        self.layout = layout
        self.options = options
        self.progress = progress
        self.fetched_documents: set[str] = set()

    def walk(self, root: Descriptor) -> tuple[list[Descriptor], list[Descriptor]]:
        """Manifests (root first) and unique blobs (config + layers) to transfer."""
        manifests: list[Descriptor] = []
        blobs: dict[str, Descriptor] = {}
        stack = [root]
        while stack:
            desc = stack.pop()
            if any(m.digest == desc.digest for m in manifests):
                continue
            manifests.append(desc)
            doc = parse_document(self.document_bytes(desc), desc.media_type)
            if isinstance(doc, Index):
                stack.extend(reversed(self.select(doc)))
            else:
                for child in _image_blobs(doc, self.options.include_nondistributable):
                    blobs.setdefault(str(child.digest), child)
        return manifests, list(blobs.values())

    def document_bytes(self, desc: Descriptor) -> bytes:
        """A manifest's exact bytes: from the cache when present, else the registry."""
        if self.cache.exists(desc.digest, desc.size):
            with self.cache.open(desc.digest) as f:
                return f.read()
        fetched = self.repo.fetch_manifest(str(desc.digest), expected=desc)
        self.cache.ingest_bytes(desc.digest, fetched.raw)
        self.fetched_documents.add(str(desc.digest))
        return fetched.raw

    def select(self, index: Index) -> list[Descriptor]:
        """Children of an index to pull: all for artifacts or ``--all-platforms``."""
        children = list(index.manifests)
        with_platform = [d for d in children if d.platform is not None]
        if self.options.all_platforms or not with_platform:
            return children
        wanted = self.options.platforms or (host_platform(),)
        chosen = [
            d for d in with_platform if any(w.matches(d.platform) for w in wanted if d.platform)
        ]
        if not chosen:
            have = ", ".join(sorted({str(d.platform) for d in with_platform}))
            want = ", ".join(str(w) for w in wanted)
            raise NotFoundError(
                f"no manifest for platform {want} in the index (available: {have}); "
                "use --platform or --all-platforms"
            )
        return chosen

    def transfer_blob(self, desc: Descriptor) -> BlobOutcome:
        fetched, transferred = False, 0
        for attempt in range(2):
            if self.layout.exists(desc):
                mode = "present"
                break
            if self.cache.exists(desc.digest, desc.size):
                self.cache.touch(desc.digest)
            else:
                self.progress.start(desc)
                res = self.cache.ingest(desc.digest, desc.size, self._source(desc))
                fetched, transferred = fetched or res.fetched, transferred + res.bytes_transferred
            try:
                mode = _mode_name(self.layout.add_blob_from_cache(desc.digest, desc.size))
                break
            except NotFoundError:
                # A concurrent `cache prune` removed it between ingest and link: fetch again.
                if attempt:
                    raise
        outcome = BlobOutcome(
            str(desc.digest), desc.size, desc.media_type, fetched, transferred, mode
        )
        self.progress.done(desc, outcome)
        return outcome

    def link_document(self, desc: Descriptor) -> BlobOutcome:
        if self.layout.exists(desc):
            mode = "present"
        else:
            if not self.cache.exists(desc.digest, desc.size):
                self.document_bytes(desc)  # pruned meanwhile: fetch it again
            mode = _mode_name(self.layout.add_blob_from_cache(desc.digest, desc.size))
        fetched = str(desc.digest) in self.fetched_documents
        return BlobOutcome(
            str(desc.digest),
            desc.size,
            desc.media_type,
            fetched,
            desc.size if fetched else 0,
            mode,
        )

    def _source(self, desc: Descriptor) -> Callable[[int], tuple[int, Iterable[bytes]]]:
        def source(offset: int) -> tuple[int, Iterable[bytes]]:
            start, chunks = self.repo.open_blob(desc, offset)
            return start, self._counted(desc, chunks)

        return source

    def _counted(self, desc: Descriptor, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for c in chunks:
            self.progress.advance(desc, len(c))
            yield c


def _mode_name(mode: LinkMode | None) -> str:
    """How a blob entered the layout; ``present`` when it was already there."""
    return mode.value if mode is not None else "present"


def _image_blobs(doc: Manifest, include_nondistributable: bool) -> Sequence[Descriptor]:
    out = []
    for child in doc.children():
        foreign = child.urls and child.media_type in mt.NON_DISTRIBUTABLE_LAYERS
        if foreign and not include_nondistributable:
            log.info("skipping non-distributable layer %s", child.digest.short)
            continue
        out.append(child)
    return out

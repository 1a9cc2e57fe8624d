"""What the copy engine needs from the two ends of a copy, and what it reports.

A *source* resolves refs and hands out exact, verified bytes: manifests in
memory, blobs as a resumable ``BlobSource`` (for the cache) or as a local file
that can be opened again and again (for uploads). A *destination* takes blobs
and documents and finally names the root. Registries and cache-backed layouts
implement both sides (``registry_endpoint``, ``layout_endpoint``), so pull, push and copy
are the same walk (``engine.copy_graph``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Protocol, runtime_checkable

from hybridstore.oci.model import Descriptor, Index, Manifest
from hybridstore.store.cache import BlobSource

__all__ = [
    "BlobOutcome",
    "Destination",
    "Opener",
    "Progress",
    "SchedulingDestination",
    "Source",
]

Opener = Callable[[], AbstractContextManager[IO[bytes]]]
"""Opens a blob's bytes from the start; called again for every (re)send."""


@dataclass(frozen=True)
class BlobOutcome:
    """What happened to one blob or document.

    ``fetched``: read from the source in this run (for a registry source, it
    crossed the network). ``bytes_transferred``: bytes over the network, down
    and up. ``link_mode``: how it entered a layout (``present`` if already
    there; empty for registries). ``action``: ``fetched``, ``linked``,
    ``present``, ``uploaded`` or ``mounted``.
    """

    digest: str
    size: int
    media_type: str
    fetched: bool
    bytes_transferred: int
    link_mode: str
    action: str = ""


class Progress:
    """Progress events; the CLI subclasses this to draw bars. Methods may be
    called from worker threads."""

    def start(self, desc: Descriptor) -> None:
        """A blob is about to cross (download or upload)."""

    def advance(self, desc: Descriptor, nbytes: int) -> None:
        """``nbytes`` more bytes of ``desc`` crossed."""

    def done(self, desc: Descriptor, outcome: BlobOutcome) -> None:
        """``desc`` is in place at the destination."""


class Source(Protocol):
    """Where content is copied from."""

    @property
    def description(self) -> str:
        """For messages: ``registry/repository`` or ``layout DIR``."""
        ...

    @property
    def is_remote(self) -> bool: ...

    @property
    def mount_from(self) -> tuple[str, str] | None:
        """(registry ``host[:port]``, repository) where these blobs are known to live,
        for a cross-repository mount into another repository of that registry."""
        ...

    def resolve(self, ref: str) -> Descriptor: ...

    def document(self, desc: Descriptor) -> bytes:
        """A manifest's or index's exact, verified bytes."""
        ...

    def was_fetched(self, desc: Descriptor) -> bool:
        """Whether ``document`` had to fetch ``desc`` over the network in this run."""
        ...

    def read_blob(self, desc: Descriptor, limit: int) -> bytes:
        """A small blob (config, provenance) in memory, verified."""
        ...

    def blob_source(self, desc: Descriptor, progress: Progress) -> BlobSource:
        """The blob for ``BlobCache.ingest`` (resumable from an offset)."""
        ...

    def opener(self, desc: Descriptor) -> Opener | None:
        """A re-openable local file holding the blob, or None (stage it in the cache)."""
        ...

    def referrers(
        self, subject: Descriptor, artifact_types: Sequence[str] = ()
    ) -> list[Descriptor]: ...


class Destination(Protocol):
    """Where content is copied to."""

    @property
    def keeps_partial_index(self) -> bool:
        """Layouts keep an index with only the chosen platforms (pull); registries need
        every child of an index they store."""
        ...

    @property
    def platform_manifest_as_root(self) -> bool:
        """With ``keeps_partial_index``: one chosen platform makes its manifest the root
        (as skopeo and crane record it) instead of an index holding just that child.
        False where the caller names the root itself from a pinned digest (``sync``)."""
        ...

    @property
    def name(self) -> str:
        """The ref the root gets (a full reference, a layout ref name, or a digest)."""
        ...

    def put_blob(self, desc: Descriptor, src: Source, progress: Progress) -> BlobOutcome: ...

    def put_document(
        self, desc: Descriptor, raw: bytes, doc: Manifest | Index, src: Source
    ) -> BlobOutcome:
        """Store a manifest or index whose children are already in place."""
        ...

    def put_root(
        self, desc: Descriptor, raw: bytes, doc: Manifest | Index, src: Source
    ) -> BlobOutcome:
        """Store the root and give it ``name``: the last step of a copy."""
        ...


@runtime_checkable
class SchedulingDestination(Destination, Protocol):
    """A destination that lets the copy engine order the blob work (cache-backed layouts).

    With many processes pulling the same content, each blob should cross once
    and nobody should queue behind a download it could skip for now.
    """

    def put_local(self, desc: Descriptor, progress: Progress) -> BlobOutcome | None:
        """Put ``desc`` from what this machine already has, without fetching; ``None`` if
        it must be fetched. Cheap (a few ``stat`` calls): run inline, before any thread."""
        ...

    def try_put_blob(self, desc: Descriptor, src: Source, progress: Progress) -> BlobOutcome | None:
        """``put_blob``, unless another process is fetching the blob right now: then
        ``None`` at once; the caller comes back with ``put_blob`` later."""
        ...

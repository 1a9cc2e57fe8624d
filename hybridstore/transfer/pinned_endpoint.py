"""A source whose root is already known (a digest from a lock): cache first, registry
only for what the cache lacks, or nothing else at all offline.

``resolve`` answers with the pinned descriptor, so a locked ref costs no request;
documents and blobs the shared cache holds are read there, documents the destination
layout already holds are read (verified) from it, and only the rest come from
``remote``: a layout carried to an air-gapped machine syncs offline with an empty
cache. Without ``remote`` (``sync --offline``) nothing touches the network: whatever
neither holds is a ``NotFoundError`` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybridstore.errors import NotFoundError
from hybridstore.oci.model import Descriptor
from hybridstore.store.cache import BlobCache, BlobSource
from hybridstore.store.layout import OCILayout
from hybridstore.transfer.endpoint import Opener, Progress, Source

__all__ = ["PinnedSource"]


class PinnedSource:
    """``root`` of ``name`` from ``cache``, falling back to ``remote`` when there is one."""

    mount_from: tuple[str, str] | None = None

    def __init__(
        self,
        name: str,
        root: Descriptor,
        cache: BlobCache,
        remote: Source | None,
        local: OCILayout | None = None,
    ) -> None:
        self.name = name
        self.root = root
        self.cache = cache
        self.remote = remote
        self.local = local

    @property
    def description(self) -> str:
        return self.remote.description if self.remote is not None else f"the cache ({self.name})"

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def _missing(self, desc: Descriptor) -> NotFoundError:
        return NotFoundError(f"{self.name}: {desc.digest} ({desc.size} bytes) is not in the cache")

    def resolve(self, ref: str) -> Descriptor:
        return self.root

    def document(self, desc: Descriptor) -> bytes:
        if self.cache.exists(desc.digest, desc.size):
            with self.cache.open(desc.digest) as f:
                return f.read()
        if self.local is not None and self.local.exists(desc):
            return self.local.read_blob(desc)
        if self.remote is None:
            raise self._missing(desc)
        return self.remote.document(desc)

    def was_fetched(self, desc: Descriptor) -> bool:
        return self.remote is not None and self.remote.was_fetched(desc)

    def read_blob(self, desc: Descriptor, limit: int) -> bytes:
        if self.remote is not None and not self.cache.exists(desc.digest, desc.size):
            return self.remote.read_blob(desc, limit)
        return self.document(desc)

    def blob_source(self, desc: Descriptor, progress: Progress) -> BlobSource:
        if self.remote is None:
            raise self._missing(desc)
        return self.remote.blob_source(desc, progress)

    def opener(self, desc: Descriptor) -> Opener | None:
        return None

    def referrers(
        self, subject: Descriptor, artifact_types: Sequence[str] = ()
    ) -> list[Descriptor]:
        if self.remote is None:
            return []  # offline: what the layout holds already is kept; nothing new is listed
        return self.remote.referrers(subject, artifact_types)

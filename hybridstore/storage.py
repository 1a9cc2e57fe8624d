"""The small storage interface of the design, as typing protocols.

A layout (``OCILayout``) is a readable, writable and taggable storage; the
cache is readable and writable without refs. The copy engine works one level
up, on the richer ``endpoints.base.Source``/``Destination`` protocols (resumable
blob sources, re-openable upload bodies, per-blob outcomes), which registries
and layouts implement on top of these operations.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import IO, Protocol, runtime_checkable

from hybridstore.oci.model import Descriptor

__all__ = ["ReadableStorage", "WritableStorage", "TaggableStorage"]


@runtime_checkable
class ReadableStorage(Protocol):
    def exists(self, desc: Descriptor) -> bool:
        """Whether the content named by ``desc`` is present (complete, right size)."""
        ...

    def fetch(self, desc: Descriptor) -> AbstractContextManager[IO[bytes]]:
        """Open the content named by ``desc`` for reading; raises ``NotFoundError``."""
        ...


@runtime_checkable
class WritableStorage(ReadableStorage, Protocol):
    def push(self, desc: Descriptor, stream: IO[bytes]) -> None:
        """Store ``stream``'s bytes as ``desc``, verifying digest and size first."""
        ...


@runtime_checkable
class TaggableStorage(Protocol):
    def resolve(self, ref: str) -> Descriptor:
        """The descriptor a ref (tag or name) points to; raises ``NotFoundError``."""
        ...

    def tag(self, desc: Descriptor, ref: str) -> None:
        """Point ``ref`` at ``desc`` (whose graph must already be present)."""
        ...

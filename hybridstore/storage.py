"""The one interface every place that holds content implements.

A registry repository, a layout, the cache and an archive are all storages;
pull, push, copy, export and import are one graph walk from a source storage
to a destination storage (``transfer.copy``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import IO, Protocol, runtime_checkable

from .model import Descriptor

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

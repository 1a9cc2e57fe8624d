"""Questions the cache answers through the layouts it knows: which layouts exist,
where a blob or ref is used, and what no live layout reaches.

Each answer reads the layout registry (``layout_registry``) one record at a
time and opens only layouts that are still the ones recorded (``live``);
their refs come from their own ``index.json``, never from the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridstore.errors import (
    HybridstoreError,
    InvalidDigestError,
    InvalidReferenceError,
    NotFoundError,
)
from hybridstore.oci.digest import Digest
from hybridstore.oci.reference import Reference
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import reachable
from hybridstore.store.layout_refs import names_of
from hybridstore.store.layout_registry import KnownLayout, LayoutRegistry

__all__ = [
    "Holder",
    "LayoutUsage",
    "known_layouts",
    "live_layouts",
    "referenced_digests",
    "where_used",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayoutUsage:
    """A known layout as ``cache layouts`` shows it; ``refs`` is ``None`` unless live."""

    known: KnownLayout
    refs: int | None
    forgotten: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**self.known.to_json(), "refs": self.refs, "forgotten": self.forgotten}


@dataclass(frozen=True)
class Holder:
    """A layout ref whose graph contains the blob asked about."""

    layout: Path
    ref: str
    root: Digest  # what the ref points at
    digest: Digest  # the blob found

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": str(self.layout),
            "ref": self.ref,
            "root": str(self.root),
            "digest": str(self.digest),
        }


def _open(cache: BlobCache, known: KnownLayout) -> OCILayout | None:
    """The live layout ``known`` records, or ``None`` if it cannot be read now."""
    if not known.live:
        return None
    try:
        return OCILayout.open(known.path, cache=cache)
    except HybridstoreError as e:
        log.warning("skipping known layout %s: %s", known.path, e)
        return None


def live_layouts(cache: BlobCache) -> Iterator[tuple[KnownLayout, OCILayout]]:
    """Every known layout that is still the one recorded, opened; streamed."""
    for known in LayoutRegistry(cache.root):
        layout = _open(cache, known)
        if layout is not None:
            yield known, layout


def known_layouts(cache: BlobCache, *, forget_missing: bool = False) -> Iterator[LayoutUsage]:
    """Every record with its ref count; with ``forget_missing`` drop the records of
    layouts that are gone or replaced (a layout that came back is kept)."""
    registry = LayoutRegistry(cache.root)
    for known in registry:
        layout = _open(cache, known)
        refs = None
        if layout is not None:
            try:
                refs = len(layout.refs())
            except HybridstoreError as e:
                log.warning("cannot read the refs of %s: %s", known.path, e)
        forgotten = forget_missing and not known.live and registry.forget(known)
        yield LayoutUsage(known, refs, forgotten)


def _entries(layout: OCILayout) -> list[tuple[str, Any]]:
    """(name, descriptor) of every named ``index.json`` entry."""
    out = []
    for desc in layout.entries():
        names = names_of(desc)
        if names:
            out.append((names[0], desc))
    return out


def where_used(cache: BlobCache, target: str) -> Iterator[Holder]:
    """Every live known layout and ref whose graph holds ``target``: a digest (found
    directly or through an index or manifest), else a ref as ``pull`` spells it."""
    try:
        digest: Digest | None = Digest.parse(target)
    except InvalidDigestError:
        digest = None
    for known, layout in live_layouts(cache):
        try:
            if digest is None:
                yield from _holding_ref(known, layout, target)
                continue
            for name, desc in _entries(layout):
                if digest in reachable(layout, [desc]):
                    yield Holder(known.path, name, desc.digest, digest)
        except HybridstoreError as e:
            log.warning("skipping known layout %s: %s", known.path, e)


def _holding_ref(known: KnownLayout, layout: OCILayout, ref: str) -> Iterator[Holder]:
    try:
        desc = layout.resolve(_spelled_as_stored(ref))
    except NotFoundError:
        return
    names = names_of(desc)
    yield Holder(known.path, names[0] if names else ref, desc.digest, desc.digest)


def _spelled_as_stored(ref: str) -> str:
    """A reference as pull spells it (``oci://``, short) in the full form layouts record."""
    try:
        return str(Reference.parse(ref))
    except InvalidReferenceError:
        return ref  # a bare ref name (a tag a layout holds): resolve decides


def referenced_digests(cache: BlobCache) -> set[str]:
    """Digests (as strings) that some ref of some live known layout reaches. Memory
    grows with what the layouts hold, not with the cache."""
    found: set[str] = set()
    for known, layout in live_layouts(cache):
        try:
            found.update(str(d) for d in reachable(layout, layout.entries()))
        except HybridstoreError as e:
            log.warning("cannot read the graph of %s: %s", known.path, e)
    return found

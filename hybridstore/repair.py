"""Repair that reaches layouts: mend damaged layout blobs, and the layouts that shared
a corrupt cache blob.

A layout blob is mended from the cache when the cache holds a good copy
(re-hashed first), else by pulling again, pinned to the digest the layout
already records, each ref whose graph reaches it (the ref's own name says
which registry and repository). What can be done neither way is reported as
"this layout, these refs need a pull": nothing is guessed.

After ``cache verify --repair`` sets corrupt blobs aside, every live layout
the cache knows that reaches one of them is checked: a good copy in a layout
(reflink and copy modes keep their own bytes) is put back into the cache
first, so the other layouts re-link from it without the network; a layout
whose copy is the corrupt inode itself (hard links) loses it and gets a good
one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridstore.errors import HybridstoreError, NotFoundError
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor, Index
from hybridstore.oci.reference import Reference
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_layouts import live_layouts
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import reachable, verify_layout
from hybridstore.store.layout_refs import names_of

if TYPE_CHECKING:
    from hybridstore.remote.credentials import Credential
    from hybridstore.remote.transport import TransportOptions

__all__ = ["Mend", "Network", "mend_layout", "repair_known_layouts", "repair_layout"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Network:
    """How to reach registries for a re-pull; ``None`` in its place means offline."""

    transport: TransportOptions | None = None
    credential: Credential | None = None


@dataclass
class Mend:
    """What a repair did to one layout."""

    layout: Path
    relinked: list[str] = field(default_factory=list)  # digests re-linked from the cache
    repulled: list[str] = field(default_factory=list)  # refs pulled again
    needs_pull: dict[str, list[str]] = field(default_factory=dict)  # ref -> blobs it lacks

    @property
    def ok(self) -> bool:
        return not self.needs_pull

    def lines(self) -> list[str]:
        """What was done and what is left, one line each, for people."""
        out = []
        if self.relinked or self.repulled:
            out.append(
                f"repaired layout {self.layout}: {len(self.relinked)} blob(s) re-linked from "
                f"the cache, {len(self.repulled)} ref(s) pulled again"
            )
        for ref, blobs in self.needs_pull.items():
            out.append(
                f"layout {self.layout}: ref {ref} needs a pull (lacks {', '.join(blobs)}): "
                f"hybridstore pull --layout {self.layout} {ref}"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": str(self.layout),
            "relinked": self.relinked,
            "repulled": self.repulled,
            "needs_pull": self.needs_pull,
            "ok": self.ok,
        }


def _refs_reaching(
    layout: OCILayout, digests: set[Digest]
) -> dict[str, tuple[Descriptor, set[Digest]]]:
    """name -> (root, which of ``digests`` its graph reaches), for refs reaching any."""
    out: dict[str, tuple[Descriptor, set[Digest]]] = {}
    for desc in layout.entries():
        names = names_of(desc)
        if not names:
            continue
        hit = digests & reachable(layout, [desc]).keys()
        if hit:
            out[names[0]] = (desc, hit)
    return out


def _platforms(layout: OCILayout, root: Descriptor, wanted: set[Digest]) -> list[str]:
    """For an index root: the platforms the layout holds (or lost), so a re-pull takes
    the same children and no others."""
    doc = layout.document(root)
    if not isinstance(doc, Index):
        return []
    return sorted(
        {
            str(child.platform)
            for child in doc.manifests
            if child.platform is not None and (child.digest in wanted or layout.exists(child))
        }
    )


def _repulled(
    layout: OCILayout, name: str, root: Descriptor, lost: set[Digest], net: Network
) -> bool:
    """Pull ``name`` again, pinned to the digest the layout records; whether it worked
    (a bare tag names no registry; the registry may be unreachable)."""
    from hybridstore.pull import pull

    try:
        ref = Reference.parse(name).with_digest(root.digest)
        pull(
            str(ref),
            layout=layout,
            ref_name=name,
            platforms=_platforms(layout, root, lost),
            transport=net.transport,
            credential=net.credential,
        )
    except HybridstoreError as e:
        log.info("cannot pull %s again into %s: %s", name, layout.root, e)
        return False
    return True


def mend_layout(layout: OCILayout, damaged: Iterable[Descriptor], network: Network | None) -> Mend:
    """Put a good copy of each ``damaged`` blob into ``layout`` (see the module docstring)."""
    mend = Mend(layout.root)
    lost: dict[Digest, Descriptor] = {}
    for desc in damaged:
        if layout.holds(desc, rehash=True):  # removes a wrong copy
            continue
        try:
            layout.add_blob_from_cache(desc.digest, desc.size, rehash=True)
        except NotFoundError:
            lost[desc.digest] = desc
            continue
        mend.relinked.append(str(desc.digest))
    if not lost:
        return mend
    for name, (root, hit) in _refs_reaching(layout, set(lost)).items():
        if network is not None and _repulled(layout, name, root, hit, network):
            mend.repulled.append(name)
        else:
            mend.needs_pull[name] = sorted(str(d) for d in hit)
    return mend


def repair_layout(layout: OCILayout, network: Network | None) -> Mend:
    """``layout verify --repair``: mend the blobs verification finds damaged."""
    return mend_layout(layout, verify_layout(layout).damaged, network)


def repair_known_layouts(
    cache: BlobCache, corrupt: Sequence[Digest], network: Network | None
) -> list[Mend]:
    """After corrupt cache blobs were set aside: restore the cache from a good layout
    copy where one exists, then mend every known layout that reaches one of them."""
    wanted = set(corrupt)
    if not wanted:
        return []
    affected: list[tuple[OCILayout, list[Descriptor]]] = []
    for _, layout in live_layouts(cache):
        try:
            graph = reachable(layout, layout.entries())
        except HybridstoreError as e:
            log.warning("cannot read the graph of %s: %s", layout.root, e)
            continue
        descs = [graph[d] for d in wanted if d in graph]
        if not descs:
            continue
        affected.append((layout, descs))
        for desc in descs:
            if cache.hit(desc.digest, desc.size) is None and layout.holds(desc, rehash=True):
                with layout.fetch(desc) as f:  # a layout's own good bytes: verified on ingest
                    cache.ingest_stream(desc.digest, desc.size, f)
                log.info("restored %s into the cache from %s", desc.digest, layout.root)
    return [mend_layout(layout, descs, network) for layout, descs in affected]

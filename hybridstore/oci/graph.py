"""The content graph walk: one traversal for everything that follows a graph.

An index names manifests, a manifest names its config and layers, a manifest or
index may name a ``subject``, and referrers point back at a subject. The copy
engine, layout verify and gc, export and import, and the read-only server all
walk this graph; they differ only in how they read a node (from a registry or a
layout, verified or not) and in which edges they take, so those are the
parameters and the order of the walk is here, once.

The walk is depth first, a parent before its children, children in document
order, each digest once. Referrers come after the graph they hang off, breadth
first, each with its own graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from hybridstore.errors import InvalidInputError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor, Index, Manifest, parse_document

__all__ = ["Node", "Via", "complete_graph", "is_foreign_layer", "walk"]

log = logging.getLogger(__name__)

Via = Literal["root", "child", "subject", "referrer"]


@dataclass(frozen=True)
class Node:
    """One descriptor reached by the walk, and how it was reached."""

    desc: Descriptor
    via: Via
    parent: Descriptor | None = None
    """The document that names it; for a referrer, its subject."""
    optional: bool = False
    """A complete graph may lack it: an index child (a platform-selected pull keeps
    only some), a subject, a foreign (URL) layer. The sparse rule of the image spec."""
    attached: bool = False
    """Inside the graph of a referrer rather than of a root."""
    doc: Manifest | Index | None = None
    """The document that ``visit`` returned for it (``None`` for blobs, and for
    documents that are absent or not followed)."""


Visit = Callable[[Node], "Manifest | Index | None"]
"""Called once per reached descriptor; returns the document to descend into, or
``None`` to stop there. Presence checks, reading and verifying are the caller's."""


def walk(
    roots: Iterable[Descriptor],
    visit: Visit,
    *,
    subjects: bool = True,
    select: Callable[[Index], Sequence[Descriptor]] | None = None,
    referrers: Callable[[Node], Iterable[Descriptor]] | None = None,
    seen: set[Digest] | None = None,
) -> Iterator[Node]:
    """Every node reachable from ``roots``, as ``visit`` saw it.

    ``subjects`` follows ``subject`` links; ``select`` picks the children of an
    index to take (default: all); ``referrers`` names what points back at a node
    (called once per visited node, after the graphs of all roots). ``seen`` is
    the set of digests already walked: pass one to share it between walks.
    """
    seen = set() if seen is None else seen
    reached: list[Node] = []
    for root in roots:
        yield from _descend(Node(root, "root"), visit, subjects, select, seen, reached)
    if referrers is None:
        return
    done = 0
    while done < len(reached):
        node = reached[done]
        done += 1
        for found in referrers(node):
            start = Node(found, "referrer", node.desc, attached=True)
            yield from _descend(start, visit, subjects, select, seen, reached)


def _descend(
    start: Node,
    visit: Visit,
    subjects: bool,
    select: Callable[[Index], Sequence[Descriptor]] | None,
    seen: set[Digest],
    reached: list[Node],
) -> Iterator[Node]:
    stack = [start]
    while stack:
        node = stack.pop()
        if node.desc.digest in seen:
            continue
        seen.add(node.desc.digest)
        doc = visit(node)
        node = replace(node, doc=doc)
        reached.append(node)
        yield node
        if doc is None:
            continue
        is_index = isinstance(doc, Index)
        if isinstance(doc, Index) and select is not None:
            kids = list(select(doc))
        else:
            kids = list(doc.children())
        parent, attached = node.desc, node.attached
        nxt = [Node(k, "child", parent, is_index or is_foreign_layer(k), attached) for k in kids]
        if subjects and doc.subject is not None:
            nxt.append(Node(doc.subject, "subject", parent, True, attached))
        stack.extend(reversed(nxt))


def is_foreign_layer(desc: Descriptor) -> bool:
    """A non-distributable layer served from its URLs, which layouts need not hold."""
    return bool(desc.urls) and desc.media_type in mt.NON_DISTRIBUTABLE_LAYERS


def complete_graph(
    roots: Sequence[tuple[str, Descriptor]],
    present: Callable[[Descriptor], bool],
    read: Callable[[Descriptor], bytes],
    missing: Callable[[str, Descriptor], Exception],
) -> list[Descriptor]:
    """Every present descriptor reachable from the named ``roots``, each digest once:
    what an export writes and an import links.

    Absent content a complete graph needs raises ``missing(ref, desc)``; what the
    sparse rule allows to be absent (``Node.optional``) is skipped. A document that
    fails to parse raises, naming its ref.
    """
    seen: set[Digest] = set()
    found: list[Descriptor] = []
    for ref, root in roots:
        visit = _collector(ref, present, read, missing, found)
        for _ in walk([root], visit, seen=seen):
            pass
    return found


def _collector(
    ref: str,
    present: Callable[[Descriptor], bool],
    read: Callable[[Descriptor], bytes],
    missing: Callable[[str, Descriptor], Exception],
    found: list[Descriptor],
) -> Visit:
    def visit(node: Node) -> Manifest | Index | None:
        desc = node.desc
        if not present(desc):
            if not node.optional:
                raise missing(ref, desc)
            log.info("%s: %s is absent (a sparse layout; allowed)", ref, desc.digest)
            return None
        found.append(desc)
        if not (mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type)):
            return None
        try:
            return parse_document(read(desc), desc.media_type)
        except InvalidInputError as e:
            raise type(e)(f"{ref}: document {desc.digest}: {e}") from None

    return visit

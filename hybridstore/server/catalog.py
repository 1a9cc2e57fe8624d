"""What a set of layouts serves: repositories, tags, content and referrers.

Repository mapping, from each ``index.json`` entry's fullest name
(``io.containerd.image.name``, else ``org.opencontainers.image.ref.name``):

- a full reference is served under its repository path and tag, the registry
  host dropped: ``registry.example.com/charts/app:1.2.3`` is ``charts/app:1.2.3``;
  Docker Hub names keep their normal form (``nginx:1`` is ``library/nginx:1``);
  a digest-only name is served by digest alone.
- a name that is a valid tag (``1.2.3``, ``latest``, as skopeo and umoci write)
  is served as that tag of a repository named after the layout directory (``./site-images`` ->
  ``site-images``, lower-cased, other characters made ``-``).
- collisions (two layouts, or two registries, giving one repository the same
  tag with different content): the first layout given wins, in index.json
  order, and a warning names the loser.

A repository serves exactly the content reachable from its tags (manifests,
configs, layers, index children, subjects), like a registry that had those
tags pushed; its referrers API lists the manifests among that content whose
``subject`` is the digest asked about. ``index.json`` files are re-checked on every request (one
``stat`` each) and the mapping is rebuilt when one changed, so pulling into a
served layout shows up without a restart.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hybridstore.errors import HybridstoreError, InvalidInputError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.graph import Node, walk
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Descriptor, Index, Manifest, parse_document
from hybridstore.oci.reference import Reference, is_valid_tag
from hybridstore.oci.referrers import referrer_descriptor
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_refs import names_of

__all__ = ["Catalog", "Repository", "repository_for"]

log = logging.getLogger(__name__)

_NOT_COMPONENT: Final = re.compile(r"[^a-z0-9]+")


@dataclass
class Repository:
    """One served repository: tags, reachable content, and referrers by subject."""

    name: str
    tags: dict[str, Descriptor] = field(default_factory=dict)
    content: dict[Digest, tuple[OCILayout, Descriptor]] = field(default_factory=dict)
    referrers: dict[Digest, dict[Digest, Descriptor]] = field(default_factory=dict)


def _directory_repository(root: Path) -> str:
    """A repository name from a layout directory's name (for bare-tag refs)."""
    name = _NOT_COMPONENT.sub("-", root.absolute().name.lower()).strip("-")
    return name or "layout"


def repository_for(name: str, layout_root: Path) -> tuple[str, str | None]:
    """``(repository, tag or None)`` a ref name is served as (see the module docstring).

    Raises ``InvalidReferenceError`` for a name that maps to nothing.
    """
    if is_valid_tag(name):
        return _directory_repository(layout_root), name
    ref = Reference.parse(name)
    return ref.repository, ref.tag


class Catalog:
    """What a set of layouts serves; rebuilt when one of their ``index.json`` files changes."""

    def __init__(self, layouts: Sequence[OCILayout]) -> None:
        self.layouts = list(layouts)
        self._lock = threading.Lock()
        self._signature: tuple[tuple[int, int, int], ...] | None = None
        self._repos: dict[str, Repository] = {}

    def _current_signature(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for layout in self.layouts:
            try:
                st = os.stat(layout.index_path)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((0, 0, 0))
        return tuple(out)

    def repositories(self) -> dict[str, Repository]:
        """The current mapping (re-read first if any ``index.json`` changed)."""
        with self._lock:
            signature = self._current_signature()
            if signature != self._signature:
                self._repos = _build(self.layouts)
                self._signature = signature
            return self._repos


def _build(layouts: Sequence[OCILayout]) -> dict[str, Repository]:
    repos: dict[str, Repository] = {}
    for layout in layouts:
        try:
            entries = layout.entries()
        except HybridstoreError as e:
            log.warning("not serving %s: %s", layout.root, e)
            continue
        docs: dict[Digest, Manifest | Index | None] = {}
        for desc in entries:
            names = names_of(desc)
            if not names:
                continue
            try:
                repo_name, tag = repository_for(names[0], layout.root)
            except InvalidInputError as e:
                log.warning("not serving %r from %s: %s", names[0], layout.root, e)
                continue
            repo = repos.setdefault(repo_name, Repository(repo_name))
            if tag is not None:
                old = repo.tags.get(tag)
                if old is not None:
                    if old.digest != desc.digest:
                        log.warning(
                            "%s:%s is served from an earlier layout (%s); %s in %s is hidden",
                            repo_name, tag, old.digest, names[0], layout.root,
                        )  # fmt: skip
                    continue
                repo.tags[tag] = desc
            _add_graph(repo, layout, desc, docs)
    return repos


def _add_graph(
    repo: Repository,
    layout: OCILayout,
    root: Descriptor,
    docs: dict[Digest, Manifest | Index | None],
) -> None:
    """Record everything present and reachable from ``root``, and who refers to what."""

    def visit(node: Node) -> Manifest | Index | None:
        desc = node.desc
        if not layout.exists(desc):
            return None
        repo.content[desc.digest] = (layout, desc)
        if not (mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type)):
            return None
        if desc.digest not in docs:
            docs[desc.digest] = _document(layout, desc)
        doc = docs[desc.digest]
        if doc is not None and doc.subject is not None:
            referrers = repo.referrers.setdefault(doc.subject.digest, {})
            referrers[desc.digest] = referrer_descriptor(desc, doc)
        return doc

    for _ in walk([root], visit, seen=set(repo.content)):
        pass


def _document(layout: OCILayout, desc: Descriptor) -> Manifest | Index | None:
    try:
        return parse_document(layout.read_blob(desc, MAX_DOCUMENT_BYTES), desc.media_type)
    except HybridstoreError as e:
        log.warning("serving %s from %s as an opaque blob: %s", desc.digest, layout.root, e)
        return None

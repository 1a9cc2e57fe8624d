"""The last step of a sync: name what was fetched, remove what sync created and the
file no longer lists, and build the new lock.

Everything is checked before anything is written: a layout ref that the lock does
not own (tagged by hand) and that points elsewhere stops the sync with nothing
changed. Then each layout gets one ``index.json`` transaction (tags and untags
together) and each chart archive is written atomically. A stale ref is removed only
when sync created it (``owned`` in the lock) and it still points at the locked
digest; anything else is left alone and reported as ``kept``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hybridstore.errors import ConflictError, NotFoundError, StorageError
from hybridstore.fs.files import atomic_write_bytes
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.project.lockfile import Lock, LockedChart, LockedRef
from hybridstore.project.plan import ChartEntry
from hybridstore.project.projectfile import Project, RefEntry
from hybridstore.project.report import SyncItem
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout

__all__ = ["FetchedChart", "PulledRef", "commit"]

log = logging.getLogger("hybridstore.sync")


@dataclass(frozen=True)
class PulledRef:
    """An entry whose whole graph is in its layout (and the cache), not yet named."""

    entry: RefEntry
    root: Descriptor
    platforms: tuple[str, ...]
    blobs_fetched: int
    bytes_transferred: int


@dataclass(frozen=True)
class FetchedChart:
    """A Helm dependency whose manifest and archive are in the cache, not yet written."""

    entry: ChartEntry
    root: Descriptor
    archive: Descriptor
    blobs_fetched: int
    bytes_transferred: int


@dataclass
class _LayoutChange:
    layout: OCILayout
    tags: list[tuple[Descriptor, str]] = field(default_factory=list)
    untags: list[tuple[Descriptor, str]] = field(default_factory=list)


def commit(
    project: Project,
    old: Lock,
    pulled: list[PulledRef],
    stale_refs: list[LockedRef],
    charts: list[FetchedChart],
    stale_charts: list[LockedChart],
    layout_for: Callable[[str], OCILayout | None],
    cache: BlobCache,
) -> tuple[Lock, list[SyncItem]]:
    """Apply the sync; the new lock (for the caller to write last) and what happened."""
    new = Lock()
    items: list[SyncItem] = []
    changes: dict[str, _LayoutChange] = {}
    refs_now: dict[str, dict[str, Descriptor]] = {}

    def current(layout_key: str) -> dict[str, Descriptor] | None:
        if layout_key not in refs_now:
            layout = layout_for(layout_key)
            if layout is None:
                return None
            changes[layout_key] = _LayoutChange(layout)
            refs_now[layout_key] = layout.refs()
        return refs_now[layout_key]

    for p in pulled:
        e = p.entry
        present = (current(e.layout) or {}).get(e.name)
        was = old.refs.get(e.key)
        owned_before = was is not None and was.owned
        if present is not None and present.digest != p.root.digest and not owned_before:
            raise ConflictError(
                f"{e.position}: layout {e.layout!r} already has {e.name!r} -> {present.digest}, "
                "not created by sync; untag it (`hybridstore untag`) or give the entry "
                "another 'ref-name' (nothing was changed)"
            )
        changes[e.layout].tags.append((p.root, e.name))
        locked = LockedRef(
            e.layout, e.name, e.request(), p.root, p.platforms, owned_before or present is None
        )
        new.refs[locked.key] = locked
        if present is None:
            action = "added"
        else:
            action = "unchanged" if present.digest == p.root.digest else "updated"
        items.append(
            SyncItem(
                "ref",
                f"{e.layout} {e.name}",
                str(e.ref),
                str(p.root.digest),
                action,
                p.blobs_fetched,
                p.bytes_transferred,
            )
        )
    for r in stale_refs:
        present = (current(r.layout) or {}).get(r.name)
        target = f"{r.layout} {r.name}"
        if present is None:
            continue
        if r.owned and present.digest == r.descriptor.digest:
            changes[r.layout].untags.append((r.descriptor, r.name))
            items.append(SyncItem("ref", target, r.ref, str(r.descriptor.digest), "removed"))
        else:
            items.append(SyncItem("ref", target, r.ref, str(present.digest), "kept"))
    chart_writes = [(c, project.resolve_path(c.entry.file)) for c in charts]
    for change in changes.values():
        if change.tags or change.untags:
            change.layout.tag_many(change.tags, untag=change.untags)
    for c, path in chart_writes:
        action = _write_chart(path, c.archive, cache)
        locked_chart = LockedChart(
            c.entry.chart,
            c.entry.dep.name,
            c.entry.dep.version,
            c.entry.dep.repository,
            str(c.entry.ref),
            c.root,
            c.archive,
        )
        new.charts[locked_chart.key] = locked_chart
        items.append(
            SyncItem(
                "chart",
                c.entry.file,
                str(c.entry.ref),
                str(c.root.digest),
                action,
                c.blobs_fetched,
                c.bytes_transferred,
            )
        )
    written = {str(p) for _, p in chart_writes}
    for s in stale_charts:
        path = project.resolve_path(s.file)
        if str(path) not in written and _remove_chart(path, s.archive):
            items.append(SyncItem("chart", s.file, s.ref, str(s.descriptor.digest), "removed"))
    return new, items


def _file_digest(path: Path) -> Digest | None:
    try:
        with open(path, "rb") as f:
            return Digest.of_file(f)[0]
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror}") from e


def _write_chart(path: Path, archive: Descriptor, cache: BlobCache) -> str:
    """Write the archive's exact bytes (what ``helm dependency build`` writes) to ``path``."""
    before = _file_digest(path)
    if before == archive.digest:
        return "unchanged"
    if not cache.exists(archive.digest, archive.size):
        raise NotFoundError(f"{archive.digest} vanished from the cache (pruned?); sync again")
    with cache.open(archive.digest) as f:
        data = f.read()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror}") from e
    return "added" if before is None else "updated"


def _remove_chart(path: Path, archive: Descriptor) -> bool:
    """Remove a chart archive sync wrote, unless it was changed since."""
    if _file_digest(path) != archive.digest:
        return False
    try:
        path.unlink()
    except OSError as e:
        log.warning("could not remove %s: %s", path, e.strerror)
        return False
    return True

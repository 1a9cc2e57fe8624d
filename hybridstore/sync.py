"""``hybridstore.sync``: make a project's layouts and Helm dependencies match
``hybridstore.yaml``, pinned by ``hybridstore.lock``, in one process.

Example::

    from hybridstore.sync import sync
    result = sync("hybridstore.yaml")                 # resolve new entries, pull, lock
    sync("hybridstore.yaml", locked=True, offline=True)  # CI / air gap: lock + cache only

Steps: read the file and the lock; plan (``project.plan``): locked entries keep their
digest, new or changed ones are resolved, all in parallel on one HTTP pool; pull every
graph through the shared cache into its layout without naming it; then commit
(``project.commit``): check, tag and untag in one transaction per layout, write chart
archives, and write the lock last. A failure before the commit changes no ref, no
chart file and not the lock. Two syncs of one project take turns on
``hybridstore.lock.lock``; syncs of different projects share the cache, where each
blob is fetched once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from hybridstore.errors import (
    ConflictError,
    HybridstoreError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from hybridstore.fs.locking import FileLock, acquire_visibly
from hybridstore.oci.helm import chart_layers, is_chart
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Descriptor, Index, Manifest, parse_document
from hybridstore.oci.platforms import select_platforms
from hybridstore.oci.reference import Reference
from hybridstore.project.commit import FetchedChart, PulledRef, commit
from hybridstore.project.lockfile import Lock, read_lock, write_lock
from hybridstore.project.plan import ChartEntry, Plan, make_plan
from hybridstore.project.projectfile import Project, RefEntry, load_project
from hybridstore.project.report import SyncItem, SyncResult
from hybridstore.project.yamldoc import Position
from hybridstore.remote.credentials import Credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.copier import Copier
from hybridstore.transfer.endpoint import Progress
from hybridstore.transfer.engine import copy_graph
from hybridstore.transfer.layout_endpoint import LayoutDestination
from hybridstore.transfer.pinned_endpoint import PinnedSource
from hybridstore.transfer.registry_endpoint import RegistrySource
from hybridstore.transfer.settings import copy_options

__all__ = ["PROJECT_LOCK_SUFFIX", "SyncResult", "sync"]

log = logging.getLogger("hybridstore.sync")

PROJECT_LOCK_SUFFIX = ".lock"
"""The project lock is ``hybridstore.lock`` + this, beside the lock file."""


def sync(
    project_file: str | os.PathLike[str] | None = None,
    *,
    update: Sequence[str] | None = None,
    locked: bool = False,
    offline: bool = False,
    dry_run: bool = False,
    cache: str | os.PathLike[str] | BlobCache | None = None,
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    concurrency: int = 8,
    link_mode: LinkMode | str | None = None,
    manifest_limit: int = MAX_DOCUMENT_BYTES,
    progress: Progress | None = None,
) -> SyncResult:
    """Sync the project of ``project_file`` (default ``./hybridstore.yaml``).

    ``update``: ``None`` keeps locked digests; ``()`` re-resolves every entry; refs
    re-resolve those. ``locked``: a lock that does not cover the file is a
    ``ConflictError`` and the lock is never written. ``offline``: no socket is
    opened; what the lock and the cache do not hold is one ``NotFoundError``.
    ``dry_run``: plan only (no network, no writes).
    """
    started = time.monotonic()
    if locked and update is not None:
        raise InvalidInputError("--locked and --update exclude each other; drop one")
    project = load_project(project_file)
    result = SyncResult(str(project.file), str(project.lock_path), dry_run)
    with contextlib.nullcontext() if dry_run else _project_locked(project):
        old = read_lock(project.lock_path)
        if locked and old is None:
            raise ConflictError(
                f"--locked: there is no {project.lock_path.name} beside {project.file}; "
                "run `hybridstore sync` and commit the lock"
            )
        plan = make_plan(project, old, update)
        result.left_to_helm = plan.left_to_helm
        _check_mode(plan, locked, offline)
        if dry_run:
            result.items = _dry_run_items(plan)
        else:
            mode = link_mode if link_mode is not None else project.link_mode
            with Copier(
                cache=cache,
                transport=transport,
                credential=credential,
                concurrency=concurrency,
                link_mode=mode,
                manifest_limit=manifest_limit,
                progress=progress,
            ) as copier:
                new_lock, result.items = _Sync(project, plan, copier, offline).run(old)
            result.lock_written = not locked and write_lock(project.lock_path, new_lock)
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def _project_locked(project: Project) -> Iterator[None]:
    """Hold the project's lock file; a second sync of the project waits, saying so."""
    path = project.lock_path.with_name(project.lock_path.name + PROJECT_LOCK_SUFFIX)
    lock = FileLock(path)
    try:
        if not lock.try_acquire():
            log.warning("waiting for another sync of %s (lock %s)", project.file, path)
            acquire_visibly(lock, f"the sync of {project.file}", path, log)
    except OSError as e:
        if isinstance(e, HybridstoreError):
            raise
        raise StorageError(f"cannot lock {path}: {e.strerror or e}") from e
    try:
        yield
    finally:
        lock.release()


def _check_mode(plan: Plan, locked: bool, offline: bool) -> None:
    """``--locked``: the lock covers the file exactly; ``--offline``: nothing to resolve."""
    unresolved = plan.unresolved
    if locked and (unresolved or plan.stale):
        parts = []
        if unresolved:
            parts.append("not locked (new or changed): " + ", ".join(unresolved))
        if plan.stale:
            parts.append("locked but no longer listed: " + ", ".join(plan.stale))
        raise ConflictError(
            f"--locked: the lock does not match the project file; {'; '.join(parts)}; "
            "run `hybridstore sync` and commit hybridstore.lock"
        )
    if offline and unresolved:
        raise NotFoundError(
            "--offline: not in the lock, so they would need the registry: "
            + ", ".join(unresolved)
            + "; run `hybridstore sync` online once"
        )


def _dry_run_items(plan: Plan) -> list[SyncItem]:
    items = []
    for e, lr in plan.refs:
        digest = str(lr.descriptor.digest) if lr else ""
        target = f"{e.layout} {e.name}"
        items.append(SyncItem("ref", target, str(e.ref), digest, "locked" if lr else "resolve"))
    for c, lc in plan.charts:
        digest = str(lc.descriptor.digest) if lc else ""
        items.append(SyncItem("chart", c.file, str(c.ref), digest, "locked" if lc else "resolve"))
    for r in plan.stale_refs:
        target = f"{r.layout} {r.name}"
        items.append(SyncItem("ref", target, r.ref, str(r.descriptor.digest), "remove"))
    for s in plan.stale_charts:
        items.append(SyncItem("chart", s.file, s.ref, str(s.descriptor.digest), "remove"))
    return items


def _with_position(e: HybridstoreError, where: Position, ref: Reference) -> HybridstoreError:
    """The same error, its message starting with the entry's place in the project file."""
    try:
        return type(e)(f"{where}: {ref}: {e}")
    except TypeError:  # an error class with another constructor: keep it as it is
        return e


class _Sync:
    """One sync's work after planning: resolve, fetch, commit, on one ``Copier``
    (its cache, registry clients and worker pools; offline, its clients stay unused)."""

    def __init__(self, project: Project, plan: Plan, copier: Copier, offline: bool) -> None:
        self.project = project
        self.plan = plan
        self.copier = copier
        self.cache = copier.cache
        self.offline = offline
        self.layouts: dict[str, OCILayout] = {}
        self.created: list[str] = []
        """Keys of the layouts whose directories this sync created."""

    def source(self, ref: Reference, root: Descriptor, layout: str | None) -> PinnedSource:
        """``root`` from the cache, the entry's layout if it exists, else the registry."""
        remote = None
        if not self.offline:
            repo = self.copier.clients.repository(ref, self.copier.manifest_limit)
            remote = RegistrySource(repo, self.cache)
        local = self._existing_layout(layout) if layout is not None else None
        return PinnedSource(str(ref), root, self.cache, remote, local)

    def run(self, old: Lock | None) -> tuple[Lock, list[SyncItem]]:
        """Resolve, fetch and commit; undo new empty layouts if anything fails."""
        roots = iter(self._resolve())
        ref_jobs = [(e, lr.descriptor if lr else next(roots)) for e, lr in self.plan.refs]
        chart_jobs = [(c, lc.descriptor if lc else next(roots)) for c, lc in self.plan.charts]
        pulled: list[PulledRef] = []
        charts: list[FetchedChart] = []
        missing: list[str] = []
        try:
            for e, root in ref_jobs:
                try:
                    pulled.append(self._pull(e, root, self.source(e.ref, root, e.layout)))
                except HybridstoreError as err:
                    missing.append(self._failed(err, e.position, e.ref))
            for c, root in chart_jobs:
                try:
                    charts.append(self._fetch_chart(c, root, self.source(c.ref, root, None)))
                except HybridstoreError as err:
                    missing.append(self._failed(err, c.position, c.ref))
            if missing:
                raise NotFoundError(
                    f"--offline: the cache lacks {len(missing)} entr"
                    f"{'y' if len(missing) == 1 else 'ies'} of the lock: {'; '.join(missing)}; "
                    "run `hybridstore sync` online once (nothing was changed)"
                )
            return commit(
                self.project,
                old or Lock(),
                pulled,
                self.plan.stale_refs,
                charts,
                self.plan.stale_charts,
                self._existing_layout,
                self.cache,
            )
        except BaseException:
            self._undo_created()
            raise

    def _failed(self, err: HybridstoreError, where: Position, ref: Reference) -> str:
        """Offline, what the cache lacks is collected (and reported together); any other
        failure stops the sync, named with the entry's place in the project file."""
        if self.offline and isinstance(err, NotFoundError):
            return str(err)
        raise _with_position(err, where, ref) from err

    def _resolve(self) -> list[Descriptor]:
        """The descriptors of every entry the lock does not pin, resolved in parallel."""
        targets = [(e.ref, e.position) for e, lr in self.plan.refs if lr is None]
        targets += [(c.ref, c.position) for c, lc in self.plan.charts if lc is None]
        if not targets:
            return []
        assert not self.offline  # _check_mode refused --offline with entries to resolve
        limit = self.copier.manifest_limit
        repos = [self.copier.clients.repository(ref, limit) for ref, _ in targets]

        def one(i: int) -> Descriptor:
            ref, where = targets[i]
            try:
                return repos[i].resolve(ref.reference)
            except HybridstoreError as e:
                raise _with_position(e, where, ref) from e

        workers = max(1, min(self.copier.options.concurrency, len(targets)))
        with ThreadPoolExecutor(workers, thread_name_prefix="resolve") as pool:
            return list(pool.map(one, range(len(targets))))

    def _pull(self, e: RefEntry, root: Descriptor, src: PinnedSource) -> PulledRef:
        """The entry's graph into its layout through the cache, not named yet."""
        options = copy_options(
            {
                "platforms": e.platforms,
                "all_platforms": e.all_platforms,
                "concurrency": self.copier.options.concurrency,
                "include_referrers": e.include_referrers,
                "referrer_types": e.referrer_types,
            }
        )
        doc = parse_document(src.document(root), root.media_type)
        taken: tuple[str, ...] = ()
        if isinstance(doc, Index):
            chosen = select_platforms(doc, options.platforms, options.all_platforms)
            taken = tuple(str(d.platform) for d in chosen if d.platform is not None)
        dst = LayoutDestination(self._layout(e.layout), e.name, tag_root=False)
        result = copy_graph(
            src,
            str(root.digest),
            dst,
            options,
            self.copier.progress,
            self.copier.pools,
            reference=str(e.ref),
        )
        return PulledRef(e, root, taken, result.fetched, result.bytes_transferred)

    def _fetch_chart(self, c: ChartEntry, root: Descriptor, src: PinnedSource) -> FetchedChart:
        """The dependency's chart manifest and archive into the cache."""
        raw = src.document(root)
        doc = parse_document(raw, root.media_type)
        if not isinstance(doc, Manifest) or not is_chart(doc):
            raise InvalidInputError(
                f"{c.position}: {c.ref} (dependency {c.dep.name} of {c.chart}) is not a Helm chart"
            )
        archive, _ = chart_layers(doc)
        fetched = src.was_fetched(root)
        count, nbytes = int(fetched), len(raw) if fetched else 0
        if not self.cache.exists(archive.digest, archive.size):
            blob = src.blob_source(archive, self.copier.progress or Progress())
            res = self.cache.ingest(archive.digest, archive.size, blob)
            count, nbytes = count + int(res.fetched), nbytes + res.bytes_transferred
        return FetchedChart(c, root, archive, count, nbytes)

    def _layout(self, key: str) -> OCILayout:
        layout = self.layouts.get(key)
        if layout is None:
            root = self.project.resolve_path(key)
            if not root.exists():
                self.created.append(key)
            layout = OCILayout.open_or_create(
                root, cache=self.cache, link_mode=self.copier.link_mode
            )
            self.layouts[key] = layout
        return layout

    def _existing_layout(self, key: str) -> OCILayout | None:
        """The layout ``key`` if it exists already: an entry's documents may be read from
        it, and the commit reads the layouts of stale refs, which this sync may not open."""
        if key not in self.layouts:
            try:
                self.layouts[key] = OCILayout.open(
                    self.project.resolve_path(key),
                    cache=self.cache,
                    link_mode=self.copier.link_mode,
                )
            except NotFoundError:
                return None
        return self.layouts[key]

    def _undo_created(self) -> None:
        """Remove the layout directories this sync created, if it failed before naming."""
        for key in self.created:
            root = self.project.resolve_path(key)
            try:
                if key not in self.layouts or not self.layouts[key].entries():
                    shutil.rmtree(root)
            except (OSError, HybridstoreError) as e:
                log.warning("could not remove the unfinished layout %s: %s", root, e)

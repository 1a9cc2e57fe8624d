"""What a sync has to do: each entry of the project file against the lock.

An entry whose request (ref and options) is in the lock keeps its locked digest,
even when the tag has moved since: reproducible by default, as ``npm ci`` and
``uv sync`` are. New or changed entries, and those named by ``--update``, are
resolved again; lock entries the file no longer lists are stale. The plan is pure:
it reads the chart directories' Helm files but touches no network and no layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hybridstore.errors import InvalidInputError
from hybridstore.oci.reference import Reference
from hybridstore.project.helmdeps import HelmDependency, read_dependencies
from hybridstore.project.lockfile import Lock, LockedChart, LockedRef
from hybridstore.project.projectfile import Project, RefEntry
from hybridstore.project.yamldoc import Position

__all__ = ["ChartEntry", "Plan", "make_plan"]


@dataclass(frozen=True)
class ChartEntry:
    """An ``oci://`` dependency of a chart listed under ``helm:``."""

    chart: str
    dep: HelmDependency
    position: Position

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.chart, self.dep.name, self.dep.version, self.dep.repository

    @property
    def ref(self) -> Reference:
        return Reference.parse(self.dep.ref)

    @property
    def file(self) -> str:
        return f"{self.chart}/charts/{self.dep.filename}"


@dataclass
class Plan:
    refs: list[tuple[RefEntry, LockedRef | None]] = field(default_factory=list)
    """Each entry with its lock entry, or ``None`` when it must be resolved."""
    charts: list[tuple[ChartEntry, LockedChart | None]] = field(default_factory=list)
    stale_refs: list[LockedRef] = field(default_factory=list)
    stale_charts: list[LockedChart] = field(default_factory=list)
    left_to_helm: list[str] = field(default_factory=list)
    """Dependencies from other repositories than ``oci://``, for helm to fetch."""

    @property
    def unresolved(self) -> list[str]:
        """The entries that need the registry: new, changed or to update."""
        return [str(e.ref) for e, locked in self.refs if locked is None] + [
            f"{c.dep.ref} (dependency of {c.chart})" for c, locked in self.charts if locked is None
        ]

    @property
    def stale(self) -> list[str]:
        return [f"{r.ref} in {r.layout}" for r in self.stale_refs] + [
            c.file for c in self.stale_charts
        ]


def _chart_entries(project: Project, plan: Plan) -> list[ChartEntry]:
    out = []
    for chart in project.charts:
        display = f"{chart.position}: helm chart {chart.path!r}"
        for dep in read_dependencies(project.resolve_path(chart.path), display):
            if dep.is_oci:
                out.append(ChartEntry(chart.path, dep, chart.position))
            else:
                where = dep.repository or "charts/ (local)"
                plan.left_to_helm.append(f"{chart.path}: {dep.name} {dep.version} from {where}")
    return out


def _selected(update: Sequence[str] | None, names: set[str]) -> bool:
    return update is not None and (not update or bool(names.intersection(update)))


def _normalised(arg: str) -> str:
    try:
        return str(Reference.parse(arg))
    except InvalidInputError:
        return arg


def make_plan(project: Project, lock: Lock | None, update: Sequence[str] | None = None) -> Plan:
    """Compare ``project`` with ``lock``. ``update``: ``None`` keeps locked digests,
    empty re-resolves everything, else the entries with these refs (or ref names)."""
    lock = lock or Lock()
    wanted = [_normalised(u) for u in update] if update else update
    plan = Plan()
    used: set[str] = set()
    for entry in project.refs:
        names = {str(entry.ref), entry.name}
        old = lock.refs.get(entry.key)
        fresh = old is not None and old.request == entry.request()
        selected = _selected(wanted, names)
        used |= names if selected else set()
        plan.refs.append((entry, old if fresh and not selected else None))
    for chart in _chart_entries(project, plan):
        names = {str(chart.ref), chart.dep.name}
        old_chart = lock.charts.get(chart.key)
        selected = _selected(wanted, names)
        used |= names if selected else set()
        plan.charts.append((chart, None if selected else old_chart))
    if wanted:
        unknown = [u for u in wanted if u not in used]
        if unknown:
            raise InvalidInputError(
                f"--update {unknown[0]}: no entry of {project.file} has that ref or ref name"
            )
    listed = {e.key for e in project.refs}
    plan.stale_refs = [r for k, r in sorted(lock.refs.items()) if k not in listed]
    charted = {c.key for c, _ in plan.charts}
    plan.stale_charts = [c for k, c in sorted(lock.charts.items()) if k not in charted]
    return plan

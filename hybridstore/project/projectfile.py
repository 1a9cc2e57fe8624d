"""``hybridstore.yaml``: the refs a project keeps and the Helm charts whose dependencies
to fill, validated by the bundled JSON Schema with every problem placed at
``file:line:column``.

The schema checks shape and key names; this module adds what a schema cannot: refs
and platforms that parse, no entry twice, and no two entries writing the same name
into one layout. A problem is an ``InvalidInputError`` naming the first one (by
position) and how many more there are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hybridstore.errors import InvalidInputError
from hybridstore.oci.model import Platform
from hybridstore.oci.reference import Reference
from hybridstore.oci.schema import schema_validator
from hybridstore.project.yamldoc import PathKey, Position, YamlDocument, load_yaml

__all__ = [
    "DEFAULT_LAYOUT",
    "LOCK_FILE",
    "PROJECT_FILE",
    "ChartDir",
    "Project",
    "RefEntry",
    "load_project",
]

PROJECT_FILE: Final = "hybridstore.yaml"
LOCK_FILE: Final = "hybridstore.lock"
DEFAULT_LAYOUT: Final = "oci"
_SCHEMA: Final = "hybridstore-project.json"


@dataclass(frozen=True)
class RefEntry:
    """One ``refs:`` entry: what to pull, into which layout, under which name."""

    ref: Reference
    layout: str
    """The layout directory as the lock records it: relative to the project, normalised."""
    name: str
    """The ref name in the layout's ``index.json`` (default: the full reference)."""
    platforms: tuple[str, ...]
    all_platforms: bool
    include_referrers: bool
    referrer_types: tuple[str, ...]
    position: Position

    @property
    def key(self) -> tuple[str, str]:
        return self.layout, self.name

    def request(self) -> dict[str, Any]:
        """What the entry asks for, as the lock records it: a change means re-resolving."""
        return {
            "ref": str(self.ref),
            "platforms": list(self.platforms),
            "all-platforms": self.all_platforms,
            "include-referrers": self.include_referrers,
            "referrer-types": list(self.referrer_types),
        }


@dataclass(frozen=True)
class ChartDir:
    """One ``helm:`` entry: a chart directory whose ``oci://`` dependencies to fill."""

    path: str
    position: Position


@dataclass(frozen=True)
class Project:
    file: Path
    root: Path
    refs: tuple[RefEntry, ...]
    charts: tuple[ChartDir, ...]
    link_mode: str | None

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    def resolve_path(self, relative: str) -> Path:
        """A path of the lock or the file (a layout, a chart) as a real path."""
        return self.root / relative


def load_project(file: str | os.PathLike[str] | None = None) -> Project:
    """Read and check the project file (default ``./hybridstore.yaml``)."""
    path = Path(file) if file is not None else Path(PROJECT_FILE)
    doc = load_yaml(path, str(path))
    data = {} if doc.data is None else doc.data
    _check_schema(doc, data)
    root = path.resolve().parent
    default_layout = _norm(data.get("layout", DEFAULT_LAYOUT))
    refs = tuple(
        _entry(doc, item, i, default_layout) for i, item in enumerate(data.get("refs", []))
    )
    charts = tuple(
        ChartDir(_norm(p), doc.at(("helm", i))) for i, p in enumerate(data.get("helm", []))
    )
    _check_unique(refs, charts)
    return Project(path, root, refs, charts, data.get("link-mode"))


def _norm(path: str) -> str:
    return Path(os.path.normpath(path)).as_posix()


def _check_schema(doc: YamlDocument, data: Any) -> None:
    problems: list[tuple[Position, str]] = []
    for error in schema_validator(_SCHEMA).iter_errors(data):
        path: PathKey = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            schema = error.schema if isinstance(error.schema, Mapping) else {}
            allowed = set(schema.get("properties", {}))
            for key in sorted(set(error.instance) - allowed, key=str):
                where = doc.at((*path, str(key)), key=True)
                known = ", ".join(sorted(allowed))
                problems.append((where, f"unknown key {key!r} (known here: {known})"))
            continue
        where = doc.at(path)
        problems.append((where, f"{_dotted(path)}: {_message(error)}"))
    _raise_first(problems)


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "the file"


def _message(error: Any) -> str:
    if error.validator == "pattern":
        return f"{error.instance!r} is not {error.schema.get('description', 'valid')}"
    if error.validator == "required":
        return f"{error.message}; an entry written as a mapping needs 'ref'"
    text = str(error.message)
    return text if len(text) <= 160 else text[:157] + "..."


def _raise_first(problems: list[tuple[Position, str]]) -> None:
    if not problems:
        return
    problems.sort(key=lambda p: (p[0].line, p[0].column))
    where, text = problems[0]
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    raise InvalidInputError(f"{where}: {text}{more}")


def _entry(doc: YamlDocument, item: Any, i: int, default_layout: str) -> RefEntry:
    spec: dict[str, Any] = {"ref": item} if isinstance(item, str) else dict(item)
    at = ("refs", i) if isinstance(item, str) else ("refs", i, "ref")
    try:
        ref = Reference.parse(spec["ref"])
    except InvalidInputError as e:
        raise InvalidInputError(f"{doc.at(at)}: {e}") from None
    platforms = tuple(spec.get("platforms", ()))
    for j, text in enumerate(platforms):
        try:
            Platform.parse(text)
        except InvalidInputError as e:
            raise InvalidInputError(f"{doc.at(('refs', i, 'platforms', j))}: {e}") from None
    if platforms and spec.get("all-platforms"):
        raise InvalidInputError(
            f"{doc.at(('refs', i, 'all-platforms'), key=True)}: 'platforms' and "
            "'all-platforms' exclude each other; keep one"
        )
    return RefEntry(
        ref=ref,
        layout=_norm(spec.get("layout", default_layout)),
        name=spec.get("ref-name") or str(ref),
        platforms=platforms,
        all_platforms=bool(spec.get("all-platforms", False)),
        include_referrers=bool(spec.get("include-referrers", False))
        or bool(spec.get("referrer-types")),
        referrer_types=tuple(spec.get("referrer-types", ())),
        position=doc.at(("refs", i)),
    )


def _check_unique(refs: tuple[RefEntry, ...], charts: tuple[ChartDir, ...]) -> None:
    seen: dict[tuple[str, str], RefEntry] = {}
    for entry in refs:
        first = seen.setdefault(entry.key, entry)
        if first is entry:
            continue
        if first.request() == entry.request():
            raise InvalidInputError(
                f"{entry.position}: duplicate entry {str(entry.ref)!r} (first at line "
                f"{first.position.line}); remove one"
            )
        raise InvalidInputError(
            f"{entry.position}: conflict: this entry and line {first.position.line} both "
            f"write ref {entry.name!r} into layout {entry.layout!r}; give one a 'ref-name' "
            "or another 'layout'"
        )
    chart_seen: dict[str, ChartDir] = {}
    for chart in charts:
        first_chart = chart_seen.setdefault(chart.path, chart)
        if first_chart is not chart:
            raise InvalidInputError(
                f"{chart.position}: duplicate helm chart {chart.path!r} (first at line "
                f"{first_chart.position.line}); remove one"
            )

"""A Helm chart's dependencies as ``helm dependency build`` reads them.

``Chart.lock`` wins (it pins exact versions; ``requirements.lock`` for ``apiVersion:
v1`` charts) while it lists the same dependencies as ``Chart.yaml`` (Helm compares a
digest of both; names are what can be checked without Go's JSON encoding); without
one, ``Chart.yaml``'s ``dependencies`` are used when every version is exact, as
``build`` never resolves a range. An ``oci://`` dependency is
pulled from ``<repository>/<name>:<version>`` with Helm's tag rule (``+`` becomes
``_``, OCI tags have no ``+``) and written as ``charts/<name>-<version>.tgz``, the name
keeping the ``+`` as Helm's does. Other repositories (``https://``, ``@alias``,
``file://``) are left to helm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from hybridstore.errors import InvalidInputError
from hybridstore.fs.safepath import check_component
from hybridstore.project.yamldoc import load_plain

__all__ = ["HelmDependency", "read_dependencies"]

# Semantic version 2.0.0, with Helm's optional leading "v": anything else is a range.
_EXACT: Final = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)


@dataclass(frozen=True)
class HelmDependency:
    name: str
    version: str
    repository: str

    @property
    def is_oci(self) -> bool:
        return self.repository.startswith("oci://")

    @property
    def ref(self) -> str:
        """``<repository>/<name>:<version>``, ``+`` written ``_`` in the tag."""
        base = self.repository.removeprefix("oci://").rstrip("/")
        return f"{base}/{self.name}:{self.version.replace('+', '_')}"

    @property
    def filename(self) -> str:
        return check_component(f"{self.name}-{self.version}.tgz", "chart dependency file name")


def _load(path: Path) -> Any:
    try:
        return load_plain(path.read_bytes())
    except yaml.YAMLError as e:
        raise InvalidInputError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise InvalidInputError(f"cannot read {path}: {e.strerror}") from None


def read_dependencies(chart_dir: Path, display: str) -> list[HelmDependency]:
    """The dependencies of the chart at ``chart_dir`` (``display`` names it in messages)."""
    chart_yaml = chart_dir / "Chart.yaml"
    if not chart_yaml.is_file():
        raise InvalidInputError(f"{display}: no Chart.yaml in {chart_dir}; is it a Helm chart?")
    chart = _load(chart_yaml)
    legacy = isinstance(chart, dict) and chart.get("apiVersion") == "v1"
    lock_file = chart_dir / ("requirements.lock" if legacy else "Chart.lock")
    source = chart_dir / "requirements.yaml" if legacy else chart_yaml
    if not lock_file.is_file():
        return _entries(_load(source) if legacy else chart, source, exact=True)
    locked = _entries(_load(lock_file), lock_file, exact=False)
    wanted = _entries(_load(source) if legacy else chart, source, exact=False)
    if sorted(d.name for d in locked) != sorted(d.name for d in wanted):
        # What `helm dependency build` refuses too ("the lock file is out of sync").
        raise InvalidInputError(
            f"{display}: {lock_file.name} is out of sync with {source.name} (dependencies "
            f"{sorted(d.name for d in locked)} against {sorted(d.name for d in wanted)}); "
            "run `helm dependency update`"
        )
    return locked


def _entries(doc: Any, source: Path, *, exact: bool) -> list[HelmDependency]:
    items = doc.get("dependencies") if isinstance(doc, dict) else None
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidInputError(f"{source}: 'dependencies' is not a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInputError(f"{source}: dependencies[{i}] is not a mapping")
        name, version = item.get("name"), item.get("version")
        repository = item.get("repository") or ""
        if not isinstance(name, str) or not isinstance(version, str) or not name:
            raise InvalidInputError(f"{source}: dependencies[{i}] needs a 'name' and 'version'")
        if not isinstance(repository, str):
            raise InvalidInputError(f"{source}: dependencies[{i}].repository is not a string")
        dep = HelmDependency(name, version, repository)
        if dep.is_oci and exact and not _EXACT.fullmatch(version):
            raise InvalidInputError(
                f"{source}: {name} has the version range {version!r} and there is no "
                "Chart.lock; run `helm dependency update` once to lock it"
            )
        out.append(dep)
    return out

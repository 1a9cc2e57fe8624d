"""``hybridstore.lock``: what each entry of ``hybridstore.yaml`` resolved to.

Per ref: the request it was resolved for (ref and options: when the file asks for
something else, the entry is resolved again), the digest, media type and size, the
platforms taken from an index, and whether ``sync`` owns the layout ref (it created
it, so it may remove it when the entry goes; a ref that was tagged by hand first is
never removed). Per Helm dependency: the chart manifest and the archive it holds.

Written atomically (temp file, fsync, rename) as YAML with sorted keys and entries,
so the same content is the same bytes and a diff shows only real changes. ``version``
is the format: a lock from a newer hybridstore is refused, never half-understood.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from hybridstore.errors import InvalidInputError, StorageError
from hybridstore.fs.files import atomic_write_bytes
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.oci.schema import schema_validator
from hybridstore.project.yamldoc import dump_plain, load_plain

__all__ = ["LOCK_VERSION", "Lock", "LockedChart", "LockedRef", "read_lock", "write_lock"]

LOCK_VERSION: Final = 1
_SCHEMA: Final = "hybridstore-lock.json"
_HEADER: Final = (
    "# hybridstore.lock: written by `hybridstore sync`. Commit it; do not edit it by hand\n"
    "# (`hybridstore sync --update [REF...]` re-resolves).\n"
)


@dataclass(frozen=True)
class LockedRef:
    layout: str
    name: str
    request: dict[str, Any]
    descriptor: Descriptor
    platforms: tuple[str, ...]
    owned: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.layout, self.name

    @property
    def ref(self) -> str:
        """The reference the entry asked for (the name when the request lacks it)."""
        return str(self.request.get("ref", self.name))

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "name": self.name,
            "request": self.request,
            "digest": str(self.descriptor.digest),
            "mediaType": self.descriptor.media_type,
            "size": self.descriptor.size,
            "platforms": list(self.platforms),
            "owned": self.owned,
        }


@dataclass(frozen=True)
class LockedChart:
    chart: str
    """The chart directory, relative to the project."""
    name: str
    version: str
    repository: str
    ref: str
    descriptor: Descriptor
    """The chart's manifest."""
    archive: Descriptor
    """The chart layer: the ``.tgz`` written to ``charts/``."""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.chart, self.name, self.version, self.repository

    @property
    def file(self) -> str:
        """``<chart>/charts/<name>-<version>.tgz``, as ``helm dependency build`` names it."""
        return f"{self.chart}/charts/{self.name}-{self.version}.tgz"

    def to_json(self) -> dict[str, Any]:
        return {
            "chart": self.chart,
            "name": self.name,
            "version": self.version,
            "repository": self.repository,
            "ref": self.ref,
            "digest": str(self.descriptor.digest),
            "mediaType": self.descriptor.media_type,
            "size": self.descriptor.size,
            "archive": _descriptor_json(self.archive),
        }


@dataclass
class Lock:
    refs: dict[tuple[str, str], LockedRef] = field(default_factory=dict)
    charts: dict[tuple[str, str, str, str], LockedChart] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The file's bytes: ``version`` first, then ``refs`` and ``charts``, each sorted."""
        sections = [
            {"version": LOCK_VERSION},
            {"refs": [self.refs[k].to_json() for k in sorted(self.refs)]},
            {"charts": [self.charts[k].to_json() for k in sorted(self.charts)]},
        ]
        body = "".join(dump_plain(s) for s in sections)
        return (_HEADER + body).encode()


def _descriptor_json(desc: Descriptor) -> dict[str, Any]:
    return {"digest": str(desc.digest), "mediaType": desc.media_type, "size": desc.size}


def _descriptor(obj: dict[str, Any]) -> Descriptor:
    return Descriptor(obj["mediaType"], Digest.parse(obj["digest"]), obj["size"])


def read_lock(path: Path) -> Lock | None:
    """The lock at ``path``; ``None`` when there is none yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror}") from e
    fix = "restore it from version control, or delete it and run `hybridstore sync`"
    try:
        doc = load_plain(raw)
    except yaml.YAMLError as e:
        problem = str(e).splitlines()[0]
        raise InvalidInputError(f"{path} is not valid YAML ({problem}); {fix}") from None
    version = doc.get("version") if isinstance(doc, dict) else None
    if isinstance(version, int) and version > LOCK_VERSION:
        raise InvalidInputError(
            f"{path} has lock format version {version}, newer than this hybridstore reads "
            f"({LOCK_VERSION}); upgrade hybridstore"
        )
    error = next(iter(schema_validator(_SCHEMA).iter_errors(doc)), None)
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise InvalidInputError(f"{path} is damaged at {where or 'top'}: {error.message}; {fix}")
    lock = Lock()
    for item in doc.get("refs", []):
        ref = LockedRef(
            item["layout"],
            item["name"],
            item["request"],
            _descriptor(item),
            tuple(item["platforms"]),
            item["owned"],
        )
        lock.refs[ref.key] = ref
    for item in doc.get("charts", []):
        chart = LockedChart(
            item["chart"],
            item["name"],
            item["version"],
            item["repository"],
            item["ref"],
            _descriptor(item),
            _descriptor(item["archive"]),
        )
        lock.charts[chart.key] = chart
    return lock


def write_lock(path: Path, lock: Lock) -> bool:
    """Write ``lock`` atomically; ``False`` (and nothing written) when unchanged."""
    data = lock.to_bytes()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror}") from e
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror}") from e
    return True

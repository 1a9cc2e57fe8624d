"""``containers-registries.conf(5)`` version 2: find, parse, merge, match.

The file is read where podman, skopeo and buildah read it, so one file configures
every tool on a machine: ``--registries-conf FILE``, else ``$HYBRIDSTORE_REGISTRIES_CONF``,
else ``$CONTAINERS_REGISTRIES_CONF`` (or ``$REGISTRIES_CONFIG_PATH``), else
``~/.config/containers/registries.conf`` if it exists, else
``/etc/containers/registries.conf``. The ``registries.conf.d/*.conf`` drop-ins follow
in name order: ``/etc/containers/registries.conf.d`` then the per-user one (only the
per-user one when the per-user main file was used), as in containers/image.

Merging is containers/image's: a ``[[registry]]`` table replaces the whole table
with the same ``prefix`` (mirrors included); new prefixes are added. (Top-level
keys, which a later file would replace, are all about short names: unused here.)
Unknown keys are ignored, as the containers tools ignore them; malformed TOML and
invalid values are one ``InvalidInputError`` naming the file (and the line, for TOML).

A version 1 main file ([registries.insecure], [registries.block]) is converted as
containers/image converts it; a version 1 drop-in is an error, as there.

Only what a pull needs is modelled: ``prefix``, ``location``, ``insecure``,
``blocked``, ``mirror-by-digest-only`` and ``[[registry.mirror]]`` with
``location``, ``insecure`` and ``pull-from-mirror``. Short-name aliases and
``unqualified-search-registries`` are not (hybridstore never guesses a registry).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridstore.errors import InvalidInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

__all__ = [
    "ENV_VAR",
    "MirrorEntry",
    "RegistriesConf",
    "RegistryEntry",
    "config_files",
    "load_registries_conf",
]

ENV_VAR = "HYBRIDSTORE_REGISTRIES_CONF"
_CONTAINERS_ENV = ("CONTAINERS_REGISTRIES_CONF", "REGISTRIES_CONFIG_PATH")
SYSTEM_DIR = Path("/etc/containers")
PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class MirrorEntry:
    """One ``[[registry.mirror]]``: where to try first, and for which references."""

    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True)
class RegistryEntry:
    """One ``[[registry]]`` table after defaults (``prefix`` defaults to ``location``)."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[MirrorEntry, ...] = ()
    source: str = ""
    """The file this table came from, for messages."""

    def matches(self, name: str) -> bool:
        """``name`` (``host/repository``) is under this prefix: the prefix is followed
        by the end, ``/``, ``:`` or ``@``; ``*.host`` matches any subdomain depth."""
        if self.prefix.startswith("*."):
            host = name.split("/", 1)[0]
            return host.endswith(self.prefix[1:])
        if not name.startswith(self.prefix):
            return False
        rest = name[len(self.prefix) :]
        return rest == "" or rest[0] in "/:@"

    def rewrite(self, name: str, location: str) -> str:
        """``name`` with the matched prefix replaced by ``location``."""
        if self.prefix.startswith("*."):
            host, slash, path = name.partition("/")
            return (location or host) + slash + path
        return location + name[len(self.prefix) :]


@dataclass(frozen=True)
class RegistriesConf:
    """The merged configuration: registry tables keyed by prefix, and the files read."""

    registries: tuple[RegistryEntry, ...] = ()
    files: tuple[Path, ...] = ()

    def find(self, name: str) -> RegistryEntry | None:
        """The table with the longest prefix matching ``name`` (``host/repository``)."""
        best: RegistryEntry | None = None
        for entry in self.registries:
            if entry.matches(name) and (best is None or len(entry.prefix) > len(best.prefix)):
                best = entry
        return best


def config_files(explicit: str | os.PathLike[str] | None = None) -> tuple[Path | None, list[Path]]:
    """The main file (``None``: the default one is absent) and the drop-ins, in order.

    A main file named by the caller or an environment variable must exist; the
    default ones are optional.
    """
    named = explicit or os.environ.get(ENV_VAR)
    if not named:
        named = next((os.environ[v] for v in _CONTAINERS_ENV if os.environ.get(v)), None)
    user_dir = Path.home() / ".config" / "containers"
    user_main = user_dir / "registries.conf"
    dirs = [SYSTEM_DIR / "registries.conf.d", user_dir / "registries.conf.d"]
    main: Path | None
    if named:
        main = Path(named)
        if not main.is_file():
            raise InvalidInputError(
                f"registries.conf {main} does not exist; name an existing file "
                f"(--registries-conf, ${ENV_VAR}, $CONTAINERS_REGISTRIES_CONF)"
            )
    elif user_main.is_file():
        main, dirs = user_main, dirs[1:]
    else:
        system_main = SYSTEM_DIR / "registries.conf"
        main = system_main if system_main.is_file() else None
    dropins = [p for d in dirs if d.is_dir() for p in sorted(d.glob("*.conf")) if p.is_file()]
    return main, dropins


def load_registries_conf(explicit: str | os.PathLike[str] | None = None) -> RegistriesConf:
    """Read and merge the main file and its drop-ins (see the module docstring)."""
    main, dropins = config_files(explicit)
    files = ([main] if main is not None else []) + dropins
    tables: dict[str, RegistryEntry] = {}
    for path in files:
        doc = _read_toml(path)
        if isinstance(doc.get("registries"), Mapping):
            if path != main:
                raise InvalidInputError(
                    f"{path}: a drop-in must use version 2 ([[registry]] tables), not "
                    "[registries.search]/[registries.insecure]/[registries.block]"
                )
            doc = _from_version_1(path, doc)
        for entry in _registry_tables(path, doc.get("registry", [])):
            tables[entry.prefix] = entry  # same prefix: the later table replaces it whole
    _check_locations(tables.values())
    return RegistriesConf(tuple(tables.values()), tuple(files))


def _from_version_1(path: Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    """A version 1 main file as version 2 tables, as containers/image converts it:
    each host of ``[registries.insecure]`` and ``[registries.block]`` gets a table."""
    if "registry" in doc:
        raise InvalidInputError(
            f"{path}: mixes version 1 [registries.*] and version 2 [[registry]]; keep one"
        )
    flags: dict[str, dict[str, Any]] = {}
    for section, key in (("insecure", "insecure"), ("block", "blocked")):
        table = doc["registries"].get(section, {})
        hosts = table.get("registries", []) if isinstance(table, Mapping) else None
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise InvalidInputError(f"{path}: [registries.{section}] registries must be strings")
        for host in hosts:
            flags.setdefault(host, {"location": host})[key] = True
    return {"registry": list(flags.values())}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc: dict[str, Any] = tomllib.load(f)
            return doc
    except tomllib.TOMLDecodeError as e:
        raise InvalidInputError(f"{path}: malformed TOML: {e}; fix the file") from None
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read: {e.strerror or e}") from None


def _registry_tables(path: Path, raw: object) -> list[RegistryEntry]:
    if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
        raise InvalidInputError(f"{path}: 'registry' must be [[registry]] tables")
    return [_registry(path, table) for table in raw]


def _registry(path: Path, table: Mapping[str, Any]) -> RegistryEntry:
    where = f"{path}: [[registry]]"
    prefix = _string(table, "prefix", where)
    location = _string(table, "location", where)
    if not prefix and not location:
        raise InvalidInputError(f"{where} needs a 'prefix' or a 'location'")
    prefix = prefix or location
    where = f"{path}: [[registry]] prefix {prefix!r}"
    _check_name(prefix, where, "prefix")
    if prefix.startswith("*.") and any(c in prefix for c in "/@:"):
        raise InvalidInputError(f"{where}: a wildcard prefix is a host only ('*.example.com')")
    if location:
        _check_name(location, where, "location")
    elif not prefix.startswith("*."):
        raise InvalidInputError(f"{where}: an empty 'location' needs a wildcard prefix")
    by_digest = _bool(table, "mirror-by-digest-only", where)
    mirrors_raw = table.get("mirror", [])
    if not isinstance(mirrors_raw, list) or not all(isinstance(m, Mapping) for m in mirrors_raw):
        raise InvalidInputError(f"{where}: 'mirror' must be [[registry.mirror]] tables")
    mirrors = tuple(_mirror(m, where, by_digest) for m in mirrors_raw)
    if "pull-from-mirror" in table:
        raise InvalidInputError(f"{where}: 'pull-from-mirror' belongs in [[registry.mirror]]")
    return RegistryEntry(
        prefix=prefix,
        location=location,
        insecure=_bool(table, "insecure", where),
        blocked=_bool(table, "blocked", where),
        mirror_by_digest_only=by_digest,
        mirrors=mirrors,
        source=str(path),
    )


def _mirror(table: Mapping[str, Any], where: str, by_digest: bool) -> MirrorEntry:
    location = _string(table, "location", f"{where} mirror")
    if not location:
        raise InvalidInputError(f"{where}: a [[registry.mirror]] needs a 'location'")
    _check_name(location, f"{where} mirror", "location")
    pull_from = _string(table, "pull-from-mirror", f"{where} mirror {location!r}") or "all"
    if pull_from not in PULL_FROM_MIRROR:
        raise InvalidInputError(
            f"{where} mirror {location!r}: pull-from-mirror {pull_from!r} is not one of "
            + ", ".join(PULL_FROM_MIRROR)
        )
    if by_digest and "pull-from-mirror" in table:
        raise InvalidInputError(
            f"{where}: use either mirror-by-digest-only or pull-from-mirror, not both"
        )
    return MirrorEntry(
        location, _bool(table, "insecure", f"{where} mirror {location!r}"), pull_from
    )


def _string(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: {key!r} must be a string")
    return value


def _bool(table: Mapping[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{where}: {key!r} must be true or false")
    return value


def _check_name(value: str, where: str, key: str) -> None:
    if "://" in value:
        raise InvalidInputError(
            f"{where}: {key} {value!r} has a scheme; write host[:port][/path] "
            "(insecure = true allows plain HTTP)"
        )
    if any(c.isspace() for c in value) or value.endswith("/"):
        raise InvalidInputError(f"{where}: {key} {value!r} is not host[:port][/path]")


def _check_locations(entries: Iterable[RegistryEntry]) -> None:
    """One location defined twice with different ``insecure``/``blocked`` is ambiguous."""
    seen: dict[str, RegistryEntry] = {}
    for entry in entries:
        if not entry.location:
            continue
        other = seen.setdefault(entry.location, entry)
        if (other.insecure, other.blocked) != (entry.insecure, entry.blocked):
            raise InvalidInputError(
                f"registries.conf: location {entry.location!r} is defined twice with "
                f"different 'insecure' or 'blocked' ({other.source}, {entry.source})"
            )

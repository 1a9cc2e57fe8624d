"""Which endpoints serve a reference: mirrors from registries.conf and ``--mirror``.

The user's reference is the *logical* name: it is what a layout records and what
credentials given on the command line belong to. The endpoints are *physical*:
the ``[[registry]]`` table with the longest matching prefix rewrites the name to
its ``location`` (the primary) and to each ``[[registry.mirror]]`` location, in
file order; ``--mirror HOST`` mirrors come before those.

Which mirror answers what (containers-registries.conf(5), plus one extension):

- resolving a tag: mirrors whose ``pull-from-mirror`` is ``all`` or ``tag-only``,
  then the primary. A ``digest-only`` mirror (or any mirror of a table with
  ``mirror-by-digest-only``) never resolves a tag: tags may lag on a mirror.
- content by digest in a pull by digest: mirrors that are ``all`` or
  ``digest-only``, then the primary; ``tag-only`` mirrors are skipped.
- content by digest in a pull by tag: every mirror, then the primary. The
  containers tools pull such an image wholly from the primary when all mirrors
  are ``digest-only``; hybridstore still takes the digests the primary resolved
  from the mirror, since a digest names the same bytes on every host and each
  byte is verified against it. That is what lets a fleet share one mirror while
  tags stay authoritative upstream.

Push never uses this: a push goes to the logical name, only ``blocked`` and
``insecure`` apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybridstore.errors import AuthError, InvalidInputError
from hybridstore.oci.reference import Reference
from hybridstore.remote.registries_conf import RegistriesConf, RegistryEntry

__all__ = ["Endpoint", "PullPlan", "plan_pull", "push_endpoint"]


@dataclass(frozen=True)
class Endpoint:
    """One place to ask: the physical reference there, and how to talk to it."""

    ref: Reference
    insecure: bool = False
    """Plain HTTP or an unverified certificate are allowed (https is tried first)."""
    pull_from: str = "primary"
    """``primary``, or the mirror's ``pull-from-mirror``: ``all``, ``digest-only``, ``tag-only``."""

    @property
    def is_mirror(self) -> bool:
        return self.pull_from != "primary"

    @property
    def label(self) -> str:
        return f"mirror {self.ref.name}" if self.is_mirror else self.ref.name


@dataclass(frozen=True)
class PullPlan:
    """The endpoints for one logical reference, mirrors first, the primary last."""

    logical: Reference
    primary: Endpoint
    mirrors: tuple[Endpoint, ...] = ()

    @property
    def plain(self) -> bool:
        """No mirror and nothing to negotiate: a single ordinary repository will do."""
        return not self.mirrors and not self.primary.insecure

    @property
    def tag_endpoints(self) -> tuple[Endpoint, ...]:
        """Who may answer a tag (resolve by tag, tag listing, referrer lists)."""
        ok = ("all", "tag-only")
        return (*(m for m in self.mirrors if m.pull_from in ok), self.primary)

    @property
    def digest_endpoints(self) -> tuple[Endpoint, ...]:
        """Who may serve content named by digest in this pull."""
        if self.logical.digest is None:
            return (*self.mirrors, self.primary)
        ok = ("all", "digest-only")
        return (*(m for m in self.mirrors if m.pull_from in ok), self.primary)


def plan_pull(
    conf: RegistriesConf, logical: Reference, extra_mirrors: Sequence[str] = ()
) -> PullPlan:
    """The endpoints for pulling ``logical``; ``AuthError`` if its registry is blocked."""
    entry = conf.find(logical.name)
    _refuse_blocked(entry, logical)
    if entry is None:
        primary = Endpoint(logical)
        mirrors: list[Endpoint] = []
    else:
        primary = Endpoint(_physical(logical, entry, entry.location), entry.insecure)
        mirrors = [
            Endpoint(
                _physical(logical, entry, m.location),
                m.insecure,
                "digest-only" if entry.mirror_by_digest_only else m.pull_from_mirror,
            )
            for m in entry.mirrors
        ]
    extra = [_command_line_mirror(conf, host, primary.ref) for host in extra_mirrors]
    return PullPlan(logical, primary, (*extra, *mirrors))


def push_endpoint(conf: RegistriesConf, logical: Reference) -> Endpoint:
    """A push goes to the logical name itself; only ``blocked`` and ``insecure`` apply."""
    entry = conf.find(logical.name)
    _refuse_blocked(entry, logical)
    return Endpoint(logical, entry is not None and entry.insecure)


def _refuse_blocked(entry: RegistryEntry | None, logical: Reference) -> None:
    if entry is not None and entry.blocked:
        raise AuthError(
            f"{logical.name} is blocked by registries.conf ({entry.source}, prefix "
            f"{entry.prefix!r}); remove 'blocked = true' there or use another registry"
        )


def _physical(logical: Reference, entry: RegistryEntry, location: str) -> Reference:
    name = entry.rewrite(logical.name, location)
    return _with_name(name, logical, f"{entry.source}: location {location!r}")


def _command_line_mirror(conf: RegistriesConf, host: str, primary: Reference) -> Endpoint:
    if not host or "/" in host or "://" in host:
        raise InvalidInputError(
            f"--mirror {host!r}: give a registry host[:port], e.g. --mirror cache.internal:5000"
        )
    ref = _with_name(f"{host}/{primary.repository}", primary, f"--mirror {host!r}")
    entry = conf.find(ref.name)
    return Endpoint(ref, entry is not None and entry.insecure, "all")


def _with_name(name: str, logical: Reference, where: str) -> Reference:
    """``name`` with ``logical``'s tag and digest, checked to read back as written."""
    suffix = (f":{logical.tag}" if logical.tag else "") + (
        f"@{logical.digest}" if logical.digest else ""
    )
    try:
        ref = Reference.parse(name + suffix)
    except InvalidInputError as e:
        raise InvalidInputError(f"{where}: {e}") from None
    if ref.name != name and not name.startswith("docker.io/"):
        raise InvalidInputError(f"{where}: {name!r} is not a registry host[:port]/repository")
    return ref

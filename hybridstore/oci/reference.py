"""Registry references (``[host[:port]/]path[:tag][@digest]``), parsed and normalised.

The grammar is distribution/reference's, which every registry client shares, so
a name means the same thing here as in docker, skopeo, oras and Helm. A
``Reference`` is always normalised (Docker Hub aliases folded into
``docker.io``, ``library/`` added, ``latest`` when nothing else is given), so
``str(ref)`` is the key a layout's ``index.json`` stores and
``Reference.parse(str(ref)) == ref`` holds for every value.

The parser is hand-written rather than one big anchored regex so that every
rejection can say *which* part is wrong and how to fix it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Final

from hybridstore.errors import InvalidDigestError, InvalidReferenceError
from hybridstore.oci.digest import Digest

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "DOCKER_HUB_ENDPOINT",
    "Reference",
    "is_valid_tag",
]

DEFAULT_REGISTRY: Final = "docker.io"
DEFAULT_TAG: Final = "latest"
DOCKER_HUB_ENDPOINT: Final = "registry-1.docker.io"
# Names people use for Docker Hub; all are stored as ``docker.io``.
_DOCKER_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_PREFIXES: Final = ("oci://", "docker://")  # Helm's scheme, skopeo's transport

NAME_TOTAL_LENGTH_MAX: Final = 255
_TAG_MAX: Final = 128
# Longest input worth looking at: name, ':' tag, '@' digest, a prefix. Anything
# longer is rejected before any regex work.
_INPUT_MAX: Final = NAME_TOTAL_LENGTH_MAX + 1 + _TAG_MAX + 1 + 1024 + 16

_PATH_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_TAG: Final = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
# Labels of letters, digits and inner hyphens, written so a failing match
# backtracks linearly.
_DOMAIN_NAME: Final = re.compile(
    r"[a-zA-Z0-9]+(?:-+[a-zA-Z0-9]+)*(?:\.[a-zA-Z0-9]+(?:-+[a-zA-Z0-9]+)*)*", re.ASCII
)
_IPV6_BRACKETED: Final = re.compile(r"\[(?P<addr>[a-fA-F0-9:]+)\]", re.ASCII)
_PORT: Final = re.compile(r"[0-9]{1,5}", re.ASCII)
_LOOPBACK_V4: Final = ipaddress.IPv4Network("127.0.0.0/8")


def _show(text: str) -> str:
    """``repr`` of user text, cut short so a huge input gives a one-line error."""
    return repr(text if len(text) <= 100 else text[:100] + "...")


def is_valid_tag(s: object) -> bool:
    """Whether ``s`` is a tag (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``); never raises."""
    return isinstance(s, str) and _TAG.fullmatch(s) is not None


def _registry_problem(registry: str) -> str | None:
    """Why ``registry`` (``host[:port]``) is not a valid domain, or None if it is."""
    if registry.startswith("["):
        end = registry.find("]")
        if end < 0:
            return f"registry host {_show(registry)} lacks the closing ']' of an IPv6 address"
        host, rest = registry[: end + 1], registry[end + 1 :]
        m = _IPV6_BRACKETED.fullmatch(host)
        if m is None:
            return f"registry host {_show(host)} is not a bracketed IPv6 address like '[::1]'"
        try:
            ipaddress.IPv6Address(m.group("addr"))
        except ValueError:
            return f"registry host {_show(host)} is not a valid IPv6 address"
        if rest and not rest.startswith(":"):
            return f"registry {_show(registry)} has junk after the IPv6 address"
    else:
        host, colon, port = registry.partition(":")
        rest = colon + port
        if not host:
            return f"registry {_show(registry)} has an empty host name"
        if _DOMAIN_NAME.fullmatch(host) is None:
            return (
                f"registry host {_show(host)} is not a host name: use letters, digits, "
                "'-' inside labels and '.' between labels"
            )
    if rest:
        port = rest[1:]
        if _PORT.fullmatch(port) is None or not 0 < int(port) <= 65535:
            return f"registry port {_show(port)} is not a port number (1-65535)"
    return None


def _repository_problem(repository: str) -> str | None:
    """Why ``repository`` is not a valid path, or None if it is."""
    if not repository:
        return "the repository is empty"
    if repository != repository.lower() and _repository_problem(repository.lower()) is None:
        return (
            f"repository {_show(repository)} must be lowercase "
            f"(did you mean {_show(repository.lower())}?)"
        )
    for component in repository.split("/"):
        if not component:
            return (
                f"repository {_show(repository)} has an empty path component "
                "('//', or '/' at the start or end)"
            )
        if _PATH_COMPONENT.fullmatch(component) is None:
            return (
                f"path component {_show(component)} is invalid: use lowercase letters and digits, "
                "separated by '.', '_', '__' or '-', starting and ending with a letter or digit"
            )
    return None


def _tag_problem(tag: str) -> str | None:
    if not tag:
        return "the tag after ':' is empty"
    if len(tag) > _TAG_MAX:
        return f"the tag is longer than {_TAG_MAX} characters"
    if _TAG.fullmatch(tag) is None:
        return (
            f"tag {_show(tag)} is invalid: use letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )
    return None


def _parse_digest(text: str) -> Digest:
    if not text:
        raise InvalidReferenceError("the digest after '@' is empty")
    try:
        return Digest.parse(text)
    except InvalidDigestError as exc:
        raise InvalidReferenceError(str(exc)) from None


def _canonical_registry(registry: str) -> str:
    """Host names are case-insensitive: store them lowercase; fold Docker Hub aliases."""
    lowered = registry.lower()
    return DEFAULT_REGISTRY if lowered in _DOCKER_HUB_ALIASES else lowered


def _looks_like_registry(component: str) -> bool:
    """distribution/reference's rule for "is the first path component a host?"."""
    return "." in component or ":" in component or component == "localhost" or (
        component.startswith("[")
    )


@dataclass(frozen=True)
class Reference:
    """A normalised registry reference; construct with ``Reference.parse``.

    At least one of ``tag`` and ``digest`` is set. When both are, the digest is
    what gets fetched and the tag is kept for naming.
    """

    registry: str
    repository: str
    tag: str | None
    digest: Digest | None

    def __post_init__(self) -> None:
        # One validation point: parse() and hand construction both end here,
        # so no Reference can exist that does not survive str() -> parse().
        problem = self._problem()
        if problem is not None:
            raise InvalidReferenceError(f"invalid reference: {problem}")

    def _problem(self) -> str | None:
        if not isinstance(self.registry, str) or not isinstance(self.repository, str):
            return "registry and repository must be strings"
        problem = _registry_problem(self.registry)
        if problem is not None:
            return problem
        if not _looks_like_registry(self.registry):
            return (
                f"registry {_show(self.registry)} would read back as a path; a registry "
                "contains '.' or ':' or is 'localhost'"
            )
        if self.registry != _canonical_registry(self.registry):
            return f"registry {_show(self.registry)} is not normalised; use Reference.parse"
        problem = _repository_problem(self.repository)
        if problem is not None:
            return problem
        if self.registry == DEFAULT_REGISTRY and "/" not in self.repository:
            return "a docker.io repository needs a namespace ('library/...'); use Reference.parse"
        name_len = len(self.registry) + 1 + len(self.repository)
        if name_len > NAME_TOTAL_LENGTH_MAX:
            return (
                f"name {_show(self.registry + '/' + self.repository)} is {name_len} characters, "
                f"longer than the {NAME_TOTAL_LENGTH_MAX} registries accept"
            )
        if self.tag is not None:
            if not isinstance(self.tag, str):
                return "tag must be a string"
            problem = _tag_problem(self.tag)
            if problem is not None:
                return problem
        if self.digest is not None:
            if not isinstance(self.digest, Digest):
                return "digest must be a Digest"
            try:
                if Digest.parse(str(self.digest)) != self.digest:
                    return f"digest {_show(str(self.digest))} is not canonical"
            except InvalidDigestError as exc:
                return str(exc)
        if self.tag is None and self.digest is None:
            return "a reference needs a tag or a digest"
        return None

    @classmethod
    def parse(cls, text: str, *, default_registry: str = DEFAULT_REGISTRY) -> Reference:
        """Parse ``text``; raise ``InvalidReferenceError`` naming the problem and the fix."""
        if not isinstance(text, str):
            raise InvalidReferenceError(
                f"invalid reference: expected a string, got {type(text).__name__}"
            )
        try:
            parts = cls._split(text, default_registry)
        except InvalidReferenceError as exc:
            raise InvalidReferenceError(f"invalid reference {_show(text)}: {exc}") from None
        return cls(*parts)

    @classmethod
    def _split(
        cls, text: str, default_registry: str
    ) -> tuple[str, str, str | None, Digest | None]:
        """The normalised parts of ``text``; errors carry only the problem."""
        if len(text) > _INPUT_MAX:
            raise InvalidReferenceError(f"longer than {_INPUT_MAX} characters")
        if not text:
            raise InvalidReferenceError("the reference is empty")
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix) :]
                break
        if "://" in text:
            scheme = text.split("://", 1)[0]
            raise InvalidReferenceError(
                f"scheme {_show(scheme + '://')} is not supported; write 'host/repository:tag' "
                "(optionally with 'oci://')"
            )
        if any(c.isspace() for c in text):
            raise InvalidReferenceError("contains whitespace")

        if text.startswith("[") and "/" not in text:
            raise InvalidReferenceError("a bracketed IPv6 registry needs '/repository' after it")

        rest, at, digest_text = text.partition("@")
        digest = _parse_digest(digest_text) if at else None

        # The tag is after a ':' in the last path component (a ':' earlier is a port).
        slash = rest.rfind("/")
        colon = rest.find(":", slash + 1)
        tag: str | None = None
        if colon >= 0:
            rest, tag = rest[:colon], rest[colon + 1 :]
            problem = _tag_problem(tag)
            if problem is not None:
                raise InvalidReferenceError(problem)

        first, slash_found, remainder = rest.partition("/")
        if slash_found and _looks_like_registry(first):
            registry, repository = first, remainder
            if not repository:
                raise InvalidReferenceError(
                    f"no repository after registry {_show(registry)}; add '/name'"
                )
        else:
            registry, repository = cls._default_registry(default_registry), rest
        problem = _registry_problem(registry)
        if problem is not None:
            raise InvalidReferenceError(problem)
        registry = _canonical_registry(registry)
        problem = _repository_problem(repository)
        if problem is not None:
            raise InvalidReferenceError(problem)
        if registry == DEFAULT_REGISTRY and "/" not in repository:
            repository = "library/" + repository
        name_len = len(registry) + 1 + len(repository)
        if name_len > NAME_TOTAL_LENGTH_MAX:
            raise InvalidReferenceError(
                f"the name is {name_len} characters once normalised, longer than the "
                f"{NAME_TOTAL_LENGTH_MAX} registries accept"
            )
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return registry, repository, tag, digest

    @staticmethod
    def _default_registry(registry: str) -> str:
        """Check ``default_registry`` would be read back as a registry by ``parse``."""
        if not (
            isinstance(registry, str)
            and _looks_like_registry(registry)
            and _registry_problem(registry) is None
        ):
            raise InvalidReferenceError(
                f"default registry {registry!r} is not a registry host such as 'docker.io', "
                "'localhost:5000' or 'registry.example.com'"
            )
        return registry

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + str(self.digest)
        return out

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def endpoint_host(self) -> str:
        """The ``host[:port]`` to connect to (Docker Hub's API is not at ``docker.io``)."""
        return DOCKER_HUB_ENDPOINT if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def reference(self) -> str:
        """What goes in ``/v2/<repository>/manifests/<reference>``: the digest, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        assert self.tag is not None  # __post_init__ guarantees one of the two
        return self.tag

    @property
    def host(self) -> str:
        """The registry host without port (IPv6 without brackets)."""
        if self.registry.startswith("["):
            return self.registry[1 : self.registry.index("]")]
        return self.registry.partition(":")[0]

    @property
    def is_local(self) -> bool:
        """Whether the registry is this machine (localhost, 127.0.0.0/8, ::1)."""
        host = self.host
        if host == "localhost":
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address):
            mapped = addr.ipv4_mapped
            return addr.is_loopback or (mapped is not None and mapped in _LOOPBACK_V4)
        return addr in _LOOPBACK_V4

    def with_digest(self, digest: Digest | str) -> Reference:
        """The same name and tag, pinned to ``digest``."""
        if isinstance(digest, str):
            try:
                digest = Digest.parse(digest)
            except InvalidDigestError as exc:
                raise InvalidReferenceError(f"invalid reference: {exc}") from None
        return replace(self, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        """The same name (and digest, if any) with ``tag``."""
        return replace(self, tag=tag)

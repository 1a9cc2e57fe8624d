"""Where registry requests and credentials may go, what may reach a log, and how
much of a response body we are willing to hold.

Shared by the transport (redirects), the repository (manifest caps), the
authenticator (token realms, 401 origins, token caps) and the login check:
local-address detection, origins, the realm rule, redaction of URLs and
headers, and capped body reads.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from hybridstore.errors import AuthError, RegistryError

__all__ = [
    "check_realm",
    "host_of",
    "is_local_host",
    "origin_of",
    "redact_headers",
    "redact_url",
]

_SECRET_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-registry-auth"}
)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` fit for a log line: credential-bearing values hidden."""
    return {k: ("<redacted>" if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()}


def redact_url(url: str) -> str:
    """Scheme, host and path only: userinfo and query strings never reach a log.
    Never raises: a URL too broken to parse is shown as a short repr."""
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError:
        return repr(url.split("?", 1)[0][:100])
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    return f"{p.scheme}://{host}{p.path}"


def _ip_is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def is_local_host(host: str, *, resolve: bool = True) -> bool:
    """Loopback, link-local (169.254.169.254 included) or unspecified; ``localhost``
    names. With ``resolve``, a name counts as local when it resolves to such an
    address (regclient's rule). Private ranges are not "local": company
    registries and their token servers live there."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return _ip_is_local(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not resolve or not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    for info in infos:
        try:
            if _ip_is_local(ipaddress.ip_address(str(info[4][0]).split("%")[0])):
                return True
        except ValueError:
            continue
    return False


def host_of(netloc: str) -> str:
    return urlsplit(f"//{netloc}").hostname or netloc


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port); a URL that cannot be parsed has no host (matches nothing)."""
    try:
        p = urlsplit(url)
        port = p.port or {"https": 443, "http": 80}.get(p.scheme)
    except ValueError:
        return "", "", None
    return p.scheme, (p.hostname or "").lower(), port


def check_realm(realm: str, registry: str, scheme: str) -> None:
    """Raise AuthError unless a token realm (or a redirect of it) is safe to contact
    for ``registry`` reached over ``scheme``."""
    try:
        p = urlsplit(realm)
        p.port  # noqa: B018 - raises for a port out of range
    except ValueError as e:
        raise RegistryError(
            f"registry {registry} sent a token realm that is not a URL ({repr(realm[:100])}: {e})"
        ) from None
    shown = redact_url(realm) if p.scheme and p.hostname else repr(realm[:100])
    if p.scheme not in ("http", "https") or not p.hostname:
        raise AuthError(f"registry {registry} sent an invalid token realm {shown}")
    if scheme == "https" and p.scheme != "https":
        raise AuthError(
            f"refusing token realm {shown} from https registry {registry}: "
            "credentials are never sent over plain http"
        )
    if is_local_host(p.hostname) and not is_local_host(host_of(registry)):
        raise AuthError(
            f"refusing token realm {shown} from registry {registry}: it points to a local "
            "address and the registry is not local"
        )

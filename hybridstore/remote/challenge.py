"""``WWW-Authenticate`` parsing (RFC 9110 section 11): several challenges in one
header, quoted strings with commas and escaped quotes, token68.

Hand-written: no maintained library parses several challenges in one header
with quoted commas and token68; a small scanner that never raises is simpler
than adapting one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = ["Challenge", "parse_challenges"]

_TCHAR: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_TOKEN68: Final = frozenset("-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS: Final = " \t"


@dataclass(frozen=True)
class Challenge:
    """One challenge: lower-cased scheme, lower-cased parameter names."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    token68: str | None = None


def _skip(s: str, i: int, chars: str) -> int:
    while i < len(s) and s[i] in chars:
        i += 1
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(s) and s[j] in _TCHAR:
        j += 1
    return s[i:j], j


def _quoted(s: str, i: int) -> tuple[str, int]:
    """A quoted-string starting at ``s[i] == '"'``; an unterminated one runs to the end."""
    out: list[str] = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def _skip_item(s: str, i: int) -> int:
    """Recover from garbage: move past the next comma that is not inside quotes."""
    while i < len(s):
        if s[i] == '"':
            _, i = _quoted(s, i)
        elif s[i] == ",":
            return i + 1
        else:
            i += 1
    return i


def _param_starts(s: str, i: int) -> bool:
    """Whether an ``name = value`` auth-param (rather than a new scheme) starts at ``i``."""
    name, j = _token(s, i)
    j = _skip(s, j, _WS)
    return bool(name) and j < len(s) and s[j] == "="


def _token68_at(s: str, i: int) -> tuple[str | None, int]:
    """A token68 at ``i`` when it is the whole challenge body (followed by ',' or end)."""
    j = i
    while j < len(s) and s[j] in _TOKEN68:
        j += 1
    if j == i:
        return None, i
    j = _skip(s, j, "=")
    k = _skip(s, j, _WS)
    if k == len(s) or s[k] == ",":
        return s[i:j], k
    return None, i


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in a ``WWW-Authenticate`` value (the HTTP client joins repeated
    header lines with ", "). Malformed parts are skipped; this never raises."""
    found: list[Challenge] = []
    s, i = header, 0
    while i < len(s):
        i = _skip(s, i, _WS + ",")
        scheme, i = _token(s, i)
        if not scheme:
            i = _skip_item(s, i)
            continue
        params: dict[str, str] = {}
        token68: str | None = None
        i = _skip(s, i, _WS)
        # token68 first: "abc==" then "," or the end cannot be an auth-param,
        # whose value may not be empty.
        if i < len(s) and s[i] != ",":
            token68, i = _token68_at(s, i)
        if token68 is None:
            if i < len(s) and s[i] != "," and not _param_starts(s, i):
                i = _skip_item(s, i)
            else:
                i = _parse_params(s, i, params)
        found.append(Challenge(scheme.lower(), MappingProxyType(params), token68))
    return found


def _parse_params(s: str, i: int, params: dict[str, str]) -> int:
    """auth-params from ``i`` until the next challenge's scheme; returns its position."""
    while i < len(s):
        i = _skip(s, i, _WS + ",")
        if i >= len(s) or not _param_starts(s, i):
            # A bare token after a comma is the next challenge's scheme.
            if i < len(s) and not _token(s, i)[0]:
                i = _skip_item(s, i)
                continue
            return i
        name, i = _token(s, i)
        i = _skip(s, _skip(s, i, _WS) + 1, _WS)  # BWS "=" BWS
        if i < len(s) and s[i] == '"':
            value, i = _quoted(s, i)
        else:
            # Lenient: servers send unquoted URLs (not a token), so take up to the comma.
            j = i
            while j < len(s) and s[j] not in ", \t":
                j += 1
            value, i = s[i:j], j
        params.setdefault(name.lower(), value)
        k = _skip(s, i, _WS)
        if k < len(s) and s[k] != ",":
            i = _skip_item(s, k)  # junk after a value
    return i

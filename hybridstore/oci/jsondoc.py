"""The one JSON loader for documents that come from outside: a registry, a layout, an archive.

Every manifest, index, ``oci-layout``, token answer and error body goes through here so
that one set of bounds holds everywhere (CVE-2020-1702, CVE-2023-25153, CVE-2025-32387):

- size: the caller's cap is checked before parsing (``limit=None`` only where the bytes
  were read under a bound the user chose, e.g. ``--max-manifest-size``);
- nesting: more than ``MAX_JSON_DEPTH`` levels is refused; Python's parser recurses, so
  a ``RecursionError`` from 100k nested arrays is turned into the same clean error;
- strictness: UTF-8 only, no ``NaN``/``Infinity`` (not JSON);
- duplicate keys: the image spec requires unique keys (annotations "MUST be unique",
  and RFC 8259 leaves the winner to each parser), so two parsers could read one document
  two ways, the CVE-2021-41190 class of ambiguity. ``load_json`` refuses them;
  ``parse_json`` reports them for the validator, which lists them as problems.

Every failure is an ``InvalidDocumentError`` (exit 10), a ``ValueError``.
"""

from __future__ import annotations

import json
from typing import Any

from hybridstore.errors import InvalidDocumentError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES, MAX_JSON_DEPTH

__all__ = ["load_json", "load_json_object", "parse_json"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(
    raw: bytes, *, what: str = "document", limit: int | None = MAX_DOCUMENT_BYTES
) -> tuple[Any, list[str]]:
    """Parse ``raw`` within the bounds; return the value and the keys that were repeated."""
    if limit is not None and len(raw) > limit:
        raise InvalidDocumentError(f"{what} is larger than {limit} bytes; refusing to read it")
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        return obj

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidDocumentError(f"{what} is not UTF-8 text: {e}") from None
    try:
        obj = json.loads(text, object_pairs_hook=pairs, parse_constant=_reject_constant)
    except RecursionError:
        raise _too_deep(what) from None
    except ValueError as e:
        raise InvalidDocumentError(f"{what} is not valid JSON: {e}") from None
    if _depth_exceeds(obj, MAX_JSON_DEPTH):
        raise _too_deep(what)
    return obj, duplicates


def load_json(raw: bytes, *, what: str = "document", limit: int | None = MAX_DOCUMENT_BYTES) -> Any:
    """``parse_json`` that also refuses repeated keys."""
    obj, duplicates = parse_json(raw, what=what, limit=limit)
    if duplicates:
        raise InvalidDocumentError(
            f"{what} repeats the key {duplicates[0]!r:.80}; parsers disagree on which value "
            "wins, so it is refused (remove the repeat)"
        )
    return obj


def load_json_object(
    raw: bytes, *, what: str = "document", limit: int | None = MAX_DOCUMENT_BYTES
) -> dict[str, Any]:
    """``load_json`` of a document that must be a JSON object."""
    obj = load_json(raw, what=what, limit=limit)
    if not isinstance(obj, dict):
        raise InvalidDocumentError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _too_deep(what: str) -> InvalidDocumentError:
    return InvalidDocumentError(
        f"{what} is too deeply nested (more than {MAX_JSON_DEPTH} levels); refusing it"
    )


def _depth_exceeds(obj: Any, limit: int) -> bool:
    # Iterative on purpose: the point is to refuse what would blow the stack.
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False

"""The one JSON loader: bounds on size and nesting, strictness, duplicate keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridstore.errors import InvalidDocumentError
from hybridstore.oci.jsondoc import load_json, load_json_object, parse_json
from hybridstore.oci.limits import MAX_JSON_DEPTH


def nested(depth: int) -> Any:
    """``depth`` arrays around a string."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 10_000, 200_000])
def test_deep_nesting_is_a_clean_error(depth: int) -> None:
    raw = b"[" * depth + b"]" * depth
    with pytest.raises(InvalidDocumentError, match="too deeply nested"):
        load_json(raw, limit=None)
    obj = b'{"a":' * depth + b"1" + b"}" * depth
    with pytest.raises(InvalidDocumentError, match="too deeply nested"):
        load_json(obj, limit=None)


def test_depth_bound_is_exact() -> None:
    assert load_json(json.dumps(nested(MAX_JSON_DEPTH)).encode()) == nested(MAX_JSON_DEPTH)
    with pytest.raises(InvalidDocumentError, match="too deeply nested"):
        load_json(json.dumps(nested(MAX_JSON_DEPTH + 1)).encode())


def test_size_bound_is_checked_before_parsing() -> None:
    with pytest.raises(InvalidDocumentError, match="larger than 10 bytes"):
        load_json(b'{"a": "0123456789"}', what="thing", limit=10)
    assert load_json(b"[1]", limit=3) == [1]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": Infinity}', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_not_strict_json_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidDocumentError, match=message):
        load_json(raw)


def test_duplicate_keys_are_refused_and_reported() -> None:
    raw = b'{"annotations": {"k": "a", "k": "b"}}'
    with pytest.raises(InvalidDocumentError, match="repeats the key 'k'"):
        load_json(raw, what="manifest")
    obj, duplicates = parse_json(raw)
    assert duplicates == ["k"] and obj == {"annotations": {"k": "b"}}


def test_object_required() -> None:
    with pytest.raises(InvalidDocumentError, match="index.json must be a JSON object, got list"):
        load_json_object(b"[]", what="index.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=30,
)


@given(json_values)
def test_any_json_within_bounds_round_trips(value: Any) -> None:
    assert load_json(json.dumps(value).encode(), limit=None) == value


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_value_or_a_documented_error(raw: bytes) -> None:
    try:
        load_json(raw)
    except InvalidDocumentError:
        pass

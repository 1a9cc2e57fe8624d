"""Property tests for the parsers that read outside input and have no home elsewhere:
``Link`` headers, manifests and indexes, a layout's ``index.json``, tar headers. (References,
digests and ``WWW-Authenticate`` have theirs in test_reference, test_digest and test_auth.)
Whatever the input, the outcome is a value or a documented error, never another exception."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybridstore.archive.tar import TarReader, TarSource
from hybridstore.errors import InvalidArchiveError, InvalidInputError, UnsupportedAlgorithmError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.model import Index, Manifest, parse_document
from hybridstore.remote.http import parse_link
from hybridstore.store.layout_files import check_index

DIGEST = "sha256:" + "a" * 64
DESCRIPTOR = {"mediaType": mt.OCI_MANIFEST, "digest": DIGEST, "size": 7}

leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
values = st.recursive(
    leaves | st.just(DIGEST) | st.sampled_from([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.OCI_CONFIG]),
    lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.text(max_size=10), kids, max_size=3),
    max_leaves=15,
)
fields = st.sampled_from(
    ["schemaVersion", "mediaType", "config", "layers", "manifests", "subject", "annotations",
     "artifactType", "digest", "size", "urls", "platform"]
)  # fmt: skip


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with some fields replaced, added or removed, nested descriptors included."""
    descriptor = st.fixed_dictionaries({}, optional={k: values for k in DESCRIPTOR}).map(
        lambda d: {**DESCRIPTOR, **d}
    ) | st.dictionaries(fields, values, max_size=5)
    extra = st.dictionaries(fields, values | descriptor | st.lists(descriptor, max_size=3))
    return st.tuples(extra, st.sets(st.sampled_from(sorted(base)))).map(
        lambda change: {k: v for k, v in {**base, **change[0]}.items() if k not in change[1]}
    )


MANIFEST = {
    "schemaVersion": 2,
    "mediaType": mt.OCI_MANIFEST,
    "config": {**DESCRIPTOR, "mediaType": mt.OCI_CONFIG},
    "layers": [{**DESCRIPTOR, "mediaType": mt.OCI_LAYER_TAR_GZIP}],
}
INDEX = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [DESCRIPTOR]}


@given(mutated(MANIFEST) | mutated(INDEX), st.sampled_from([None, mt.OCI_MANIFEST, mt.OCI_INDEX]))
@example(MANIFEST, None)
@example(INDEX, mt.OCI_INDEX)
def test_documents_parse_or_raise_a_documented_error(doc: dict[str, Any], kind: str | None) -> None:
    raw = json.dumps(doc).encode()
    try:
        parsed = parse_document(raw, kind)
    except (InvalidInputError, UnsupportedAlgorithmError):
        return
    assert isinstance(parsed, (Manifest, Index)) and parsed.raw == raw
    assert all(d.size >= 0 for d in parsed.children())


@given(mutated(INDEX) | values)
@example(INDEX)
def test_layout_index_json_is_an_index_or_a_documented_error(doc: Any) -> None:
    try:
        index = check_index(json.dumps(doc).encode(), "index.json")
    except InvalidInputError:
        return
    assert index["schemaVersion"] == 2 and isinstance(index["manifests"], list)


link_params = st.lists(
    st.sampled_from(['rel="next"', "rel=next", 'rel="prev next"', "type=x", "rel=", '"', ";"]),
    max_size=3,
)


@given(st.lists(st.tuples(st.text(max_size=20), link_params), max_size=3), st.text(max_size=40))
@example([("/v2/a/tags/list?n=1&last=b", ['rel="next"'])], "")
def test_link_headers_give_a_target_or_none(links: list[tuple[str, list[str]]], noise: str) -> None:
    header = ", ".join(f"<{target}>; " + "; ".join(params) for target, params in links) + noise
    target = parse_link(header, "next")
    assert target is None or f"<{target}>" in header
    assert parse_link(noise, "next") is None or "<" in noise


def tar_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


VALID_TAR = tar_of("blobs/sha256/" + "a" * 64, b"x" * 700)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, len(VALID_TAR) - 1), st.integers(0, 255)), max_size=8))
def test_damaged_tar_headers_give_members_or_an_archive_error(
    flips: list[tuple[int, int]],
) -> None:
    data = bytearray(VALID_TAR)
    for offset, value in flips:
        data[offset] = value
    try:
        reader = TarReader(TarSource(io.BytesIO(bytes(data)), 1 << 20), 100)
        for member in reader:
            assert member.size >= 0 and not member.name.startswith("/")
            assert ".." not in member.name.split("/")
            b"".join(reader.chunks())
    except InvalidArchiveError:
        pass


@given(st.binary(max_size=2048))
def test_random_bytes_are_no_tar_or_a_clean_error(data: bytes) -> None:
    try:
        for _ in TarReader(TarSource(io.BytesIO(data), 1 << 20), 100):
            pass
    except InvalidArchiveError:
        pass

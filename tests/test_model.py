"""Descriptor / Manifest / Index parsing keeps exact bytes and refuses unsafe documents."""

from __future__ import annotations

import json

import pytest

from hybridstore.errors import InvalidDocumentError, UnsupportedMediaTypeError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor, Index, Manifest, Platform, parse_document

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def _desc(mtype: str = mt.OCI_LAYER_TAR_GZIP, digest: str = D1, size: int = 3) -> dict[str, object]:
    return {"mediaType": mtype, "digest": digest, "size": size}


def _manifest(**extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _desc(mt.OCI_CONFIG, D2, 2),
        "layers": [_desc()],
    }
    doc.update(extra)
    return doc


def test_manifest_keeps_exact_bytes_and_digest() -> None:
    raw = b'{ "schemaVersion":2,\n "mediaType": "%s", "config": %s, "layers": [] }' % (
        mt.OCI_MANIFEST.encode(),
        json.dumps(_desc(mt.OCI_CONFIG)).encode(),
    )
    doc = parse_document(raw)
    assert isinstance(doc, Manifest)
    assert doc.raw == raw
    assert doc.digest == Digest.of_bytes(raw)
    assert doc.descriptor().size == len(raw)


def test_manifest_children_are_config_then_layers() -> None:
    doc = parse_document(json.dumps(_manifest()).encode())
    assert isinstance(doc, Manifest)
    assert [str(d.digest) for d in doc.children()] == [D2, D1]


def test_index_children_and_platforms() -> None:
    child = dict(_desc(mt.OCI_MANIFEST), platform={"os": "linux", "architecture": "arm64"})
    raw = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [child]})
    doc = parse_document(raw.encode())
    assert isinstance(doc, Index)
    (only,) = doc.children()
    assert only.platform == Platform("linux", "arm64")


@pytest.mark.parametrize(
    "doc",
    [
        _manifest(manifests=[]),
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [], "layers": []},
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [], "config": _desc()},
    ],
    ids=["manifest-with-manifests", "index-with-layers", "index-with-config"],
)
def test_ambiguous_documents_are_rejected(doc: dict[str, object]) -> None:
    with pytest.raises(InvalidDocumentError, match="ambiguous|must not"):
        parse_document(json.dumps(doc).encode())


def test_schema1_is_rejected_with_a_clear_message() -> None:
    raw = json.dumps({"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": []}).encode()
    with pytest.raises(UnsupportedMediaTypeError, match="schema1"):
        parse_document(raw)


def test_media_type_must_agree_with_what_it_was_fetched_as() -> None:
    with pytest.raises(InvalidDocumentError, match="mismatch"):
        parse_document(json.dumps(_manifest()).encode(), mt.OCI_INDEX)


@pytest.mark.parametrize(
    "bad",
    [
        {"mediaType": "x", "digest": D1, "size": -1},
        {"mediaType": "x", "digest": D1, "size": True},
        {"mediaType": "x", "digest": "sha256:../../etc", "size": 1},
        {"mediaType": "x", "digest": D1.upper(), "size": 1},
        {"mediaType": 3, "digest": D1, "size": 1},
        {"mediaType": "x", "digest": D1, "size": 1, "annotations": {"a": 1}},
    ],
)
def test_bad_descriptors_are_invalid_documents(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidDocumentError):
        Descriptor.from_json(bad)


def test_descriptor_round_trips_unknown_fields() -> None:
    obj = dict(_desc(), annotations={"k": "v"}, artifactType="application/x", future={"a": 1})
    assert Descriptor.from_json(obj).to_json() == obj


@pytest.mark.parametrize("junk", [b"", b"[]", b"\xff\xfe", b"{", b'"x"', b"{}"])
def test_junk_is_an_invalid_document(junk: bytes) -> None:
    with pytest.raises(InvalidDocumentError):
        parse_document(junk)


@pytest.mark.parametrize(
    ("text", "want"),
    [("linux/amd64", Platform("linux", "amd64")), ("linux/arm/v7", Platform("linux", "arm", "v7"))],
)
def test_platform_parse(text: str, want: Platform) -> None:
    assert Platform.parse(text) == want


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d"])
def test_platform_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidDocumentError):
        Platform.parse(text)


def test_platform_variant_matching() -> None:
    assert Platform("linux", "arm64").matches(Platform("linux", "arm64", "v8"))
    assert not Platform("linux", "arm", "v7").matches(Platform("linux", "arm", "v6"))
    assert not Platform("linux", "amd64").matches(Platform("windows", "amd64"))

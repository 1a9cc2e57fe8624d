"""Unit tests of hybridstore.oci.schema: the bundled schemas, the closed registry, semantics."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable, Unretrievable

from hybridstore.errors import (
    InvalidDigestError,
    InvalidDocumentError,
    UnsupportedMediaTypeError,
)
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.limits import MAX_JSON_DEPTH
from hybridstore.oci.schema import (
    MAX_PROBLEMS,
    SCHEMA_BASE_URI,
    SUPPORTED_MEDIA_TYPES,
    build_registry,
    check_document,
    guess_media_type,
    registry,
    resolve_media_type,
    schema_dir,
    validate_document,
    validate_or_raise,
)

REPO = Path(__file__).resolve().parents[1]
SHA = "sha256:" + "a" * 64
EMPTY = {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST, "size": 2}


def desc(media_type: str = mt.OCI_LAYER_TAR_GZIP, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": SHA, "size": 10, **extra}


def manifest(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(mt.OCI_CONFIG),
        "layers": [desc()],
        **extra,
    }


def index(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [desc(mt.OCI_MANIFEST)],
        **extra,
    }


def config(**extra: Any) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [SHA]},
        **extra,
    }


def problems(doc: Any, media_type: str | None = None) -> list[str]:
    return validate_document(json.dumps(doc).encode(), media_type)


def data_descriptor(content: bytes, algorithm: str = "sha256", **over: Any) -> dict[str, Any]:
    d = {
        "mediaType": "text/plain",
        "digest": str(Digest.of_bytes(content, algorithm)),
        "size": len(content),
        "data": base64.b64encode(content).decode(),
    }
    d.update(over)
    return d


# ---------------------------------------------------------------- bundled schemas, registry


def test_schemas_are_found_in_the_checkout() -> None:
    assert schema_dir() == REPO / "schemas"


@pytest.mark.parametrize("path", sorted((REPO / "schemas").glob("*.json")), ids=lambda p: p.name)
def test_bundled_schema_is_valid_draft_2020_12(path: Path) -> None:
    contents = json.loads(path.read_text())
    assert contents["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert contents["$id"] == SCHEMA_BASE_URI + path.name
    Draft202012Validator.check_schema(contents)


def test_every_supported_media_type_has_a_schema() -> None:
    names = {p.name for p in (REPO / "schemas").glob("*.json")}
    assert names == {
        "defs.json",
        "descriptor.json",
        "image-manifest.json",
        "image-index.json",
        "image-config.json",
        "image-layout.json",
        "hybridstore-project.json",  # hybridstore.yaml (project/projectfile.py)
        "hybridstore-lock.json",  # hybridstore.lock (project/lockfile.py)
    }
    for media_type in SUPPORTED_MEDIA_TYPES:
        assert resolve_media_type(media_type) == media_type


@pytest.mark.parametrize(
    "ref",
    [
        "file:///etc/passwd",
        "http://127.0.0.1:1/schema.json",
        "https://json-schema.example/evil.json",
        "../../etc/passwd",  # relative: resolves beside the bundled schemas, still refused
        SCHEMA_BASE_URI + "not-bundled.json",
    ],
)
def test_registry_refuses_every_uri_it_does_not_bundle(ref: str) -> None:
    schema = {"$id": SCHEMA_BASE_URI + "probe.json", "$ref": ref}
    validator = Draft202012Validator(schema, registry=registry())
    with pytest.raises(Unresolvable) as excinfo:
        validator.validate({})
    cause: BaseException | None = excinfo.value
    messages = []
    while cause is not None:
        messages.append(str(cause))
        cause = cause.__cause__
    assert any("refusing to load schema" in m and "no files, no network" in m for m in messages)


def test_registry_refuses_direct_retrieval() -> None:
    with pytest.raises(Unretrievable) as excinfo:
        registry().get_or_retrieve("file:///etc/passwd")
    assert isinstance(excinfo.value.__cause__, InvalidDocumentError)


def test_registry_resolves_bundled_refs() -> None:
    # Positive control for the refusal tests: a bundled schema is reachable by URI.
    validator = Draft202012Validator(
        {"$ref": SCHEMA_BASE_URI + "descriptor.json"}, registry=registry()
    )
    validator.validate(desc())
    assert not validator.is_valid({"mediaType": "x"})


def test_build_registry_rejects_a_schema_with_a_foreign_id(tmp_path: Path) -> None:
    shutil.copytree(REPO / "schemas", tmp_path, dirs_exist_ok=True)
    doc = json.loads((tmp_path / "defs.json").read_text())
    doc["$id"] = "file:///etc/passwd"
    (tmp_path / "defs.json").write_text(json.dumps(doc))
    with pytest.raises(OSError, match="must have \\$id"):
        build_registry(tmp_path)


def test_installed_wheel_layout_prefers_bundled_schemas(tmp_path: Path) -> None:
    # A wheel ships schemas/ as hybridstore/_schemas (pyproject force-include).
    pkg = tmp_path / "hybridstore"
    shutil.copytree(REPO / "hybridstore", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "schemas", pkg / "_schemas")
    code = (
        "import sys, hybridstore.oci.schema as s;"
        "assert 'jsonschema' not in sys.modules, 'jsonschema imported eagerly';"
        "print(s.schema_dir());"
        'print(s.validate_document(b\'{"imageLayoutVersion": "1.0.0"}\'))'
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [str(pkg / "_schemas"), "[]"]


# ---------------------------------------------------------------- hostile input


TOO_DEEP = f"document is too deeply nested (more than {MAX_JSON_DEPTH} levels); refusing it"


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deeply_nested_arrays_are_a_problem_not_a_crash(depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    assert validate_document(deep) == [TOO_DEEP]
    inside = b'{"schemaVersion": 2, "manifests": [], "x": ' + deep + b"}"
    assert "too deeply nested" in validate_document(inside, mt.OCI_INDEX)[0]


def test_depth_limit_applies_below_the_parser_limit() -> None:
    nested: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH):
        nested = [nested]
    assert problems(index(x=nested)) == [TOO_DEEP]
    assert problems(index(x=[[[["ok"]]]])) == []


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'\xef\xbb\xbf{"imageLayoutVersion": "1.0.0"}', "not valid JSON"),
        (b'{"imageLayoutVersion": "1.0.0", "x": NaN}', "NaN is not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
    ],
)
def test_unparsable_input(raw: bytes, fragment: str) -> None:
    found = validate_document(raw, mt.OCI_LAYOUT_HEADER)
    assert len(found) == 1 and fragment in found[0]


def test_duplicate_keys_are_refused() -> None:
    raw = b'{"imageLayoutVersion": "9", "imageLayoutVersion": "1.0.0"}'
    assert validate_document(raw) == [
        "duplicate key 'imageLayoutVersion': parsers disagree on which value wins; "
        "remove the repeat"
    ]


def test_problem_list_is_capped() -> None:
    doc = manifest(layers=[desc(size="1") for _ in range(MAX_PROBLEMS + 20)])
    found = problems(doc)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[-1] == "... and 20 more problems"


def test_huge_instances_are_shown_shortened() -> None:
    found = problems(desc(mediaType="a" * 10_000))
    assert len(found) == 1 and len(found[0]) < 300


# ---------------------------------------------------------------- descriptors and digests


@pytest.mark.parametrize(
    ("digest", "valid"),
    [
        ("sha256:" + "0" * 64, True),
        ("sha256:" + "0" * 63, False),
        ("sha256:" + "A" * 64, False),
        ("sha512:" + "f" * 128, True),
        ("sha512:" + "f" * 64, False),
        ("blake3:" + "f" * 64, True),
        ("blake3:" + "F" * 64, False),
        ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", True),
        ("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", True),
        ("sha256:../../etc/passwd", False),
        ("sha256:" + "0" * 64 + "\n", False),
        ("x:" + "a" * 2000, False),  # grammatical but longer than any digest we accept
    ],
)
def test_digest_rules_per_algorithm(digest: str, valid: bool) -> None:
    assert (problems(desc(digest=digest), mt.OCI_DESCRIPTOR) == []) is valid
    # The same rule holds for every descriptor position in a manifest and index.
    assert (problems(manifest(layers=[desc(digest=digest)])) == []) is valid
    assert (problems(index(subject=desc(mt.OCI_MANIFEST, digest=digest))) == []) is valid


_DIGESTISH = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"\A[a-z0-9]{1,8}([+._-][a-z0-9]{1,4}){0,2}:[a-zA-Z0-9=_-]{1,140}\Z"),
    st.from_regex(r"\A(sha256|sha512):[a-fA-F0-9]{60,130}\Z"),
)


@settings(max_examples=300, deadline=None)
@given(_DIGESTISH)
def test_descriptor_validity_agrees_with_digest_parse(digest: str) -> None:
    try:
        Digest.parse(digest)
        expected = True
    except InvalidDigestError:
        expected = False
    assert (problems(desc(digest=digest), mt.OCI_DESCRIPTOR) == []) is expected


def test_data_field_matching_content_is_valid() -> None:
    assert problems(data_descriptor(b"hello\n"), mt.OCI_DESCRIPTOR) == []
    assert problems(data_descriptor(b"hello\n", "sha512"), mt.OCI_DESCRIPTOR) == []
    assert problems(manifest(config={**EMPTY, "data": "e30="}, artifactType="a/b")) == []


def test_data_field_with_other_content_is_a_digest_mismatch() -> None:
    d = data_descriptor(b"hello\n", data=base64.b64encode(b"HELLO\n").decode())
    found = problems(d, mt.OCI_DESCRIPTOR)
    assert len(found) == 1
    assert found[0].startswith("$.data: content has digest sha256:")
    assert hashlib.sha256(b"HELLO\n").hexdigest() in found[0]


def test_data_field_with_other_length_is_a_size_mismatch() -> None:
    d = data_descriptor(b"hello\n", size=7)
    assert problems(d, mt.OCI_DESCRIPTOR) == ["$.data: decodes to 6 bytes but size says 7"]
    layer = data_descriptor(b"x", size=2)
    assert problems(manifest(layers=[layer])) == [
        "$.layers[0].data: decodes to 1 bytes but size says 2"
    ]


@pytest.mark.parametrize("data", ["aGVsbG8K\n", "aGVsbG8", "aGVs*G8K", "aGVsbG8K===", "-_-_"])
def test_data_field_must_be_padded_standard_base64(data: str) -> None:
    found = problems(data_descriptor(b"hello\n", data=data), mt.OCI_DESCRIPTOR)
    assert len(found) == 1 and found[0].startswith("$.data: ")


def test_data_digest_is_not_checked_for_unverifiable_algorithms() -> None:
    d = data_descriptor(b"hi", digest="blake3:" + "0" * 64)
    assert problems(d, mt.OCI_DESCRIPTOR) == []
    assert problems({**d, "size": 3}, mt.OCI_DESCRIPTOR) == [
        "$.data: decodes to 2 bytes but size says 3"
    ]


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://example.com/blob", True),
        ("http://[::1]:5000/v2/x?a=b#c", True),
        ("s3://bucket/key%20name", True),
        ("example.com/blob", False),
        ("/relative/path", False),
        ("https://exa mple.com/", False),
        ("https://example.com/%zz", False),
        ("", False),
    ],
)
def test_urls_must_be_absolute_uris(url: str, valid: bool) -> None:
    assert (problems(desc(urls=[url]), mt.OCI_DESCRIPTOR) == []) is valid
    assert (problems(manifest(layers=[desc(urls=[url])])) == []) is valid


def test_unknown_media_types_inside_descriptors_are_valid() -> None:
    doc = manifest(
        config=desc("application/vnd.example.unknown.config+json"),
        layers=[desc("application/x-whatever"), desc(mt.DOCKER_LAYER_GZIP)],
        subject=desc("application/vnd.unknown+json"),
    )
    assert problems(doc) == []
    assert problems(index(manifests=[desc("application/customized.manifest+json")])) == []


@pytest.mark.parametrize("bad", ["application/json\n", "application", "a/b c", "a/" + "b" * 128])
def test_media_type_grammar_applies_at_every_depth(bad: str) -> None:
    # "\n" catches Python's '$' matching before a trailing newline (ECMA's does not).
    assert problems(desc(bad), mt.OCI_DESCRIPTOR)
    assert problems(manifest(layers=[desc(bad)]))
    assert problems(index(manifests=[desc(bad)]))
    assert problems(manifest(artifactType=bad))


@pytest.mark.parametrize("size", [1.0, -1, "10", True, 2**63])
def test_size_must_be_a_non_negative_int64(size: Any) -> None:
    assert problems(desc(size=size), mt.OCI_DESCRIPTOR)
    assert problems(manifest(layers=[desc(size=size)]))


# ---------------------------------------------------------------- manifests, indexes, Docker


def test_docker_schema2_manifest_and_list_validate() -> None:
    docker = manifest(
        mediaType=mt.DOCKER_MANIFEST,
        config=desc(mt.DOCKER_CONFIG),
        layers=[desc(mt.DOCKER_LAYER_GZIP), desc(mt.DOCKER_FOREIGN_LAYER_GZIP)],
    )
    assert problems(docker, mt.DOCKER_MANIFEST) == []
    assert check_document(json.dumps(docker).encode()).media_type == mt.DOCKER_MANIFEST
    listing = index(
        mediaType=mt.DOCKER_MANIFEST_LIST,
        manifests=[
            desc(
                mt.DOCKER_MANIFEST,
                platform={
                    "architecture": "arm",
                    "os": "linux",
                    "variant": "v7",
                    "features": ["sse4"],
                },
            )
        ],
    )
    assert problems(listing, mt.DOCKER_MANIFEST_LIST) == []
    assert problems(config(), mt.DOCKER_CONFIG) == []
    # Docker documents follow the same structure rules as OCI ones.
    assert problems({**docker, "layers": [desc(size="1")]}, mt.DOCKER_MANIFEST)


@pytest.mark.parametrize(
    ("own", "requested"),
    [
        (mt.DOCKER_MANIFEST, mt.OCI_MANIFEST),
        (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST),
        (mt.OCI_INDEX, mt.OCI_MANIFEST),
        ("application/vnd.example+json", mt.OCI_MANIFEST),
    ],
)
def test_document_media_type_must_match_the_requested_one(own: str, requested: str) -> None:
    doc = manifest(mediaType=own)
    assert f"$.mediaType: document says {own!r} but is being validated as {requested!r}" in (
        problems(doc, requested)
    )


def test_media_type_field_is_optional() -> None:
    doc = manifest()
    del doc["mediaType"]
    assert problems(doc, mt.OCI_MANIFEST) == []
    assert problems(doc) == []


@pytest.mark.parametrize(
    "doc",
    [
        {"schemaVersion": 1, "name": "library/x", "tag": "1", "fsLayers": []},
        {"schemaVersion": 1, "mediaType": mt.DOCKER_SCHEMA1},
        {"schemaVersion": 2, "mediaType": mt.DOCKER_SCHEMA1_SIGNED},
    ],
)
def test_docker_schema1_is_unsupported(doc: dict[str, Any]) -> None:
    raw = json.dumps(doc).encode()
    for requested in (None, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST, mt.DOCKER_SCHEMA1):
        report = check_document(raw, requested)
        assert report.unsupported
        assert len(report.problems) == 1 and "schema1" in report.problems[0]
    with pytest.raises(UnsupportedMediaTypeError, match="schema1"):
        validate_or_raise(raw)


def test_requesting_schema1_is_unsupported_whatever_the_bytes() -> None:
    report = check_document(b"not even json", mt.DOCKER_SCHEMA1)
    assert report.unsupported and "schema1" in report.problems[0]


@pytest.mark.parametrize(
    "requested", [None, mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST]
)
@pytest.mark.parametrize("extra", ["config", "layers"])
def test_ambiguous_manifest_and_index_is_invalid(requested: str | None, extra: str) -> None:
    # CVE-2021-41190: one document both an index and a manifest.
    doc = index(mediaType=requested) if requested else index()
    if requested is None:
        del doc["mediaType"]
    doc[extra] = manifest()[extra]
    found = problems(doc, requested)
    assert any("ambiguous document" in p for p in found), found


def test_empty_config_requires_artifact_type() -> None:
    doc = manifest(config=EMPTY)
    assert problems(doc) == [
        f"$.artifactType: required when config.mediaType is the empty type {mt.OCI_EMPTY}"
    ]
    assert problems(manifest(config=EMPTY, artifactType="application/vnd.example")) == []


def test_index_platform_needs_os_and_architecture() -> None:
    ok = index(manifests=[desc(mt.OCI_MANIFEST, platform={"os": "linux", "architecture": "x"})])
    assert problems(ok) == []
    bad = index(manifests=[desc(mt.OCI_MANIFEST, platform={"os": "linux"})])
    assert problems(bad) == ["$.manifests[0].platform: 'architecture' is a required property"]


@pytest.mark.parametrize("version", [1.0, 2.0, 3, "2"])
def test_schema_version_must_be_integer_2(version: Any) -> None:
    assert problems(manifest(schemaVersion=version), mt.OCI_MANIFEST)
    assert problems(index(schemaVersion=version), mt.OCI_INDEX)


# ---------------------------------------------------------------- config and layout


@pytest.mark.parametrize(
    ("env", "valid"),
    [
        (["PATH=/bin", "EMPTY=", "A==b", "WEIRD KEY=x"], True),
        (["foo"], False),
        (["=value"], False),
        ([7353], False),
    ],
)
def test_config_env_entries_are_key_value(env: list[Any], valid: bool) -> None:
    # The spec's vectors mix this with another fault (os: 123); here Env is the only one.
    assert (problems(config(config={"Env": env}), mt.OCI_CONFIG) == []) is valid


def test_config_field_types() -> None:
    assert problems(config(config={"Volumes": ["/data"]})) == [
        "$.config.Volumes: ['/data'] is not of type 'object', 'null'"
    ]
    assert problems(config(history="x")) == ["$.history: 'x' is not of type 'array'"]
    nullable = {"Cmd": None, "Entrypoint": None, "Volumes": None, "Labels": None}
    assert problems(config(config=nullable)) == []


@pytest.mark.parametrize(
    ("created", "valid"),
    [
        ("2015-10-31T22:22:56.015925234Z", True),
        ("2015-10-31T22:22:56+01:00", True),
        ("2016-12-31T23:59:60Z", True),
        ("2015-10-31 22:22:56Z", False),
        ("2015-02-30T00:00:00Z", False),
        ("yesterday", False),
    ],
)
def test_config_created_is_rfc3339(created: str, valid: bool) -> None:
    assert (problems(config(created=created)) == []) is valid
    assert (problems(config(history=[{"created": created}])) == []) is valid


def test_config_diff_ids_follow_digest_rules() -> None:
    doc = config(rootfs={"type": "layers", "diff_ids": ["sha256:" + "A" * 64]})
    found = problems(doc)
    assert len(found) == 1 and found[0].startswith("$.rootfs.diff_ids[0]: invalid digest")


@pytest.mark.parametrize("version", ["1.0.0"])
def test_layout_header(version: str) -> None:
    assert problems({"imageLayoutVersion": version}) == []
    assert problems({"imageLayoutVersion": "1.1.0"})
    assert problems({}, mt.OCI_LAYOUT_HEADER) == ["$: 'imageLayoutVersion' is a required property"]


# ---------------------------------------------------------------- API surface


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("manifest", mt.OCI_MANIFEST),
        ("INDEX", mt.OCI_INDEX),
        ("layout", mt.OCI_LAYOUT_HEADER),
        ("docker-manifest-list", mt.DOCKER_MANIFEST_LIST),
        (mt.OCI_CONFIG + "; charset=utf-8", mt.OCI_CONFIG),
    ],
)
def test_resolve_media_type(name: str, expected: str) -> None:
    assert resolve_media_type(name) == expected


@pytest.mark.parametrize("name", [mt.OCI_LAYER_TAR_GZIP, "text/plain", ""])
def test_unknown_requested_media_type_is_refused(name: str) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="cannot validate media type"):
        validate_document(b"{}", name)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (manifest(), mt.OCI_MANIFEST),
        ({k: v for k, v in manifest().items() if k != "mediaType"}, mt.OCI_MANIFEST),
        (index(), mt.OCI_INDEX),
        ({"schemaVersion": 2, "manifests": []}, mt.OCI_INDEX),
        (desc(mt.OCI_INDEX), mt.OCI_DESCRIPTOR),
        (config(), mt.OCI_CONFIG),
        ({"imageLayoutVersion": "1.0.0"}, mt.OCI_LAYOUT_HEADER),
        ({"schemaVersion": 1}, mt.DOCKER_SCHEMA1),
    ],
)
def test_guess_media_type(doc: dict[str, Any], expected: str) -> None:
    assert guess_media_type(doc) == expected


def test_unguessable_document_is_a_problem() -> None:
    assert problems({"hello": "world"}) == [
        "cannot tell which kind of OCI document this is (no schemaVersion, manifests, digest, "
        "rootfs or imageLayoutVersion); pass its media type"
    ]
    with pytest.raises(InvalidDocumentError):
        guess_media_type([])


def test_validate_or_raise() -> None:
    assert validate_or_raise(json.dumps(index()).encode()) == mt.OCI_INDEX
    bad = copy.deepcopy(manifest())
    bad["layers"] = [desc(size="1"), desc(size="2"), desc(size="3"), desc(size="4")]
    with pytest.raises(InvalidDocumentError) as excinfo:
        validate_or_raise(json.dumps(bad).encode(), "manifest")
    message = str(excinfo.value)
    assert message.startswith(f"invalid {mt.OCI_MANIFEST}: $.layers[0].size: ")
    assert message.endswith("(and 1 more)") and "\n" not in message

"""The OCI image spec's own validation vectors, each classified exactly as the spec does.

The vectors live outside the repository, in ``<repo>/../shared/conformance/oci-image-spec/``
(CI copies ``shared/`` beside its clone); ``HYBRIDSTORE_CONFORMANCE_DIR`` points elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hybridstore.oci import mediatypes as mt
from hybridstore.oci.schema import check_document, guess_media_type

# What each vector file's documents are, per the conformance README.
KIND_MEDIA_TYPES = {
    "manifest": mt.OCI_MANIFEST,
    "index": mt.OCI_INDEX,
    "descriptor": mt.OCI_DESCRIPTOR,
    "config": mt.OCI_CONFIG,
    "layout": mt.OCI_LAYOUT_HEADER,
}
# Backwards-compatibility vectors keep the original Docker document too.
DOCKER_MEDIA_TYPES = {
    "manifest": mt.DOCKER_MANIFEST,
    "index": mt.DOCKER_MANIFEST_LIST,
    "config": mt.DOCKER_CONFIG,
}
EXAMPLES = "spec-examples"

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "conformance" / "oci-image-spec" / "vectors"


@dataclass(frozen=True)
class Vector:
    file: str
    index: int
    media_type: str
    document: str
    valid: bool
    comment: str
    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}-{self.index}"


def find_vectors_dir() -> tuple[Path | None, str]:
    """The vectors directory, or None and why it is missing."""
    env = os.environ.get("HYBRIDSTORE_CONFORMANCE_DIR")
    if env:
        base = Path(env)
        for candidate in (base, base / "vectors", base / "oci-image-spec" / "vectors"):
            if (candidate / "manifest.json").is_file():
                return candidate, ""
        return None, f"HYBRIDSTORE_CONFORMANCE_DIR={env} holds no manifest.json vectors"
    if (DEFAULT_DIR / "manifest.json").is_file():
        return DEFAULT_DIR, ""
    return None, (
        f"OCI conformance vectors not found at {DEFAULT_DIR}; "
        "copy shared/ beside the repository or set HYBRIDSTORE_CONFORMANCE_DIR"
    )


def load_vectors(directory: Path) -> list[Vector]:
    out: list[Vector] = []
    for kind, media_type in KIND_MEDIA_TYPES.items():
        for i, entry in enumerate(json.loads((directory / f"{kind}.json").read_text())):
            out.append(
                Vector(
                    kind,
                    i,
                    media_type,
                    entry["document"],
                    entry["valid"],
                    entry.get("comment", ""),
                    entry,
                )
            )
    for i, entry in enumerate(json.loads((directory / f"{EXAMPLES}.json").read_text())):
        out.append(
            Vector(
                EXAMPLES,
                i,
                entry["mediaType"],
                entry["document"],
                entry["valid"],
                f"{entry['source']}: {entry.get('title', '')}",
                entry,
            )
        )
    return out


VECTORS_DIR, MISSING = find_vectors_dir()
VECTORS = load_vectors(VECTORS_DIR) if VECTORS_DIR else []


def params(vectors: list[Vector]) -> list[Any]:
    if VECTORS_DIR is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING), id="no-vectors")]
    return [pytest.param(v, id=v.id) for v in vectors]


@pytest.mark.parametrize("vector", params(VECTORS))
def test_vector_is_classified_as_the_spec_does(vector: Vector) -> None:
    report = check_document(vector.document.encode(), vector.media_type)
    assert report.media_type == vector.media_type
    if vector.valid:
        assert report.problems == (), f"{vector.comment}: unexpected problems"
    else:
        assert report.problems, f"{vector.comment}: accepted but the spec rejects it"


@pytest.mark.parametrize("vector", params([v for v in VECTORS if v.valid]))
def test_valid_vector_media_type_is_guessed(vector: Vector) -> None:
    assert guess_media_type(json.loads(vector.document)) == vector.media_type
    assert check_document(vector.document.encode()).valid


@pytest.mark.parametrize("vector", params([v for v in VECTORS if "docker_document" in v.raw]))
def test_docker_original_is_valid_as_its_docker_media_type(vector: Vector) -> None:
    docker_type = DOCKER_MEDIA_TYPES[vector.file]
    raw = vector.raw["docker_document"].encode()
    assert check_document(raw, docker_type).problems == ()
    # Only manifests and lists name themselves; a config carries no media type.
    if vector.file != "config":
        assert check_document(raw).media_type == docker_type
        # Validated as the OCI type, its own Docker mediaType is a mismatch.
        problems = check_document(raw, vector.media_type).problems
        assert any("$.mediaType" in p for p in problems)


def test_every_vector_file_is_read() -> None:
    if VECTORS_DIR is None:
        pytest.skip(MISSING)
    on_disk = {p.stem for p in VECTORS_DIR.glob("*.json")}
    assert on_disk == {*KIND_MEDIA_TYPES, EXAMPLES}
    per_file = {v.file for v in VECTORS}
    assert per_file == on_disk
    # Both verdicts are exercised for every kind that has a test list.
    for kind in KIND_MEDIA_TYPES:
        assert {v.valid for v in VECTORS if v.file == kind} == {True, False}, kind

"""Referrer rules: manifests attached to another through ``subject`` (signatures, SBOMs).

The pure part of the OCI 1.1 referrers model, shared by registries and layouts:
the ``<alg>-<encoded>`` tag-schema fallback name, the descriptor a referrer gets
in a referrers index (``artifactType`` and annotations lifted from the
manifest), and merging one more referrer into a fallback index. The fallback
index is bookkeeping that we write ourselves, so it is the one document
hybridstore serialises; everything else is copied as exact bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

from hybridstore.errors import InvalidDocumentError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor, Index, Manifest, parse_document

__all__ = [
    "fallback_tag",
    "filter_referrers",
    "fallback_subject",
    "is_fallback_tag",
    "merge_fallback_index",
    "referrer_descriptor",
    "referrers_of_index",
]

_FALLBACK_TAG: Final = re.compile(r"(sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})", re.ASCII)


def fallback_tag(subject: Digest) -> str:
    """The tag-schema fallback tag of ``subject``: ``sha256-<hex>`` (truncated to 128)."""
    return f"{subject.algorithm}-{subject.encoded}"[:128]


def is_fallback_tag(tag: str) -> bool:
    """Whether ``tag`` looks like a referrers fallback tag (not a user's tag)."""
    return _FALLBACK_TAG.fullmatch(tag) is not None


def fallback_subject(name: str) -> str | None:
    """The subject digest (``sha256:<hex>``) a layout ref name ``[repo:]sha256-<hex>`` stands
    for, when it is a referrers fallback name rather than a user's ref; else None."""
    tail = name.rpartition("/")[2]
    tag = tail.rpartition(":")[2] if ":" in tail else tail
    if not is_fallback_tag(tag):
        return None
    algorithm, _, encoded = tag.partition("-")
    return f"{algorithm}:{encoded}"


def referrer_descriptor(desc: Descriptor, doc: Manifest | Index) -> Descriptor:
    """``desc`` as a referrers index lists it: with the manifest's artifact type and
    annotations (the spec's rule: ``artifactType``, else the config's media type)."""
    artifact_type = doc.artifact_type
    if artifact_type is None and isinstance(doc, Manifest):
        artifact_type = doc.config.media_type
    return Descriptor(
        desc.media_type,
        desc.digest,
        desc.size,
        annotations=dict(doc.annotations),
        artifact_type=artifact_type,
    )


def referrers_of_index(index: Index) -> list[Descriptor]:
    """The entries of a referrers index (API answer or fallback), manifests only."""
    return [d for d in index.manifests if mt.is_manifest(d.media_type) or mt.is_index(d.media_type)]


def filter_referrers(
    found: Sequence[Descriptor], artifact_types: Sequence[str]
) -> list[Descriptor]:
    """Keep referrers of the given artifact types (all when none are given), each once."""
    seen: set[Digest] = set()
    out = []
    for d in found:
        if d.digest in seen or (artifact_types and d.artifact_type not in artifact_types):
            continue
        seen.add(d.digest)
        out.append(d)
    return out


def merge_fallback_index(existing: bytes | None, referrer: Descriptor) -> bytes | None:
    """A fallback index listing ``referrer`` too; None when ``existing`` already does."""
    doc: dict[str, Any]
    if existing is None:
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    else:
        parsed = parse_document(existing, mt.OCI_INDEX)
        if not isinstance(parsed, Index):
            raise InvalidDocumentError("the referrers fallback tag does not name an image index")
        if any(d.digest == referrer.digest for d in parsed.manifests):
            return None
        doc = dict(parsed.json)
        doc["manifests"] = list(doc.get("manifests", []))
    doc["manifests"].append(referrer.to_json())
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

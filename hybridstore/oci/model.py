"""Descriptor, Platform, Manifest and Index value types.

Documents are parsed from bytes and keep those exact bytes: a digest is always
of the bytes as stored or received, never of re-serialised JSON. The structural
checks here are the ones every consumer needs to walk a graph safely; the full
schema and semantic validation lives in ``schema.py``.
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hybridstore.errors import InvalidDigestError, InvalidDocumentError, UnsupportedMediaTypeError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.jsondoc import load_json_object

__all__ = [
    "Descriptor",
    "Index",
    "Manifest",
    "Platform",
    "parse_document",
    "host_platform",
]

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]`` as on the command line (``linux/arm64/v8``)."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidDocumentError(
                f"invalid platform {text!r}: expected os/arch[/variant] such as linux/amd64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, obj: Any) -> Platform:
        if not isinstance(obj, dict) or not isinstance(obj.get("os"), str) or not isinstance(
            obj.get("architecture"), str
        ):
            raise InvalidDocumentError("platform needs string 'os' and 'architecture'")
        return cls(obj["os"], obj["architecture"], obj.get("variant"), obj.get("os.version"))

    def matches(self, other: Platform) -> bool:
        """Whether a manifest for ``other`` satisfies a request for ``self``."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or self.variant == other.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform() -> Platform:
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )
    return Platform("linux", arch)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor. ``extra`` keeps fields we do not model, for round trips."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()
    data: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, obj: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidDocumentError(f"{where}: must be an object")
        mtype, size, dig = obj.get("mediaType"), obj.get("size"), obj.get("digest")
        if not isinstance(mtype, str):
            raise InvalidDocumentError(f"{where}: 'mediaType' must be a string")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidDocumentError(f"{where}: 'size' must be a non-negative integer")
        if not isinstance(dig, str):
            raise InvalidDocumentError(f"{where}: 'digest' must be a string")
        try:
            digest = Digest.parse(dig)
        except InvalidDigestError as e:
            raise InvalidDocumentError(f"{where}: {e}") from None
        ann = obj.get("annotations") or {}
        if not isinstance(ann, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in ann.items()
        ):
            raise InvalidDocumentError(f"{where}: 'annotations' must map strings to strings")
        plat = Platform.from_json(obj["platform"]) if "platform" in obj else None
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise InvalidDocumentError(f"{where}: 'urls' must be a list of strings")
        known = {"mediaType", "size", "digest", "annotations", "platform", "artifactType"}
        known |= {"urls", "data"}
        return cls(
            media_type=mtype,
            digest=digest,
            size=size,
            annotations=dict(ann),
            platform=plat,
            artifact_type=obj.get("artifactType"),
            urls=tuple(urls),
            data=obj.get("data"),
            extra={k: v for k, v in obj.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = self.data
        if self.platform is not None:
            p: dict[str, Any] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.os_version:
                p["os.version"] = self.platform.os_version
            if self.platform.variant:
                p["variant"] = self.platform.variant
            out["platform"] = p
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        out.update(self.extra)
        return out

    def with_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            dict(annotations),
            self.platform,
            self.artifact_type,
            self.urls,
            self.data,
            self.extra,
        )

    @property
    def ref_name(self) -> str | None:
        return self.annotations.get(ANNOTATION_REF_NAME)


@dataclass(frozen=True)
class _Document:
    raw: bytes
    media_type: str
    json: Mapping[str, Any]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: Mapping[str, str]

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.raw)

    def descriptor(self) -> Descriptor:
        return Descriptor(
            self.media_type, self.digest, len(self.raw), artifact_type=self.artifact_type
        )


@dataclass(frozen=True)
class Manifest(_Document):
    config: Descriptor
    layers: tuple[Descriptor, ...]

    def children(self) -> Iterator[Descriptor]:
        """Config then layers: what must be present for this manifest to be complete."""
        yield self.config
        yield from self.layers

    @property
    def effective_artifact_type(self) -> str:
        return self.artifact_type or self.config.media_type


@dataclass(frozen=True)
class Index(_Document):
    manifests: tuple[Descriptor, ...]

    def children(self) -> Iterator[Descriptor]:
        yield from self.manifests


Document = Manifest | Index


def parse_document(raw: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or index from its exact bytes.

    ``media_type`` is the type the document was fetched or described as; it must
    agree with the document's own ``mediaType`` when both are present.
    """
    # The reader bounded ``raw`` already (``--max-manifest-size`` may raise the default cap).
    obj = load_json_object(raw, limit=None)
    own = obj.get("mediaType")
    if own is not None and not isinstance(own, str):
        raise InvalidDocumentError("'mediaType' must be a string")
    if (own in mt.SCHEMA1_TYPES or media_type in mt.SCHEMA1_TYPES) or obj.get(
        "schemaVersion"
    ) == 1:
        raise UnsupportedMediaTypeError(
            "Docker schema1 manifests are deprecated and not supported; "
            "re-push the image with a current client (schema2 or OCI)"
        )
    if own and media_type and own != media_type:
        raise InvalidDocumentError(
            f"media type mismatch: described as {media_type!r} but document says {own!r}"
        )
    has_manifests = "manifests" in obj
    has_image = "layers" in obj or "config" in obj
    if has_manifests and has_image:
        raise InvalidDocumentError(
            "ambiguous document: has both 'manifests' and 'config'/'layers'"
        )
    kind = own or media_type
    if kind is None:
        kind = mt.OCI_INDEX if has_manifests else mt.OCI_MANIFEST
    if obj.get("schemaVersion") != 2:
        raise InvalidDocumentError("'schemaVersion' must be 2")
    subject = Descriptor.from_json(obj["subject"], "subject") if "subject" in obj else None
    ann = obj.get("annotations") or {}
    if not isinstance(ann, dict):
        raise InvalidDocumentError("'annotations' must be an object")
    art = obj.get("artifactType")
    if art is not None and not isinstance(art, str):
        raise InvalidDocumentError("'artifactType' must be a string")
    if mt.is_index(kind):
        if has_image:
            raise InvalidDocumentError(f"{kind} must not have 'config' or 'layers'")
        items = obj.get("manifests")
        if not isinstance(items, list):
            raise InvalidDocumentError("index needs a 'manifests' list")
        manifests = tuple(
            Descriptor.from_json(d, f"manifests[{i}]") for i, d in enumerate(items)
        )
        return Index(raw, kind, obj, subject, art, dict(ann), manifests)
    if mt.is_manifest(kind):
        if has_manifests:
            raise InvalidDocumentError(f"{kind} must not have 'manifests'")
        if "config" not in obj:
            raise InvalidDocumentError("manifest needs a 'config' descriptor")
        layers = obj.get("layers", [])
        if not isinstance(layers, list):
            raise InvalidDocumentError("manifest 'layers' must be a list")
        config = Descriptor.from_json(obj["config"], "config")
        descs = tuple(Descriptor.from_json(d, f"layers[{i}]") for i, d in enumerate(layers))
        return Manifest(raw, kind, obj, subject, art, dict(ann), config, descs)
    raise UnsupportedMediaTypeError(f"{kind!r} is not a manifest or index media type")

"""Validate OCI JSON documents: the bundled JSON schemas plus the checks a schema cannot express.

The schemas (``schemas/*.json`` in a checkout, ``hybridstore/_schemas`` in a wheel) are
written for this project in JSON Schema draft 2020-12. They reference each other only;
the ``referencing`` registry built here holds nothing else and refuses every other URI,
so a schema can never make us open a file or a URL.

On top of the schemas come the rules the image spec's own validator adds: each
registered digest algorithm's encoding, embedded ``data`` matching its size and digest,
a document's ``mediaType`` agreeing with the type it is validated as, and documents that
are both a manifest and an index being refused (CVE-2021-41190). Unknown media types
inside descriptors are never a problem.

``jsonschema`` is slow to import, so it is imported on first use, not with this module.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hybridstore.errors import (
    InvalidDigestError,
    InvalidDocumentError,
    StorageError,
    UnsupportedMediaTypeError,
)
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.jsondoc import parse_json
from hybridstore.oci.limits import MAX_INDEX_BYTES, MAX_JSON_DEPTH

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
    from referencing import Registry, Resource

__all__ = [
    "SCHEMA_BASE_URI",
    "SUPPORTED_MEDIA_TYPES",
    "ValidationReport",
    "check_document",
    "guess_media_type",
    "registry",
    "resolve_media_type",
    "schema_dir",
    "schema_validator",
    "validate_document",
    "validate_or_raise",
]

SCHEMA_BASE_URI: Final = "https://hybridstore.invalid/schemas/"
_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

# Beyond this many problems a report stops listing them.
MAX_PROBLEMS: Final = 50

# Media type -> schema file. Docker schema2 types share the OCI structure.
_SCHEMA_FILE: Final[Mapping[str, str]] = {
    mt.OCI_MANIFEST: "image-manifest.json",
    mt.DOCKER_MANIFEST: "image-manifest.json",
    mt.OCI_INDEX: "image-index.json",
    mt.DOCKER_MANIFEST_LIST: "image-index.json",
    mt.OCI_CONFIG: "image-config.json",
    mt.DOCKER_CONFIG: "image-config.json",
    mt.OCI_DESCRIPTOR: "descriptor.json",
    mt.OCI_LAYOUT_HEADER: "image-layout.json",
}

SUPPORTED_MEDIA_TYPES: Final = tuple(_SCHEMA_FILE)

_ALIASES: Final[Mapping[str, str]] = {
    "manifest": mt.OCI_MANIFEST,
    "index": mt.OCI_INDEX,
    "config": mt.OCI_CONFIG,
    "descriptor": mt.OCI_DESCRIPTOR,
    "layout": mt.OCI_LAYOUT_HEADER,
    "oci-layout": mt.OCI_LAYOUT_HEADER,
    "docker-manifest": mt.DOCKER_MANIFEST,
    "docker-manifest-list": mt.DOCKER_MANIFEST_LIST,
    "docker-config": mt.DOCKER_CONFIG,
}

_SCHEMA1_PROBLEM: Final = (
    "Docker schema1 manifests are deprecated and not supported; "
    "re-push the image with a current client (Docker schema2 or OCI)"
)

_IMAGE_TYPES: Final = mt.MANIFEST_TYPES | mt.INDEX_TYPES


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one document; ``problems`` is empty when it is valid."""

    media_type: str | None
    problems: tuple[str, ...]
    unsupported: bool = False

    @property
    def valid(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- schemas


def schema_dir() -> Path:
    """Where the bundled schemas live: inside an installed wheel, else the checkout."""
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "_schemas", package.parent / "schemas")
    for candidate in candidates:
        if (candidate / "defs.json").is_file():
            return candidate
    raise StorageError(
        f"bundled JSON schemas not found in {candidates[0]} or {candidates[1]}; "
        "reinstall hybridstore"
    )


def _refuse(uri: str) -> Resource[Any]:
    """The registry's retrieve hook: nothing outside the bundled schemas is ever loaded."""
    raise InvalidDocumentError(
        f"refusing to load schema {uri!r}: only the bundled schemas under "
        f"{SCHEMA_BASE_URI} may be referenced (no files, no network)"
    )


def build_registry(directory: Path) -> Registry[Any]:
    """A registry of the ``*.json`` schemas in ``directory`` that retrieves nothing else."""
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    resources = []
    for path in sorted(directory.glob("*.json")):
        try:
            contents = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            raise StorageError(
                f"bundled schema {path} is unreadable ({e}); reinstall hybridstore"
            ) from e
        expected = SCHEMA_BASE_URI + path.name
        if (
            not isinstance(contents, dict)
            or contents.get("$id") != expected
            or contents.get("$schema") != _DIALECT
        ):
            raise StorageError(
                f"bundled schema {path} must have $id {expected!r} and $schema {_DIALECT!r}; "
                "reinstall hybridstore"
            )
        # Drop "$schema" from the in-memory copy: jsonschema swaps in its stock validator
        # class for any subschema that names a dialect, which would silently discard our
        # stricter integer, pattern and format rules below a "$ref".
        del contents["$schema"]
        resources.append((expected, DRAFT202012.create_resource(contents)))
    # mypy's attrs plugin does not know the documented "retrieve" alias of "_retrieve".
    registry: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]
    return registry.with_resources(resources).crawl()


@functools.cache
def registry() -> Registry[Any]:
    """The bundled schemas, loaded once per process."""
    return build_registry(schema_dir())


@functools.cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where '$' is the very end of the string;
    # Python's '$' also matches before a trailing newline ("a/b\n" would pass).
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


_URI: Final = re.compile(
    # RFC 3986 absolute URI: a scheme, then only characters a URI may contain.
    r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*",
    re.ASCII,
)
_DATE_TIME: Final = re.compile(
    # RFC 3339 date-time (the JSON Schema "date-time" format).
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))",
    re.ASCII,
)


def _is_uri(instance: object) -> bool:
    return not isinstance(instance, str) or _URI.fullmatch(instance) is not None


def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    m = _DATE_TIME.fullmatch(instance)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    off_h, off_m = (int(g) if g else 0 for g in m.groups()[6:])
    try:
        datetime(year, month, day, hour, minute, min(second, 59))  # 60: leap second
    except ValueError:
        return False
    return second <= 60 and off_h <= 23 and off_m <= 59


_FORMAT_NAMES: Final = {"uri": "absolute URI", "date-time": "RFC 3339 date-time"}


@functools.cache
def _validator(schema_file: str) -> Validator:
    """A draft 2020-12 validator for one bundled schema, with our own format checks.

    Formats are checked by our functions only, so the result never depends on which
    optional jsonschema extras happen to be installed. Integers must be JSON
    integers (``1470``, not ``1470.0``), as Go's decoder and ``model.py`` require.
    """
    from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

    def pattern(
        validator: Validator, patrn: str, instance: object, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if isinstance(instance, str) and not _ecma_regex(patrn).search(instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    checker = FormatChecker(formats=())
    checker.checks("uri")(_is_uri)
    checker.checks("date-time")(_is_date_time)
    types = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, v: isinstance(v, int) and not isinstance(v, bool)
    )
    cls = validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, validators={"pattern": pattern}, type_checker=types
    )
    reg = registry()
    contents = reg.contents(SCHEMA_BASE_URI + schema_file)
    validator: Validator = cls(contents, registry=reg, format_checker=checker)
    return validator


def schema_validator(schema_file: str) -> Validator:
    """The validator of one bundled schema, for documents other than OCI ones (the
    project file): the same refusal of outside references and the same format rules."""
    return _validator(schema_file)


# --------------------------------------------------------------------------- parsing


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- media types


def resolve_media_type(name: str) -> str:
    """A supported media type from a media type (parameters ignored) or a short alias."""
    base = name.split(";", 1)[0].strip()
    base = _ALIASES.get(base.lower(), base)
    if base in _SCHEMA_FILE or base in mt.SCHEMA1_TYPES:
        return base
    raise UnsupportedMediaTypeError(
        f"cannot validate media type {name!r}; use one of {', '.join(SUPPORTED_MEDIA_TYPES)} "
        f"or an alias ({', '.join(_ALIASES)})"
    )


def guess_media_type(obj: Any) -> str:
    """The media type a parsed document most plausibly is, from its own fields."""
    if not isinstance(obj, dict):
        raise InvalidDocumentError(f"document must be a JSON object, got {type(obj).__name__}")
    own = obj.get("mediaType")
    if "imageLayoutVersion" in obj:
        return mt.OCI_LAYOUT_HEADER
    if "schemaVersion" in obj or "manifests" in obj or "layers" in obj:
        if own in mt.SCHEMA1_TYPES:
            return str(own)
        if obj.get("schemaVersion") == 1:
            return mt.DOCKER_SCHEMA1
        if own in _IMAGE_TYPES:
            return str(own)
        return mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
    if "digest" in obj:
        return mt.OCI_DESCRIPTOR
    if "rootfs" in obj or ("architecture" in obj and "os" in obj):
        return mt.OCI_CONFIG
    if "config" in obj:
        return mt.OCI_MANIFEST
    raise InvalidDocumentError(
        "cannot tell which kind of OCI document this is (no schemaVersion, manifests, "
        "digest, rootfs or imageLayoutVersion); pass its media type"
    )


def _is_schema1(obj: Mapping[str, Any], media_type: str) -> bool:
    if media_type in mt.SCHEMA1_TYPES or obj.get("mediaType") in mt.SCHEMA1_TYPES:
        return True
    return media_type in _IMAGE_TYPES and obj.get("schemaVersion") == 1


# --------------------------------------------------------------------------- checks


def _schema_problems(obj: Any, media_type: str) -> list[tuple[str, str]]:
    """(JSON path, message) for every schema violation."""
    from referencing.exceptions import Unresolvable

    validator = _validator(_SCHEMA_FILE[media_type])
    out: list[tuple[str, str]] = []
    try:
        for error in validator.iter_errors(obj):
            out.append((error.json_path, _message(error)))
    except Unresolvable as e:
        raise StorageError(f"bundled schemas are broken ({e}); reinstall hybridstore") from e
    except RecursionError:
        out.append(("$", f"document is too deeply nested (more than {MAX_JSON_DEPTH} levels)"))
    return out


def _message(error: Any) -> str:
    """A short message: the schema's description where it has one, instances abbreviated."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "pattern" and "description" in schema:
        return f"{_show(error.instance)} is not {schema['description']}"
    if error.validator == "format":
        name = _FORMAT_NAMES.get(str(schema.get("format")), str(schema.get("format")))
        return f"{_show(error.instance)} is not a valid {name}"
    text = str(error.message)
    return text if len(text) <= 200 else text[:197] + "..."


def _descriptor_problems(desc: Any, path: str, reported: set[str]) -> list[str]:
    """Digest rules per registered algorithm, and embedded data against size and digest."""
    if not isinstance(desc, Mapping):
        return []
    out: list[str] = []
    digest: Digest | None = None
    value = desc.get("digest")
    if isinstance(value, str) and f"{path}.digest" not in reported:
        try:
            digest = Digest.parse(value)
        except InvalidDigestError as e:
            out.append(f"{path}.digest: {e}")
    data = desc.get("data")
    if isinstance(data, str) and f"{path}.data" not in reported:
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            out.append(f"{path}.data: not valid base64")
            return out
        size = desc.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and len(decoded) != size:
            out.append(f"{path}.data: decodes to {len(decoded)} bytes but size says {size}")
        elif digest is not None and digest.verifiable:
            actual = Digest.of_bytes(decoded, digest.algorithm)
            if actual != digest:
                out.append(f"{path}.data: content has digest {actual}, descriptor says {digest}")
    return out


def _descriptors(obj: Mapping[str, Any], media_type: str) -> Iterator[tuple[str, Any]]:
    """(path, descriptor) for every descriptor a document of this type carries."""
    if media_type == mt.OCI_DESCRIPTOR:
        yield "$", obj
        return
    if media_type in mt.MANIFEST_TYPES:
        yield "$.config", obj.get("config")
        layers = obj.get("layers")
        if isinstance(layers, list):
            yield from ((f"$.layers[{i}]", d) for i, d in enumerate(layers))
    if media_type in mt.INDEX_TYPES:
        manifests = obj.get("manifests")
        if isinstance(manifests, list):
            yield from ((f"$.manifests[{i}]", d) for i, d in enumerate(manifests))
    if media_type in _IMAGE_TYPES:
        yield "$.subject", obj.get("subject")


def _semantic_problems(obj: Mapping[str, Any], media_type: str, reported: set[str]) -> list[str]:
    out: list[str] = []
    if media_type in _IMAGE_TYPES:
        own = obj.get("mediaType")
        if isinstance(own, str) and own != media_type and "$.mediaType" not in reported:
            out.append(
                f"$.mediaType: document says {own!r} but is being validated as {media_type!r}"
            )
        if media_type in mt.MANIFEST_TYPES and "manifests" in obj:
            out.append("$: ambiguous document: a manifest must not have 'manifests'")
        if media_type in mt.INDEX_TYPES and ("config" in obj or "layers" in obj):
            out.append("$: ambiguous document: an index must not have 'config' or 'layers'")
    if media_type in mt.MANIFEST_TYPES:
        config = obj.get("config")
        if (
            isinstance(config, Mapping)
            and config.get("mediaType") == mt.OCI_EMPTY
            and "artifactType" not in obj
        ):
            out.append(
                "$.artifactType: required when config.mediaType is the empty type "
                f"{mt.OCI_EMPTY}"
            )
    for path, desc in _descriptors(obj, media_type):
        out.extend(_descriptor_problems(desc, path, reported))
    if media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        rootfs = obj.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, Mapping) else None
        for i, value in enumerate(diff_ids if isinstance(diff_ids, list) else []):
            path = f"$.rootfs.diff_ids[{i}]"
            if isinstance(value, str) and path not in reported:
                try:
                    Digest.parse(value)
                except InvalidDigestError as e:
                    out.append(f"{path}: {e}")
    return out


def _capped(problems: list[str]) -> tuple[str, ...]:
    if len(problems) <= MAX_PROBLEMS:
        return tuple(problems)
    extra = len(problems) - MAX_PROBLEMS
    return (*problems[:MAX_PROBLEMS], f"... and {extra} more problems")


# --------------------------------------------------------------------------- public API


def check_document(raw: bytes, media_type: str | None = None) -> ValidationReport:
    """Validate ``raw`` as ``media_type`` (guessed from the document when None).

    Raises ``UnsupportedMediaTypeError`` only for a requested media type this code has
    no schema for; everything wrong with the document itself becomes a problem.
    """
    requested = resolve_media_type(media_type) if media_type is not None else None
    if requested in mt.SCHEMA1_TYPES:
        return ValidationReport(requested, (_SCHEMA1_PROBLEM,), unsupported=True)
    try:
        obj, duplicates = parse_json(raw, limit=MAX_INDEX_BYTES)
    except InvalidDocumentError as e:
        return ValidationReport(requested, (str(e),))
    if not isinstance(obj, dict):
        return ValidationReport(
            requested, (f"document must be a JSON object, got {type(obj).__name__}",)
        )
    try:
        kind = requested or guess_media_type(obj)
    except InvalidDocumentError as e:
        return ValidationReport(None, (str(e),))
    if _is_schema1(obj, kind):
        return ValidationReport(kind, (_SCHEMA1_PROBLEM,), unsupported=True)
    problems = [
        f"duplicate key {_show(key)}: parsers disagree on which value wins; remove the repeat"
        for key in dict.fromkeys(duplicates)
    ]
    structural = _schema_problems(obj, kind)
    problems.extend(f"{path}: {message}" for path, message in structural)
    problems.extend(_semantic_problems(obj, kind, {path for path, _ in structural}))
    return ValidationReport(kind, _capped(problems))


def validate_document(raw: bytes, media_type: str | None = None) -> list[str]:
    """Human-readable problems with ``raw`` as ``media_type``; empty when it is valid."""
    return list(check_document(raw, media_type).problems)


def validate_or_raise(raw: bytes, media_type: str | None = None) -> str:
    """Validate and return the media type validated as; raise if there is any problem.

    ``UnsupportedMediaTypeError`` for Docker schema1, ``InvalidDocumentError`` otherwise.
    """
    report = check_document(raw, media_type)
    if report.unsupported:
        raise UnsupportedMediaTypeError(report.problems[0])
    if report.problems:
        shown = "; ".join(report.problems[:3])
        more = len(report.problems) - 3
        suffix = f" (and {more} more)" if more > 0 else ""
        what = report.media_type or "document"
        raise InvalidDocumentError(f"invalid {what}: {shown}{suffix}")
    assert report.media_type is not None
    return report.media_type

"""Where content lives, written the way users write it (skopeo-style transports).

``docker://REF``, a bare ``REF`` and Helm's ``oci://REF`` name a registry;
``oci:PATH[:NAME]`` names a layout (the path ends at the first ``:``, as in
skopeo, so ``NAME`` may itself be a full reference with a port and tag);
``oci-archive:PATH[:NAME]`` names a layout tar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hybridstore.errors import InvalidInputError
from hybridstore.oci.reference import Reference

__all__ = ["Location", "explicit_reference", "parse_location"]

Kind = Literal["registry", "layout", "archive"]


@dataclass(frozen=True)
class Location:
    kind: Kind
    reference: Reference | None = None
    path: Path | None = None
    name: str | None = None

    def __str__(self) -> str:
        if self.kind == "registry":
            return f"docker://{self.reference}"
        prefix = "oci" if self.kind == "layout" else "oci-archive"
        return f"{prefix}:{self.path}" + (f":{self.name}" if self.name else "")


def parse_location(text: str) -> Location:
    """Parse a copy source or destination; raise ``InvalidInputError`` naming the fix."""
    if text.startswith("oci-archive:"):
        return _file_location("archive", "oci-archive:", text)
    if text.startswith("oci:") and not text.startswith("oci://"):
        return _file_location("layout", "oci:", text)
    scheme = text.split("://", 1)[0] if "://" in text else None
    if scheme not in (None, "docker", "oci"):
        raise InvalidInputError(
            f"{text!r}: unknown transport {scheme + '://'!r}; use docker://REF, oci://REF, "
            "oci:PATH[:NAME] or oci-archive:PATH[:NAME]"
        )
    if text.split(":", 1)[0] in ("dir", "docker-archive", "containers-storage", "docker-daemon"):
        raise InvalidInputError(
            f"{text!r}: that skopeo transport is not supported; use docker://, oci: or oci-archive:"
        )
    return Location("registry", reference=Reference.parse(text))


def _file_location(kind: Kind, prefix: str, text: str) -> Location:
    path, _, name = text[len(prefix) :].partition(":")
    if not path:
        raise InvalidInputError(f"{text!r}: no path after {prefix!r}; write {prefix}PATH[:NAME]")
    return Location(kind, path=Path(path), name=name or None)


def explicit_reference(name: str) -> Reference | None:
    """``name`` as a reference when it names its registry (``host[:port]/repo...``).

    ``app:1.0`` would normalise to Docker Hub; a layout's ref name is only taken
    for a push target when the registry is written out. Raises
    ``InvalidReferenceError`` for a name that has a host but is not valid.
    """
    first, slash, _ = name.removeprefix("oci://").removeprefix("docker://").partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return None
    return Reference.parse(name)

"""Docker schema2 documents in OCI media types (``--format oci``), as skopeo converts them.

skopeo's and umoci's ``oci:`` readers refuse a layout holding Docker media types. The blobs
(config, layers) stay byte for byte; only the manifests and indexes that name them are
rewritten, so their digests change (as with ``skopeo copy --format oci``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final

from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor

__all__ = ["DOCKER_TO_OCI", "to_oci"]

DOCKER_TO_OCI: Final = {
    mt.DOCKER_MANIFEST: mt.OCI_MANIFEST,
    mt.DOCKER_MANIFEST_LIST: mt.OCI_INDEX,
    mt.DOCKER_CONFIG: mt.OCI_CONFIG,
    mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_TAR_GZIP,
    mt.DOCKER_FOREIGN_LAYER_GZIP: mt.OCI_LAYER_NONDIST_TAR_GZIP,
}


def to_oci(
    desc: Descriptor, raw: bytes, converted: Mapping[str, Descriptor]
) -> tuple[Descriptor, bytes]:
    """The OCI form of the manifest or index ``desc``/``raw``: Docker media types renamed,
    children already converted (``converted``: old digest -> new descriptor) pointed at.
    Returned unchanged when nothing in it is Docker-typed."""
    obj: dict[str, Any] = json.loads(raw)
    changed = False

    def fix(d: Any) -> None:
        nonlocal changed
        if not isinstance(d, dict):
            return
        new = converted.get(str(d.get("digest")))
        if new is not None and str(new.digest) != d["digest"]:
            d.update(digest=str(new.digest), size=new.size, mediaType=new.media_type)
            changed = True
        if d.get("mediaType") in DOCKER_TO_OCI:
            d["mediaType"] = DOCKER_TO_OCI[d["mediaType"]]
            changed = True

    fix(obj)
    fix(obj.get("config"))
    for key in ("layers", "manifests"):
        for child in obj.get(key) or ():
            fix(child)
    if not changed:
        return desc, raw
    out = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    media_type = DOCKER_TO_OCI.get(desc.media_type, desc.media_type)
    return dataclasses.replace(
        desc, media_type=media_type, digest=Digest.of_bytes(out), size=len(out)
    ), out

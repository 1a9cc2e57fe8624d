"""``hybridstore.inspect``: what a reference names, without copying it anywhere.

Resolves a registry reference or a layout ref, fetches the manifest or index
(its exact bytes, digest-verified), and adds what a person asks next: the
platforms of an index, the config blob (``with_config``), and for a Helm chart
its name and version from the config. ``platform`` descends from an index into
one of its manifests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hybridstore.errors import InvalidDocumentError, InvalidInputError
from hybridstore.oci.helm import ChartInfo, chart_info, is_chart
from hybridstore.oci.jsondoc import load_json
from hybridstore.oci.limits import MAX_CHART_CONFIG_BYTES, MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Descriptor, Index, Manifest, Platform, parse_document
from hybridstore.oci.platforms import select_platforms
from hybridstore.remote.credentials import Credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.transfer.open import open_source

__all__ = ["InspectResult", "inspect"]


@dataclass
class InspectResult:
    reference: str
    descriptor: Descriptor
    raw: bytes
    """The manifest's or index's exact bytes."""
    document: Manifest | Index
    config: bytes | None = None
    chart: ChartInfo | None = None
    platforms: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc = self.document
        out: dict[str, Any] = {
            "reference": self.reference,
            "descriptor": self.descriptor.to_json(),
            "manifest": doc.json,
        }
        if isinstance(doc, Index):
            out["platforms"] = self.platforms
        else:
            out["artifactType"] = doc.effective_artifact_type
        if self.chart is not None:
            out["chart"] = self.chart.to_json()
        if self.config is not None:
            try:
                out["config"] = load_json(self.config, what="config", limit=MAX_CHART_CONFIG_BYTES)
            except InvalidDocumentError:
                out["config"] = None  # not JSON: shown only with --config --raw
        return out


def inspect(
    ref: str | None,
    *,
    layout: str | os.PathLike[str] | None = None,
    platform: str | Platform | None = None,
    with_config: bool = False,
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    manifest_limit: int = MAX_DOCUMENT_BYTES,
) -> InspectResult:
    """Describe ``ref`` (a registry reference, or the ref ``ref`` of ``layout``)."""
    with open_source(
        ref,
        layout=layout,
        transport=transport,
        credential=credential,
        manifest_limit=manifest_limit,
    ) as opened:
        src = opened.source
        desc = src.resolve(opened.ref)
        raw = src.document(desc)
        doc = parse_document(raw, desc.media_type)
        if platform is not None and isinstance(doc, Index):
            wanted = Platform.parse(platform) if isinstance(platform, str) else platform
            desc = select_platforms(doc, [wanted], all_platforms=False)[0]
            raw = src.document(desc)
            doc = parse_document(raw, desc.media_type)
        result = InspectResult(opened.display, desc, raw, doc)
        if isinstance(doc, Index):
            result.platforms = [str(d.platform) for d in doc.manifests if d.platform]
            if with_config:
                raise InvalidInputError(
                    "an index has no config; pick one of its manifests with --platform"
                )
            return result
        if with_config or is_chart(doc):
            result.config = src.read_blob(doc.config, MAX_CHART_CONFIG_BYTES)
        if is_chart(doc):
            assert result.config is not None
            result.chart = chart_info(result.config)
        return result

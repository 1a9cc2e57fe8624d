"""Helm's OCI conventions: a chart is a manifest whose config is the chart's metadata.

``helm push`` stores ``Chart.yaml``'s fields as the JSON config
(``application/vnd.cncf.helm.config.v1+json``), the packaged chart as one
``tar+gzip`` layer and, when signed, the provenance file as another; ``helm
pull`` writes them as ``<name>-<version>.tgz`` and ``<name>-<version>.tgz.prov``.
Name and version come from the registry, so they are checked as single path
components before they name a file (CVE-2024-25620, CVE-2026-35206).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from hybridstore.errors import InvalidDocumentError
from hybridstore.fs.safepath import check_component
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.jsondoc import load_json_object
from hybridstore.oci.limits import MAX_CHART_CONFIG_BYTES
from hybridstore.oci.model import Descriptor, Manifest

__all__ = ["ChartInfo", "chart_info", "chart_layers", "is_chart"]

# helm < 3.7 pushed chart layers with this type; helm still reads them.
LEGACY_CHART_LAYER: Final = "application/tar+gzip"
CHART_LAYERS: Final = frozenset({mt.HELM_CHART, LEGACY_CHART_LAYER})


@dataclass(frozen=True)
class ChartInfo:
    name: str
    version: str
    app_version: str | None
    description: str | None

    @property
    def filename(self) -> str:
        """``<name>-<version>.tgz``, as ``helm pull`` names it."""
        return check_component(f"{self.name}-{self.version}.tgz", "chart file name")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "appVersion": self.app_version,
            "description": self.description,
        }


def is_chart(doc: Manifest) -> bool:
    return doc.config.media_type == mt.HELM_CONFIG


def chart_info(config: bytes) -> ChartInfo:
    """The chart's name and version from its config blob (checked as path components)."""
    obj = load_json_object(config, what="the Helm chart config", limit=MAX_CHART_CONFIG_BYTES)
    name, version = obj.get("name"), obj.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        raise InvalidDocumentError("the Helm chart config lacks a string 'name' and 'version'")
    app, desc = obj.get("appVersion"), obj.get("description")
    return ChartInfo(
        check_component(name, "chart name"),
        check_component(version, "chart version"),
        app if isinstance(app, str) else None,
        desc if isinstance(desc, str) else None,
    )


def chart_layers(doc: Manifest) -> tuple[Descriptor, Descriptor | None]:
    """The chart archive layer and the provenance layer (if signed)."""
    charts = [d for d in doc.layers if d.media_type in CHART_LAYERS]
    provs = [d for d in doc.layers if d.media_type == mt.HELM_PROVENANCE]
    if len(charts) != 1 or len(provs) > 1:
        raise InvalidDocumentError(
            f"a Helm chart manifest needs one chart layer and at most one provenance layer "
            f"(found {len(charts)} and {len(provs)})"
        )
    return charts[0], provs[0] if provs else None

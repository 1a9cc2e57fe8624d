"""The size caps on documents, in one place: every reader of a manifest, index or
config (registry client, layout, archive import, server, CLI defaults) uses these."""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_CHART_CONFIG_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_INDEX_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LAYOUT_FILE_BYTES",
    "MAX_LIST_PAGE_BYTES",
]

# Distribution spec: clients SHOULD accept manifests of at least 4 MB; we cap there.
# Manifests and indexes larger than this are never read as documents.
MAX_DOCUMENT_BYTES: Final = 4 << 20
# A layout's own index.json lists every ref of a project: allow far more than a manifest.
MAX_INDEX_BYTES: Final = 64 << 20
# The oci-layout file holds one short version string.
MAX_LAYOUT_FILE_BYTES: Final = 64 << 10
# A Helm chart's config blob (Chart.yaml as JSON).
MAX_CHART_CONFIG_BYTES: Final = 1 << 20
# Nesting of any JSON document we read: real manifests and indexes nest under 10 levels;
# Python's parser recurses, so the bound keeps a hostile document from exhausting the stack.
MAX_JSON_DEPTH: Final = 64
# One page of a registry listing (tags): 1000 tags of the longest legal name are ~130 KiB.
MAX_LIST_PAGE_BYTES: Final = 4 << 20

"""hybridstore: OCI content in one shared blob cache, linked into per-project OCI layouts."""

from __future__ import annotations

__version__ = "0.1.0"

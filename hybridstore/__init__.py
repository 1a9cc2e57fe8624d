"""hybridstore: OCI content in one shared blob cache, linked into per-project OCI layouts.

Pulling is ``from hybridstore.pull import pull`` (one reference) or
``hybridstore.pull_many``. The entry points here are imported on first use so
that ``import hybridstore`` and the CLI's start-up stay cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "pull_many": "hybridstore.pull",
    "BlobCache": "hybridstore.store.cache",
    "OCILayout": "hybridstore.store.layout",
    "Reference": "hybridstore.oci.reference",
    "Digest": "hybridstore.oci.digest",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridstore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

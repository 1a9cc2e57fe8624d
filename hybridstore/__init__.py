"""hybridstore: OCI content in one shared blob cache, linked into per-project OCI layouts.

The public API::

    from hybridstore import pull, copy, push, export, import_layout
    result = pull("oci://registry.example.com/charts/app:1.2.3", layout="./charts")

Every name is imported on first use, so that ``import hybridstore`` (and with it
every CLI command's start-up) loads neither the registry client nor the store;
type checkers see the real definitions through the ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hybridstore.archive.export import export_to_path as export
    from hybridstore.archive.importer import import_archive as import_layout
    from hybridstore.copy import copy as copy
    from hybridstore.errors import HybridstoreError as HybridstoreError
    from hybridstore.extract import extract as extract
    from hybridstore.inspect import inspect as inspect
    from hybridstore.oci.digest import Digest as Digest
    from hybridstore.oci.model import Descriptor as Descriptor
    from hybridstore.oci.model import Platform as Platform
    from hybridstore.oci.reference import Reference as Reference
    from hybridstore.pull import PullResult as PullResult
    from hybridstore.pull import pull as pull
    from hybridstore.pull import pull_many as pull_many
    from hybridstore.push import push as push
    from hybridstore.push import push_all as push_all
    from hybridstore.referrers import list_referrers as list_referrers
    from hybridstore.remote.credentials import Credential as Credential
    from hybridstore.remote.transport import TransportOptions as TransportOptions
    from hybridstore.store.cache import BlobCache as BlobCache
    from hybridstore.store.layout import OCILayout as OCILayout
    from hybridstore.transfer.engine import CopyResult as CopyResult

# public name -> (module, attribute)
_API: dict[str, tuple[str, str]] = {
    "pull": ("hybridstore.pull", "pull"),
    "pull_many": ("hybridstore.pull", "pull_many"),
    "PullResult": ("hybridstore.pull", "PullResult"),
    "push": ("hybridstore.push", "push"),
    "push_all": ("hybridstore.push", "push_all"),
    "copy": ("hybridstore.copy", "copy"),
    "CopyResult": ("hybridstore.transfer.engine", "CopyResult"),
    "inspect": ("hybridstore.inspect", "inspect"),
    "extract": ("hybridstore.extract", "extract"),
    "list_referrers": ("hybridstore.referrers", "list_referrers"),
    "export": ("hybridstore.archive.export", "export_to_path"),
    "import_layout": ("hybridstore.archive.importer", "import_archive"),
    "OCILayout": ("hybridstore.store.layout", "OCILayout"),
    "BlobCache": ("hybridstore.store.cache", "BlobCache"),
    "Reference": ("hybridstore.oci.reference", "Reference"),
    "Digest": ("hybridstore.oci.digest", "Digest"),
    "Descriptor": ("hybridstore.oci.model", "Descriptor"),
    "Platform": ("hybridstore.oci.model", "Platform"),
    "Credential": ("hybridstore.remote.credentials", "Credential"),
    "TransportOptions": ("hybridstore.remote.transport", "TransportOptions"),
    "HybridstoreError": ("hybridstore.errors", "HybridstoreError"),
}

__all__ = [
    "BlobCache",
    "CopyResult",
    "Credential",
    "Descriptor",
    "Digest",
    "HybridstoreError",
    "OCILayout",
    "Platform",
    "PullResult",
    "Reference",
    "TransportOptions",
    "__version__",
    "copy",
    "export",
    "extract",
    "import_layout",
    "inspect",
    "list_referrers",
    "pull",
    "pull_many",
    "push",
    "push_all",
]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'hybridstore' has no attribute {name!r}")
    module, attribute = target
    return getattr(importlib.import_module(module), attribute)


class _Package(types.ModuleType):
    """Keeps ``hybridstore.pull`` (and the other verbs) the functions of the API.

    The verbs live in modules of the same names (``hybridstore/pull.py``...), and
    importing a submodule sets it as an attribute of its package, which would hide
    the function from then on: ``from hybridstore import pull`` would give the
    module or the function depending on what had been imported before.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _API.get(name, ("",))[0] == value.__name__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

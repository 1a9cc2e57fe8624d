"""Open a source (a registry reference or a layout ref) for the read-only commands.

``inspect``, ``extract`` and ``referrers`` take either ``REF`` (a registry) or
``--layout DIR NAME``; this turns both into a ``Source`` plus the ref to
resolve there, and closes the registry connections afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hybridstore.errors import InvalidInputError, NotFoundError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.reference import Reference
from hybridstore.oci.referrers import fallback_subject
from hybridstore.remote.clients import RegistryClients
from hybridstore.remote.credentials import Credential, bind_credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.transfer.endpoint import Source
from hybridstore.transfer.layout_endpoint import LayoutSource
from hybridstore.transfer.registry_endpoint import RegistrySource

__all__ = ["Opened", "open_source", "sole_ref"]


@dataclass(frozen=True)
class Opened:
    source: Source
    ref: str
    """What to resolve at the source (a tag, a digest or a layout ref name)."""
    display: str
    """The full reference or layout ref name, for results and messages."""


def sole_ref(layout: OCILayout) -> str:
    """The layout's only ref, for commands given a layout but no NAME. Referrers fallback
    names (``...:sha256-<hex>``) are bookkeeping, not refs a user chose, so they don't count."""
    names = sorted(n for n in layout.refs() if fallback_subject(n) is None)
    if len(names) != 1:
        shown = ", ".join(names[:10]) or "none"
        raise InvalidInputError(
            f"layout {layout.root} has {len(names)} refs ({shown}); name the one you mean"
        )
    return names[0]


@contextmanager
def open_source(
    ref: str | None,
    *,
    layout: str | os.PathLike[str] | None = None,
    cache: BlobCache | None = None,
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    manifest_limit: int = MAX_DOCUMENT_BYTES,
) -> Iterator[Opened]:
    """A registry source for ``ref``, or the layout ``layout``'s ref ``ref``."""
    if layout is not None:
        lay = OCILayout.open(layout, cache=cache)
        name = ref or sole_ref(lay)
        yield Opened(LayoutSource(lay, manifest_limit), name, name)
        return
    if not ref:
        raise NotFoundError("no reference given; pass REF or --layout DIR NAME")
    parsed = Reference.parse(ref)
    credentials = bind_credential(credential, [parsed.registry])
    with RegistryClients(transport or TransportOptions(), credentials) as clients:
        repo = clients.repository(parsed, manifest_limit)
        yield Opened(RegistrySource(repo, cache), parsed.reference, str(parsed))

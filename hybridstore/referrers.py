"""``hybridstore referrers``: the referrers of a subject, from a registry or a layout.

The rules (fallback tags, referrer descriptors) are in ``oci.referrers``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hybridstore.oci.model import Descriptor

if TYPE_CHECKING:
    from hybridstore.remote.credentials import Credential
    from hybridstore.remote.transport import TransportOptions

__all__ = ["list_referrers"]


def list_referrers(
    ref: str | None,
    *,
    layout: str | os.PathLike[str] | None = None,
    artifact_types: Sequence[str] = (),
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
) -> tuple[Descriptor, list[Descriptor]]:
    """The subject ``ref`` resolves to and its referrers, from a registry or a layout."""
    from hybridstore.transfer.open import open_source

    with open_source(ref, layout=layout, transport=transport, credential=credential) as opened:
        subject = opened.source.resolve(opened.ref)
        return subject, opened.source.referrers(subject, artifact_types)

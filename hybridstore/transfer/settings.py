"""The keyword arguments every verb that moves content takes (``CopySettings``), and the
engine options they make.

Kept apart from ``copier`` (which opens registry connections) so that a pull
that never goes online (``pull --offline``) can read them without loading any
part of the registry client: its types are only named for checkers here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict

from hybridstore.oci.model import Platform
from hybridstore.store.cache import BlobCache
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.endpoint import Progress
from hybridstore.transfer.engine import CopyOptions

if TYPE_CHECKING:
    from hybridstore.remote.credentials import Credential
    from hybridstore.remote.transport import TransportOptions
    from hybridstore.remote.upload import UploadOptions

__all__ = ["CopySettings", "copy_options"]


class CopySettings(TypedDict, total=False):
    """The keyword arguments of every verb that moves content (``pull``, ``push``,
    ``copy``), spelled once; the defaults are ``Copier``'s."""

    cache: str | os.PathLike[str] | BlobCache | None
    """The shared blob cache (default: ``BlobCache.default_root()``)."""
    platforms: Sequence[str | Platform]
    """Wanted platforms of an image index (default: the host's for layouts)."""
    all_platforms: bool
    concurrency: int
    """Large blobs moved at once (default 8; small ones up to 4x as many)."""
    include_nondistributable: bool
    include_referrers: bool
    """Also move what is attached through ``subject`` (signatures, SBOMs)."""
    referrer_types: Sequence[str]
    """With ``include_referrers``: only these artifact types (default: all)."""
    link_mode: LinkMode | str | None
    """How blobs enter a layout: ``auto`` (default), ``reflink``, ``hardlink``, ``copy``."""
    transport: TransportOptions | None
    credential: Credential | None
    """A credential for the one registry the command names (``copier.bound_settings`` ties
    it to that registry; naming refs on two registries with it is refused): it is never
    sent to another host, which uses its own stored credentials."""
    credentials: Mapping[str, Credential] | None
    """Credentials per registry (``host[:port]``), e.g. copy's source and destination."""
    oci_format: bool
    """Into a layout: store Docker schema2 manifests and indexes in OCI media types (their
    digests change; blobs stay), so skopeo's and umoci's ``oci:`` readers take them."""
    upload: UploadOptions | None
    manifest_limit: int
    progress: Progress | None
    verify: bool
    """Re-hash every blob reused from a layout or the cache (default: only those whose
    verification seal is broken, see ``fs/seal.py``)."""


def copy_options(settings: CopySettings) -> CopyOptions:
    """The engine's ``CopyOptions`` from a verb's settings (platforms as text or values)."""
    return CopyOptions(
        platforms=tuple(
            p if isinstance(p, Platform) else Platform.parse(p)
            for p in settings.get("platforms", ())
        ),
        all_platforms=settings.get("all_platforms", False),
        concurrency=settings.get("concurrency", 8),
        include_nondistributable=settings.get("include_nondistributable", False),
        include_referrers=settings.get("include_referrers", False),
        referrer_types=tuple(settings.get("referrer_types", ())),
        verify=settings.get("verify", False),
    )

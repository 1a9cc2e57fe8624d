"""``hybridstore.pull``: the main job as one library call.

Example::

    from hybridstore import pull
    result = pull("oci://registry.example.com/charts/app:1.2.3", layout="./charts")
    result.digest, result.fetched, result.reused   # what arrived, what was reused
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from hybridstore.errors import HybridstoreError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Platform
from hybridstore.oci.reference import Reference
from hybridstore.remote.credentials import Credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.copier import Copier, copy_options
from hybridstore.transfer.endpoint import Progress
from hybridstore.transfer.engine import CopyResult

log = logging.getLogger("hybridstore.pull")

__all__ = ["PullResult", "pull", "pull_many"]

PullResult = CopyResult


def pull_many(
    refs: Sequence[str],
    *,
    layout: str | os.PathLike[str] | OCILayout,
    cache: str | os.PathLike[str] | BlobCache | None = None,
    platforms: Sequence[str | Platform] = (),
    all_platforms: bool = False,
    concurrency: int = 8,
    ref_name: str | None = None,
    link_mode: LinkMode | str | None = None,
    include_nondistributable: bool = False,
    include_referrers: bool = False,
    referrer_types: Sequence[str] = (),
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    manifest_limit: int = MAX_DOCUMENT_BYTES,
    progress: Progress | None = None,
) -> list[PullResult]:
    """Pull each reference into ``layout`` through the shared ``cache``.

    All references share one connection pool and one set of worker pools. ``ref_name``
    only makes sense with a single reference. ``include_referrers`` also pulls
    what is attached to the content through ``subject`` (signatures, SBOMs),
    optionally only of ``referrer_types``.
    """
    parsed = [Reference.parse(r) for r in refs]
    options = copy_options(
        platforms=platforms,
        all_platforms=all_platforms,
        concurrency=concurrency,
        include_nondistributable=include_nondistributable,
        include_referrers=include_referrers,
        referrer_types=referrer_types,
    )
    with Copier(
        options,
        cache=cache,
        transport=transport,
        credential=credential,
        link_mode=link_mode,
        manifest_limit=manifest_limit,
        progress=progress,
    ) as copier:
        # Sources first: credentials are resolved before the layout exists.
        sources = [copier.registry_source(ref) for ref in parsed]
        new_dir = None if isinstance(layout, OCILayout) else Path(layout)
        if new_dir is not None and new_dir.exists():
            new_dir = None
        target = (
            layout
            if isinstance(layout, OCILayout)
            else OCILayout.open_or_create(layout, cache=copier.cache, link_mode=copier.link_mode)
        )
        try:
            return [
                copier.run(src, copier.layout_destination(target, ref_name or src.display))
                for src in sources
            ]
        except BaseException:
            if new_dir is not None:
                _remove_if_untagged(target, new_dir)
            raise


def _remove_if_untagged(layout: OCILayout, root: Path) -> None:
    """Undo a layout this call created when the pull failed before tagging anything."""
    try:
        if not layout.refs():
            shutil.rmtree(root)
    except (OSError, HybridstoreError) as e:
        log.warning("could not remove the unfinished layout %s: %s", root, e)


def pull(
    ref: str,
    *,
    layout: str | os.PathLike[str] | OCILayout,
    cache: str | os.PathLike[str] | BlobCache | None = None,
    platforms: Sequence[str | Platform] = (),
    all_platforms: bool = False,
    concurrency: int = 8,
    ref_name: str | None = None,
    link_mode: LinkMode | str | None = None,
    include_nondistributable: bool = False,
    include_referrers: bool = False,
    referrer_types: Sequence[str] = (),
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    manifest_limit: int = MAX_DOCUMENT_BYTES,
    progress: Progress | None = None,
) -> PullResult:
    """Pull one reference into ``layout``; the parameters are ``pull_many``'s."""
    return pull_many(
        [ref],
        layout=layout,
        cache=cache,
        platforms=platforms,
        all_platforms=all_platforms,
        concurrency=concurrency,
        ref_name=ref_name,
        link_mode=link_mode,
        include_nondistributable=include_nondistributable,
        include_referrers=include_referrers,
        referrer_types=referrer_types,
        transport=transport,
        credential=credential,
        manifest_limit=manifest_limit,
        progress=progress,
    )[0]

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
from typing import TYPE_CHECKING

from hybridstore.errors import HybridstoreError
from hybridstore.oci.reference import Reference
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.engine import CopyResult
from hybridstore.transfer.settings import copy_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hybridstore.transfer.settings import CopySettings

log = logging.getLogger("hybridstore.pull")

__all__ = ["PullResult", "pull", "pull_many"]

PullResult = CopyResult


def pull_many(
    refs: Sequence[str],
    *,
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None = None,
    offline: bool = False,
    **settings: Unpack[CopySettings],
) -> list[PullResult]:
    """Pull each reference into ``layout`` through the shared cache; ``settings`` as
    ``CopySettings`` describes them.

    All references share one connection pool and one set of worker pools. ``ref_name``
    (the name recorded in the layout, default the full reference) only makes sense
    with a single reference. A ``layout`` given as an ``OCILayout`` links from the
    cache it was opened with. ``offline`` opens no socket and loads no part of the
    registry client (see ``transfer.offline``): digests come from the cache, tags
    from the target layout or the most recently used known layout holding exactly
    that reference.
    """
    parsed = [Reference.parse(r) for r in refs]
    if offline:
        return _pull_offline(parsed, layout, ref_name, settings)
    from hybridstore.transfer.copier import Copier  # the registry client loads here

    with Copier(**settings) as copier:
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


def _pull_offline(
    parsed: Sequence[Reference],
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None,
    settings: CopySettings,
) -> list[PullResult]:
    """Every reference is resolved and checked complete on this machine before the
    layout is created or changed; then the same copy as online, from local sources."""
    from hybridstore.transfer.engine import copy_graph
    from hybridstore.transfer.layout_endpoint import LayoutDestination
    from hybridstore.transfer.offline import check_complete, offline_origin
    from hybridstore.transfer.pools import BlobPools

    options = copy_options(settings)
    cache = settings.get("cache")
    blob_cache = cache if isinstance(cache, BlobCache) else BlobCache(cache)
    link_mode = settings.get("link_mode")
    mode = LinkMode(link_mode) if isinstance(link_mode, str) else link_mode
    existing: OCILayout | None = None
    if isinstance(layout, OCILayout):
        existing, blob_cache = layout, layout.cache
    elif (Path(layout) / "oci-layout").exists():
        existing = OCILayout.open(layout, cache=blob_cache, link_mode=mode)
    origins = [offline_origin(ref, existing, blob_cache) for ref in parsed]
    for origin in origins:
        check_complete(origin, existing, blob_cache, options)
    target = existing or OCILayout.create(Path(str(layout)), cache=blob_cache, link_mode=mode)
    results = []
    with BlobPools(options.concurrency) as pools:
        for ref, origin in zip(parsed, origins, strict=True):
            dst = LayoutDestination(target, ref_name or str(ref), verify=options.verify)
            result = copy_graph(
                origin.source,
                origin.ref,
                dst,
                options,
                settings.get("progress"),
                pools,
                reference=str(ref),
            )
            result.resolved_from = origin.note
            results.append(result)
    return results


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
    ref_name: str | None = None,
    offline: bool = False,
    **settings: Unpack[CopySettings],
) -> PullResult:
    """Pull one reference into ``layout``; as ``pull_many``."""
    return pull_many([ref], layout=layout, ref_name=ref_name, offline=offline, **settings)[0]

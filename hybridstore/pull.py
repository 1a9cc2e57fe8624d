"""``hybridstore.pull``: the main job as one library call.

Example::

    from hybridstore import pull
    result = pull("oci://registry.example.com/charts/app:1.2.3", layout="./charts")
    result.digest, result.fetched, result.reused   # what arrived, what was reused
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hybridstore.errors import HybridstoreError
from hybridstore.oci.reference import Reference
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_dirs import removed_if_failed
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.engine import CopyResult
from hybridstore.transfer.settings import copy_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hybridstore.transfer.copier import Copier
    from hybridstore.transfer.open import Opened
    from hybridstore.transfer.settings import CopySettings

__all__ = ["PullResult", "pull", "pull_many"]

PullResult = CopyResult


def pull_many(
    refs: Sequence[str],
    *,
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None = None,
    offline: bool = False,
    init: bool = False,
    on_error: Callable[[str, HybridstoreError], None] | None = None,
    **settings: Unpack[CopySettings],
) -> list[PullResult]:
    """Pull each reference into ``layout`` through the shared cache; ``settings`` as
    ``CopySettings`` describes them.

    All references share one connection pool and one set of worker pools. ``ref_name``
    (the name recorded in the layout, default the full reference) only makes sense
    with a single reference. A ``layout`` given as an ``OCILayout`` links from the
    cache it was opened with. A non-empty directory that is not yet a layout is
    refused unless ``init``; a layout directory this call creates is removed again if
    the pull fails. ``offline`` opens no socket and loads no part of the registry
    client (see ``transfer.offline``): digests come from the cache, tags from the
    target layout or the most recently used known layout holding exactly that
    reference. Online, the first failing reference raises unless
    ``on_error`` is given: then it is called with that reference and its error, the
    others are still pulled, and the results hold the ones that succeeded (a new layout
    directory that ends up with none is removed). Offline checks every reference before
    anything changes, so one missing fails them all.
    """
    parsed = [Reference.parse(r) for r in refs]
    if offline:
        return _pull_offline(parsed, layout, ref_name, init, settings)
    from hybridstore.transfer.copier import Copier, bound_settings  # the registry client

    with Copier(**bound_settings(settings, [ref.registry for ref in parsed])) as copier:
        # Sources first: credentials are resolved before the layout exists.
        sources = [copier.registry_source(ref) for ref in parsed]
        if isinstance(layout, OCILayout):
            return _each(copier, sources, layout, ref_name, on_error)
        try:
            with removed_if_failed(layout):
                target = OCILayout.open_or_create(
                    layout, cache=copier.cache, link_mode=copier.link_mode, init=init
                )
                results = _each(copier, sources, target, ref_name, on_error)
                if not results:
                    raise _NothingPulled  # every ref failed (on_error saw each): undo the layout
                return results
        except _NothingPulled:
            return []


class _NothingPulled(Exception):
    """Every reference failed and was reported through ``on_error``."""


def _each(
    copier: Copier,
    sources: Sequence[Opened],
    target: OCILayout,
    ref_name: str | None,
    on_error: Callable[[str, HybridstoreError], None] | None,
) -> list[PullResult]:
    """Pull each source into ``target``; a failure raises, or goes to ``on_error``."""
    results: list[PullResult] = []
    for src in sources:
        try:
            results.append(
                copier.run(src, copier.layout_destination(target, ref_name or src.display))
            )
        except HybridstoreError as e:
            if on_error is None:
                raise
            on_error(src.display, e)
    return results


def _pull_offline(
    parsed: Sequence[Reference],
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None,
    init: bool,
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
    root = existing.root if existing is not None else Path(str(layout))
    with removed_if_failed(root):
        target = existing or OCILayout.create(root, cache=blob_cache, link_mode=mode, init=init)
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


def pull(
    ref: str,
    *,
    layout: str | os.PathLike[str] | OCILayout,
    ref_name: str | None = None,
    offline: bool = False,
    init: bool = False,
    **settings: Unpack[CopySettings],
) -> PullResult:
    """Pull one reference into ``layout``; as ``pull_many``."""
    return pull_many(
        [ref], layout=layout, ref_name=ref_name, offline=offline, init=init, **settings
    )[0]

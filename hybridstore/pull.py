"""``hybridstore.pull``: the main job as one library call.

Example::

    import hybridstore
    result = hybridstore.pull("oci://registry.example.com/charts/app:1.2.3",
                              layout="./charts")
    result.digest, result.fetched, result.reused   # what arrived, what was reused
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridstore.errors import HybridstoreError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Platform
from hybridstore.oci.reference import Reference
from hybridstore.remote.clients import RegistryClients
from hybridstore.remote.credentials import Credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.engine import CopyOptions, CopyResult, Progress, pull_graph
from hybridstore.transfer.pools import BlobPools

log = logging.getLogger("hybridstore.pull")

__all__ = ["pull", "pull_many", "RegistryClients"]

PullResult = CopyResult


@dataclass(frozen=True)
class _Target:
    layout: OCILayout
    cache: BlobCache


def _target(
    layout: str | os.PathLike[str] | OCILayout,
    cache: str | os.PathLike[str] | BlobCache | None,
    link_mode: LinkMode | str | None,
) -> _Target:
    blob_cache = cache if isinstance(cache, BlobCache) else BlobCache(cache)
    if isinstance(layout, OCILayout):
        return _Target(layout, blob_cache)
    mode = LinkMode(link_mode) if isinstance(link_mode, str) else link_mode
    return _Target(OCILayout.open_or_create(layout, cache=blob_cache, link_mode=mode), blob_cache)


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
    options = CopyOptions(
        platforms=tuple(p if isinstance(p, Platform) else Platform.parse(p) for p in platforms),
        all_platforms=all_platforms,
        concurrency=concurrency,
        include_nondistributable=include_nondistributable,
        ref_name=ref_name,
        include_referrers=include_referrers,
        referrer_types=tuple(referrer_types),
    )
    clients = RegistryClients(transport or TransportOptions(), credential)
    try:
        # Credentials are resolved here, before the layout exists: a bad helper or
        # input never leaves a new, empty project directory behind.
        repos = [clients.repository(ref, manifest_limit) for ref in parsed]
        new_dir = None if isinstance(layout, OCILayout) else Path(layout)
        if new_dir is not None and new_dir.exists():
            new_dir = None
        target = _target(layout, cache, link_mode)
        try:
            with BlobPools(concurrency) as pools:
                return [
                    pull_graph(repo, ref, target.cache, target.layout, options, progress, pools)
                    for repo, ref in zip(repos, parsed, strict=True)
                ]
        except BaseException:
            if new_dir is not None:
                _remove_if_untagged(target.layout, new_dir)
            raise
    finally:
        clients.close()


def _remove_if_untagged(layout: OCILayout, root: Path) -> None:
    """Undo a layout this call created when the pull failed before tagging anything."""
    try:
        if not layout.refs():
            shutil.rmtree(root)
    except (OSError, HybridstoreError) as e:
        log.warning("could not remove the unfinished layout %s: %s", root, e)


def pull(ref: str, **kwargs: Any) -> PullResult:
    """Pull one reference; keyword arguments as for ``pull_many``."""
    return pull_many([ref], **kwargs)[0]

"""``hybridstore.pull``: the main job as one library call.

Example::

    import hybridstore
    result = hybridstore.pull("oci://registry.example.com/charts/app:1.2.3",
                              layout="./charts")
    print(result.digest, result.fetched, result.reused)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .cache import BlobCache
from .layout import OCILayout
from .linking import LinkMode
from .model import Platform
from .reference import Reference
from .remote.credentials import Credential, resolve_credential
from .remote.repository import DEFAULT_MANIFEST_LIMIT, Repository
from .remote.transport import RegistryTransport, TransportOptions, new_session
from .transfer import Progress, PullOptions, PullResult, pull_graph

__all__ = ["pull", "pull_many", "RegistryClients"]


class RegistryClients:
    """One pooled session and one transport (with its token cache) per registry."""

    def __init__(self, options: TransportOptions, credential: Credential | None = None) -> None:
        self.options = options
        self.session = new_session(options)
        self.credential = credential
        self._transports: dict[str, RegistryTransport] = {}

    def repository(
        self, ref: Reference, manifest_limit: int = DEFAULT_MANIFEST_LIMIT
    ) -> Repository:
        host = ref.endpoint_host
        transport = self._transports.get(host)
        if transport is None:
            cred = self.credential or resolve_credential(ref.registry)
            transport = RegistryTransport(host, self.options, session=self.session, credential=cred)
            self._transports[host] = transport
        return Repository(transport, ref.repository, manifest_limit=manifest_limit)

    def close(self) -> None:
        self.session.close()


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
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    manifest_limit: int = DEFAULT_MANIFEST_LIMIT,
    progress: Progress | None = None,
) -> list[PullResult]:
    """Pull each reference into ``layout`` through the shared ``cache``.

    All references share one connection pool and one worker pool. ``ref_name``
    only makes sense with a single reference.
    """
    parsed = [Reference.parse(r) for r in refs]
    target = _target(layout, cache, link_mode)
    options = PullOptions(
        platforms=tuple(p if isinstance(p, Platform) else Platform.parse(p) for p in platforms),
        all_platforms=all_platforms,
        concurrency=concurrency,
        include_nondistributable=include_nondistributable,
        ref_name=ref_name,
    )
    clients = RegistryClients(transport or TransportOptions(), credential)
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return [
                pull_graph(
                    clients.repository(ref, manifest_limit),
                    ref,
                    target.cache,
                    target.layout,
                    options,
                    progress,
                    pool,
                )
                for ref in parsed
            ]
    finally:
        clients.close()


def pull(ref: str, **kwargs: Any) -> PullResult:
    """Pull one reference; keyword arguments as for ``pull_many``."""
    return pull_many([ref], **kwargs)[0]

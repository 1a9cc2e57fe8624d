"""``hybridstore.copy``: content from anywhere to anywhere, digests preserved.

Example::

    from hybridstore.copy import copy
    copy("docker://registry.example.com/app:1.0", "oci:./layouts/app")
    copy("oci:./layouts/app:registry.example.com/app:1.0", "localhost:5000/app:1.0")
    copy("registry.example.com/charts/app:1.2.3", "registry.example.com/mirror/app:1.2.3")

Locations are written as skopeo writes them (see ``locator``). Layouts written
here are cache-backed; a copy between two repositories of one registry mounts
blobs instead of moving them; between registries, blobs pass through the
shared cache (verified there, and replayable if an upload must be retried).
An ``oci-archive:`` end goes through a temporary layout beside the cache:
imported from (``archive_import.import_archive``, every blob verified) or exported to
(``archive.export_to_path``, written complete or not at all).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hybridstore.errors import InvalidInputError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Platform
from hybridstore.remote.clients import RegistryClients
from hybridstore.remote.credentials import Credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.remote.upload import UploadOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.endpoint import Destination, Progress, Source
from hybridstore.transfer.engine import CopyOptions, CopyResult, copy_graph
from hybridstore.transfer.layout_endpoint import LayoutDestination, LayoutSource
from hybridstore.transfer.locator import Location, parse_location
from hybridstore.transfer.open import sole_ref
from hybridstore.transfer.pools import BlobPools
from hybridstore.transfer.registry_endpoint import RegistryDestination, RegistrySource

__all__ = ["Copier", "copy", "copy_options"]


def copy_options(
    *,
    platforms: Sequence[str | Platform] = (),
    all_platforms: bool = False,
    concurrency: int = 8,
    include_nondistributable: bool = False,
    include_referrers: bool = False,
    referrer_types: Sequence[str] = (),
) -> CopyOptions:
    return CopyOptions(
        platforms=tuple(p if isinstance(p, Platform) else Platform.parse(p) for p in platforms),
        all_platforms=all_platforms,
        concurrency=concurrency,
        include_nondistributable=include_nondistributable,
        include_referrers=include_referrers,
        referrer_types=tuple(referrer_types),
    )


@dataclass
class _Opened:
    source: Source
    ref: str
    display: str


class Copier:
    """Shared state of one command's copies: connections, cache, worker pools."""

    def __init__(
        self,
        options: CopyOptions,
        *,
        cache: str | os.PathLike[str] | BlobCache | None = None,
        transport: TransportOptions | None = None,
        credential: Credential | None = None,
        link_mode: LinkMode | str | None = None,
        upload: UploadOptions | None = None,
        manifest_limit: int = MAX_DOCUMENT_BYTES,
        progress: Progress | None = None,
    ) -> None:
        self.options = options
        self.cache = cache if isinstance(cache, BlobCache) else BlobCache(cache)
        self.clients = RegistryClients(transport or TransportOptions(), credential)
        self.link_mode = LinkMode(link_mode) if isinstance(link_mode, str) else link_mode
        self.upload = upload
        self.manifest_limit = manifest_limit
        self.progress = progress
        self.pools = BlobPools(options.concurrency)

    def __enter__(self) -> Copier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.pools.shutdown(wait=True)
        self.clients.close()

    def copy(self, src: Location, dst: Location) -> CopyResult:
        with ExitStack() as stack:
            opened = self.source(src, stack)
            if dst.kind != "archive":
                return self._run(opened, self.destination(dst, opened))
            # Into a layout beside the cache (so blobs hard-link), then one export.
            assert dst.path is not None
            staging = self._staging(stack, "export")
            layout = OCILayout.create(staging, cache=self.cache, link_mode=self.link_mode)
            name = dst.name or opened.display
            destination = LayoutDestination(layout, self.cache, name, partial=False)
            result = self._run(opened, destination)
            from hybridstore.archive.export import export_to_path

            export_to_path(OCILayout.open(staging), dst.path)
            return result
        raise AssertionError("unreachable")

    def _run(self, opened: _Opened, destination: Destination) -> CopyResult:
        return copy_graph(
            opened.source,
            opened.ref,
            destination,
            self.options,
            self.progress,
            self.pools,
            reference=opened.display,
        )

    def _staging(self, stack: ExitStack, what: str) -> Path:
        """A temporary layout directory next to the cache (same filesystem: links work)."""
        parent = self.cache.root.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = stack.enter_context(
            tempfile.TemporaryDirectory(dir=parent, prefix=f".hybridstore-{what}-")
        )
        return Path(tmp) / "layout"

    def source(self, loc: Location, stack: ExitStack | None = None) -> _Opened:
        if loc.kind == "registry":
            assert loc.reference is not None
            repo = self.clients.repository(loc.reference, self.manifest_limit)
            src: Source = RegistrySource(repo, self.cache)
            return _Opened(src, loc.reference.reference, str(loc.reference))
        assert loc.path is not None
        path = loc.path
        if loc.kind == "archive":
            if stack is None:
                raise InvalidInputError(f"{loc}: an archive source needs a staging area")
            from hybridstore.archive.importer import import_archive

            path = self._staging(stack, "import")
            import_archive(loc.path, path, cache=self.cache, link_mode=self.link_mode)
        layout = OCILayout.open(path, cache=self.cache)
        name = loc.name or sole_ref(layout)
        return _Opened(LayoutSource(layout, self.manifest_limit), name, name)

    def destination(self, loc: Location, src: _Opened) -> Destination:
        if loc.kind == "registry":
            assert loc.reference is not None
            repo = self.clients.repository(loc.reference, self.manifest_limit, push=True)
            return RegistryDestination(repo, loc.reference, self.cache, self.upload)
        assert loc.path is not None and loc.kind == "layout"
        layout = OCILayout.open_or_create(loc.path, cache=self.cache, link_mode=self.link_mode)
        return LayoutDestination(layout, self.cache, loc.name or src.display)


def copy(
    src: str,
    dst: str,
    *,
    cache: str | os.PathLike[str] | BlobCache | None = None,
    platforms: Sequence[str | Platform] = (),
    all_platforms: bool = False,
    concurrency: int = 8,
    include_nondistributable: bool = False,
    include_referrers: bool = False,
    referrer_types: Sequence[str] = (),
    link_mode: LinkMode | str | None = None,
    transport: TransportOptions | None = None,
    credential: Credential | None = None,
    upload: UploadOptions | None = None,
    manifest_limit: int = MAX_DOCUMENT_BYTES,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy ``src`` to ``dst`` (``docker://REF``, ``REF``, ``oci://REF``, ``oci:PATH[:NAME]``).

    A layout destination without ``NAME`` records the source's full reference
    (or its layout ref name).
    """
    options = copy_options(
        platforms=platforms,
        all_platforms=all_platforms,
        concurrency=concurrency,
        include_nondistributable=include_nondistributable,
        include_referrers=include_referrers,
        referrer_types=referrer_types,
    )
    src_loc, dst_loc = parse_location(src), parse_location(dst)
    with Copier(
        options,
        cache=cache,
        transport=transport,
        credential=credential,
        link_mode=link_mode,
        upload=upload,
        manifest_limit=manifest_limit,
        progress=progress,
    ) as copier:
        return copier.copy(src_loc, dst_loc)

"""``hybridstore.copy``: content from anywhere to anywhere, digests preserved.

Example::

    from hybridstore.copy import copy
    copy("docker://registry.example.com/app:1.0", "oci:./layouts/app")
    copy("oci:./layouts/app:registry.example.com/app:1.0", "localhost:5000/app:1.0")
    copy("registry.example.com/charts/app:1.2.3", "registry.example.com/mirror/app:1.2.3")

Locations are written as skopeo writes them (see ``transfer.locator``). Layouts written
here are cache-backed; a copy between two repositories of one registry mounts
blobs instead of moving them; between registries, blobs pass through the
shared cache (verified there, and replayable if an upload must be retried).
An ``oci-archive:`` end goes through a temporary layout beside the cache:
imported from (``archive.importer.import_archive``, every blob verified) or exported to
(``archive.export.export_to_path``, written complete or not at all).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.model import Platform
from hybridstore.remote.credentials import Credential
from hybridstore.remote.transport import TransportOptions
from hybridstore.remote.upload import UploadOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.copier import Copier, copy_options
from hybridstore.transfer.endpoint import Progress
from hybridstore.transfer.engine import CopyResult
from hybridstore.transfer.locator import Location, parse_location

__all__ = ["copy"]


def _staging(cache: BlobCache, stack: ExitStack, what: str) -> Path:
    """A temporary layout directory next to the cache (same filesystem: links work)."""
    parent = cache.root.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = stack.enter_context(
        tempfile.TemporaryDirectory(dir=parent, prefix=f".hybridstore-{what}-")
    )
    return Path(tmp) / "layout"


def _copy(copier: Copier, src: Location, dst: Location) -> CopyResult:
    """``copier.copy`` with archive ends staged through temporary layouts: an archive
    source is imported first (every blob verified), an archive destination is
    written by one export at the end (complete or not at all)."""
    with ExitStack() as stack:
        if src.kind == "archive":
            from hybridstore.archive.importer import import_archive  # tar and zstd: only here

            assert src.path is not None
            staged = _staging(copier.cache, stack, "import")
            import_archive(src.path, staged, cache=copier.cache, link_mode=copier.link_mode)
            src = Location("layout", path=staged, name=src.name)
        if dst.kind != "archive":
            return copier.copy(src, dst)
        from hybridstore.archive.export import export_to_path

        assert dst.path is not None
        staging = _staging(copier.cache, stack, "export")
        layout = OCILayout.create(staging, cache=copier.cache, link_mode=copier.link_mode)
        opened = copier.source(src)
        name = dst.name or opened.display
        result = copier.run(opened, copier.layout_destination(layout, name, partial=False))
        export_to_path(OCILayout.open(staging), dst.path)
        return result
    raise AssertionError("unreachable")


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
        return _copy(copier, src_loc, dst_loc)

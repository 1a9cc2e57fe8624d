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

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from hybridstore.errors import InvalidInputError
from hybridstore.remote.credentials import Credential, bind_credential, merge_credentials
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_dirs import removed_if_failed
from hybridstore.transfer.copier import Copier, bound_settings
from hybridstore.transfer.engine import CopyResult
from hybridstore.transfer.locator import Location, parse_location
from hybridstore.transfer.settings import CopySettings

if TYPE_CHECKING:
    from typing_extensions import Unpack

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
            into = OCILayout.create(  # known=False: a throw-away layout is not recorded
                staged, cache=copier.cache, link_mode=copier.link_mode, known=False
            )
            import_archive(src.path, into, cache=copier.cache, link_mode=copier.link_mode)
            src = Location("layout", path=staged, name=src.name)
        if dst.kind == "layout":
            assert dst.path is not None
            with removed_if_failed(dst.path):  # a new layout directory is not left half made
                return copier.copy(src, dst)
        if dst.kind != "archive":
            return copier.copy(src, dst)
        from hybridstore.archive.export import export_to_path

        assert dst.path is not None
        staging = _staging(copier.cache, stack, "export")
        layout = OCILayout.create(
            staging, cache=copier.cache, link_mode=copier.link_mode, known=False
        )
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
    src_credential: Credential | None = None,
    dest_credential: Credential | None = None,
    **settings: Unpack[CopySettings],
) -> CopyResult:
    """Copy ``src`` to ``dst`` (``docker://REF``, ``REF``, ``oci://REF``, ``oci:PATH[:NAME]``,
    ``oci-archive:PATH[:NAME]``); ``settings`` as ``CopySettings`` describes them.

    A layout destination without ``NAME`` records the source's full reference
    (or its layout ref name). ``src_credential`` goes only to the source's registry and
    ``dest_credential`` only to the destination's, as skopeo's ``--src-creds`` and
    ``--dest-creds``; every other registry uses its stored credentials.
    """
    src_loc, dst_loc = parse_location(src), parse_location(dst)
    registries = [loc.reference.registry for loc in (src_loc, dst_loc) if loc.reference]
    settings = bound_settings(settings, registries)
    settings["credentials"] = merge_credentials(
        settings.get("credentials") or {},
        _bind_side(src_credential, src_loc, "--src-creds"),
        _bind_side(dest_credential, dst_loc, "--dest-creds"),
    )
    with Copier(**settings) as copier:
        return _copy(copier, src_loc, dst_loc)


def _bind_side(credential: Credential | None, loc: Location, option: str) -> dict[str, Credential]:
    if credential is None:
        return {}
    if loc.reference is None:
        raise InvalidInputError(f"{option} was given but {loc} is not a registry")
    return bind_credential(credential, [loc.reference.registry], option)

"""One command's copies: the shared state (cache, registry clients, worker pools) and
the choice of concrete ends for a location.

The engine (``engine.copy_graph``) knows only the endpoint protocol; this is where a
registry reference becomes a ``RegistrySource``/``RegistryDestination`` and a layout
path a ``LayoutSource``/``LayoutDestination``. ``pull``, ``push`` and ``copy`` all run
on a ``Copier``: one HTTP pool per registry and one set of worker pools per command,
however many refs it moves. Archives are not ends here: the ``copy`` verb stages them
through a layout (``archive/`` sits beside this layer, not below it).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from hybridstore.errors import InvalidInputError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.reference import Reference
from hybridstore.remote.clients import RegistryClients
from hybridstore.remote.credentials import bind_credential, merge_credentials
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout
from hybridstore.store.linking import LinkMode
from hybridstore.transfer.endpoint import Destination
from hybridstore.transfer.engine import CopyResult, copy_graph
from hybridstore.transfer.layout_endpoint import LayoutDestination, LayoutSource
from hybridstore.transfer.locator import Location
from hybridstore.transfer.open import Opened, sole_ref
from hybridstore.transfer.pools import BlobPools, max_streams
from hybridstore.transfer.registry_endpoint import RegistryDestination, RegistrySource
from hybridstore.transfer.settings import CopySettings, copy_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Copier", "bound_settings"]


def bound_settings(
    settings: CopySettings, registries: Iterable[str], option: str = "-u/--creds"
) -> CopySettings:
    """``settings`` with ``credential`` moved into ``credentials`` for the one registry in
    ``registries`` (more than one: ``InvalidInputError``, before anything is sent)."""
    out = settings.copy()
    scoped = bind_credential(out.pop("credential", None), registries, option)
    out["credentials"] = merge_credentials(out.get("credentials") or {}, scoped)
    return out


class Copier:
    """Shared state of one command's copies: connections, cache, worker pools."""

    def __init__(self, **settings: Unpack[CopySettings]) -> None:
        self.options = copy_options(settings)
        cache = settings.get("cache")
        self.cache = cache if isinstance(cache, BlobCache) else BlobCache(cache)
        transport = settings.get("transport") or TransportOptions()
        if settings.get("credential") is not None:
            raise TypeError("bind the credential to its registry first (bound_settings)")
        streams = max_streams(self.options.concurrency)  # the pool holds every stream
        self.clients = RegistryClients(transport.with_streams(streams), settings.get("credentials"))
        link_mode = settings.get("link_mode")
        self.link_mode = LinkMode(link_mode) if isinstance(link_mode, str) else link_mode
        self.upload = settings.get("upload")
        self.manifest_limit = settings.get("manifest_limit", MAX_DOCUMENT_BYTES)
        self.progress = settings.get("progress")
        self.oci_format = settings.get("oci_format", False)
        if self.oci_format and self.options.include_referrers:
            raise InvalidInputError(
                "--format oci changes digests, so referrers would lose their subject: "
                "leave out --include-referrers"
            )
        self.pools = BlobPools(self.options.concurrency)

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
        """Copy between two registry or layout locations."""
        opened = self.source(src)
        return self.run(opened, self.destination(dst, opened))

    def run(self, opened: Opened, destination: Destination) -> CopyResult:
        """Copy what ``opened`` names into ``destination`` on this command's pools."""
        return copy_graph(
            opened.source,
            opened.ref,
            destination,
            self.options,
            self.progress,
            self.pools,
            reference=opened.display,
        )

    def registry_source(self, ref: Reference) -> Opened:
        """``ref`` at its registry; credentials are resolved here, before anything is
        written, so a bad helper or input leaves no new directory behind."""
        repo = self.clients.repository(ref, self.manifest_limit)
        return Opened(RegistrySource(repo, self.cache), ref.reference, str(ref))

    def source(self, loc: Location) -> Opened:
        if loc.kind == "registry":
            assert loc.reference is not None
            return self.registry_source(loc.reference)
        assert loc.path is not None and loc.kind == "layout"
        layout = OCILayout.open(loc.path, cache=self.cache)
        name = loc.name or sole_ref(layout)
        return Opened(LayoutSource(layout, self.manifest_limit), name, name)

    def layout_destination(
        self, layout: OCILayout, name: str, *, partial: bool = True
    ) -> LayoutDestination:
        """Into ``layout`` through the cache it links from; the root is tagged ``name``."""
        return LayoutDestination(
            layout,
            name,
            partial=partial,
            verify=self.options.verify,
            oci_format=self.oci_format,
        )

    def destination(self, loc: Location, src: Opened) -> Destination:
        if loc.kind == "registry":
            assert loc.reference is not None
            if self.oci_format:
                raise InvalidInputError(
                    "--format oci converts into layouts (oci:, oci-archive:); a registry "
                    "destination keeps every digest"
                )
            repo = self.clients.repository(loc.reference, self.manifest_limit, push=True)
            return RegistryDestination(repo, loc.reference, self.cache, self.upload)
        assert loc.path is not None and loc.kind == "layout"
        layout = OCILayout.open_or_create(loc.path, cache=self.cache, link_mode=self.link_mode)
        return self.layout_destination(layout, loc.name or src.display)

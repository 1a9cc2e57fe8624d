"""A ``Repository`` that asks mirrors first and falls through to the primary.

Every read goes to the endpoints ``PullPlan`` allows for it, in order. A mirror
that fails in any way (refused, timed out, 404, 5xx, denied, a manifest that does
not match its digest) costs one debug line and the next endpoint is asked; a
mirror that cannot be reached at all is skipped for the rest of the command, so a
stopped mirror costs one connection attempt, not one per blob. A blob stream that
a mirror breaks off (after its own Range resumes) is continued by the next
endpoint from the byte it stopped at. The primary's error is the one reported when
every endpoint fails.

Nothing here trusts a mirror: manifests are checked against the digest asked for,
blobs by the cache against the digest the manifest names (a blob that does not
match fails the pull and is never stored), and a tag resolved by a mirror is only
ever a starting digest, as from any registry.

It is a ``Repository`` (its own transport and name are the primary's), so the
endpoints above it need not know mirrors exist.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TypeVar

from hybridstore.errors import HybridstoreError, NetworkError, RegistryError
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.remote.mirrors import Endpoint, PullPlan
from hybridstore.remote.repository import FetchedManifest, Repository
from hybridstore.remote.transport import RegistryTransport

__all__ = ["MirroredRepository"]

log = logging.getLogger("hybridstore.remote")

T = TypeVar("T")


class MirroredRepository(Repository):
    """Reads of one logical repository spread over ``plan``'s endpoints.

    ``open_repository`` makes the ``Repository`` of an endpoint; it is called at
    most once per endpoint, on first use, so an unused mirror costs nothing.
    """

    def __init__(
        self,
        plan: PullPlan,
        primary_transport: RegistryTransport,
        open_repository: Callable[[Endpoint], Repository],
        *,
        manifest_limit: int,
    ) -> None:
        super().__init__(
            primary_transport, plan.primary.ref.repository, manifest_limit=manifest_limit
        )
        self.plan = plan
        self._open = open_repository
        self._repos: dict[Endpoint, Repository] = {}
        self._unreachable: set[Endpoint] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MirroredRepository({self.plan.logical.name})"

    # -- reads, each over the endpoints the plan allows ------------------------

    def resolve(self, reference: str) -> Descriptor:
        return self._first(self._endpoints(reference), lambda r: r.resolve(reference))

    def fetch_manifest(self, reference: str, expected: Descriptor | None = None) -> FetchedManifest:
        return self._first(
            self._endpoints(reference), lambda r: r.fetch_manifest(reference, expected)
        )

    def manifest_exists(self, desc: Descriptor) -> bool:
        return self._first(self.plan.digest_endpoints, lambda r: r.manifest_exists(desc))

    def open_blob(self, desc: Descriptor, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        """The first endpoint that opens the blob streams it; if a mirror then fails
        mid-stream (after its own resumes), the next endpoint continues from there."""
        endpoints = self.plan.digest_endpoints
        (start, chunks), used = self._first_at(endpoints, lambda r: r.open_blob(desc, offset))
        return start, self._continued(desc, endpoints, used, start, chunks)

    def _continued(
        self,
        desc: Descriptor,
        endpoints: Sequence[Endpoint],
        used: int,
        pos: int,
        chunks: Iterator[bytes],
    ) -> Iterator[bytes]:
        while True:
            try:
                for chunk in chunks:
                    pos += len(chunk)
                    yield chunk
                return
            except HybridstoreError as e:
                if not endpoints[used].is_mirror:
                    raise
                log.debug("%s: %s; continuing at %d elsewhere", endpoints[used].label, e, pos)
                (start, chunks), more = self._first_at(
                    endpoints[used + 1 :], partial(_open_blob_at, desc=desc, offset=pos)
                )
                used += 1 + more
                chunks = _drop(chunks, pos - start)  # that endpoint ignored Range

    def blob_exists(self, desc: Descriptor) -> bool:
        return self._first(self.plan.digest_endpoints, lambda r: r.blob_exists(desc))

    def referrers(self, subject: Digest, artifact_types: Sequence[str] = ()) -> list[Descriptor]:
        # A referrer list changes like a tag does: only endpoints trusted with tags answer.
        return self._first(self.plan.tag_endpoints, lambda r: r.referrers(subject, artifact_types))

    def tags(self, page_size: int = 1000, max_pages: int = 1000) -> list[str]:
        return self._first(self.plan.tag_endpoints, lambda r: r.tags(page_size, max_pages))

    # -- falling through -------------------------------------------------------

    def _endpoints(self, reference: str) -> tuple[Endpoint, ...]:
        is_digest = ":" in reference
        return self.plan.digest_endpoints if is_digest else self.plan.tag_endpoints

    def _first(self, endpoints: Sequence[Endpoint], op: Callable[[Repository], T]) -> T:
        return self._first_at(endpoints, op)[0]

    def _first_at(
        self, endpoints: Sequence[Endpoint], op: Callable[[Repository], T]
    ) -> tuple[T, int]:
        """``op``'s answer from the first endpoint that gives one, and that endpoint's index."""
        for i, ep in enumerate(endpoints):
            if not ep.is_mirror:
                return op(self._repository(ep)), i  # the primary's answer or error is final
            if ep in self._unreachable:
                continue
            try:
                return op(self._repository(ep)), i
            except HybridstoreError as e:
                if isinstance(e, NetworkError) and not isinstance(e, RegistryError):
                    self._unreachable.add(ep)
                log.debug("%s: %s; trying the next endpoint", ep.label, str(e).splitlines()[0])
        raise AssertionError("a pull plan always ends with its primary")

    def _repository(self, ep: Endpoint) -> Repository:
        with self._lock:
            repo = self._repos.get(ep)
            if repo is None:
                repo = self._repos[ep] = self._open(ep)
            return repo


def _open_blob_at(
    repo: Repository, *, desc: Descriptor, offset: int
) -> tuple[int, Iterator[bytes]]:
    return repo.open_blob(desc, offset)


def _drop(chunks: Iterator[bytes], n: int) -> Iterator[bytes]:
    """``chunks`` without their first ``n`` bytes."""
    for chunk in chunks:
        if n >= len(chunk):
            n -= len(chunk)
            continue
        yield chunk[n:]
        n = 0

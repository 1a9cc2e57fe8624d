"""A registry repository as either end of a copy.

As a source, manifests go through the shared cache when one is given (a warm
pull costs one resolve; a digest whose manifest is cached costs none, so a fully
cached pull by digest opens no socket and never loads the HTTP stack), blobs
stream from the registry with resume. Blobs
bound for another registry are staged in the cache first unless they can be
mounted, so an upload always reads a verified local file it can replay.

As a destination, blobs are HEAD-checked, mounted or uploaded (``BlobUploader``);
documents are put with their exact bytes, children before parents; a manifest
with a ``subject`` on a registry that does not answer ``OCI-Subject`` gets the
tag-schema fallback index updated; the root is put last, by tag.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import IO, TYPE_CHECKING

from hybridstore.errors import InvalidInputError, NotFoundError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor, Index, Manifest
from hybridstore.oci.reference import Reference
from hybridstore.oci.referrers import fallback_tag, merge_fallback_index, referrer_descriptor
from hybridstore.remote.repository import Repository
from hybridstore.store.cache import BlobCache, BlobSource, IngestResult
from hybridstore.transfer.endpoint import BlobOutcome, Opener, Progress, Source

if TYPE_CHECKING:
    from hybridstore.remote.upload import UploadOptions

__all__ = ["RegistrySource", "RegistryDestination"]


class RegistrySource:
    """Reads from one repository; ``cache`` keeps manifests and stages blobs."""

    is_remote = True

    def __init__(self, repo: Repository, cache: BlobCache | None = None) -> None:
        self.repo = repo
        self.cache = cache
        self._fetched: set[Digest] = set()

    @property
    def description(self) -> str:
        return f"{self.repo.transport.registry}/{self.repo.name}"

    @property
    def mount_from(self) -> tuple[str, str] | None:
        return self.repo.transport.registry, self.repo.name

    def resolve(self, ref: str) -> Descriptor:
        return self._cached(ref) or self.repo.resolve(ref)

    def _cached(self, ref: str) -> Descriptor | None:
        """The descriptor of a digest ``ref`` whose manifest the cache holds (verified
        when it was stored; its own ``mediaType`` says what it is), else None."""
        if self.cache is None or ":" not in ref:
            return None
        digest = Digest.parse(ref)
        if not self.cache.exists(digest):
            return None
        size = self.cache.stat(digest).st_size
        if size > self.repo.manifest_limit:
            return None
        with self.cache.open(digest) as f:
            raw = f.read(size + 1)
        try:
            media_type = json.loads(raw).get("mediaType")
        except (ValueError, AttributeError, RecursionError):
            return None
        if media_type not in mt.MANIFEST_ACCEPT or len(raw) != size:
            return None
        return Descriptor(media_type, digest, size)

    def document(self, desc: Descriptor) -> bytes:
        cache = self.cache
        if cache is not None and cache.exists(desc.digest, desc.size):
            with cache.open(desc.digest) as f:
                return f.read()
        fetched = self.repo.fetch_manifest(str(desc.digest), expected=desc)
        if cache is not None:
            cache.ingest_bytes(desc.digest, fetched.raw)
        self._fetched.add(desc.digest)
        return fetched.raw

    def was_fetched(self, desc: Descriptor) -> bool:
        return desc.digest in self._fetched

    def read_blob(self, desc: Descriptor, limit: int) -> bytes:
        cache = self.cache
        if cache is not None and cache.exists(desc.digest, desc.size) and desc.size <= limit:
            with cache.open(desc.digest) as f:
                return f.read()
        return self.repo.read_blob(desc, limit)

    def blob_source(self, desc: Descriptor, progress: Progress) -> BlobSource:
        def source(offset: int) -> tuple[int, Iterable[bytes]]:
            start, chunks = self.repo.open_blob(desc, offset)
            return start, _counted(desc, chunks, progress)

        return source

    def opener(self, desc: Descriptor) -> Opener | None:
        return None  # remote: the destination stages it in the cache

    def referrers(
        self, subject: Descriptor, artifact_types: Sequence[str] = ()
    ) -> list[Descriptor]:
        return self.repo.referrers(subject.digest, artifact_types)


class _Staged:
    """Opener that first brings a remote blob into the cache (once), then opens it there."""

    def __init__(self, cache: BlobCache, desc: Descriptor, source: BlobSource) -> None:
        self.cache = cache
        self.desc = desc
        self.source = source
        self.result: IngestResult | None = None

    def fetch(self) -> None:
        if self.result is None:
            self.result = self.cache.ingest(self.desc.digest, self.desc.size, self.source)

    def __call__(self) -> AbstractContextManager[IO[bytes]]:
        self.fetch()
        return self.cache.open(self.desc.digest)


class RegistryDestination:
    """Writes into one repository (push scope); the root gets ``target``'s tag or digest."""

    keeps_partial_index = False
    platform_manifest_as_root = False  # a registry takes --platform's manifest as the target

    def __init__(
        self,
        repo: Repository,
        target: Reference,
        cache: BlobCache | None = None,
        upload: UploadOptions | None = None,
    ) -> None:
        self.repo = repo
        self.target = target
        self.cache = cache
        # Imported here: only a push needs it, and every pull's start-up would pay for it.
        from hybridstore.remote.upload import BlobUploader

        self.uploader = BlobUploader(repo, upload)

    @property
    def name(self) -> str:
        return str(self.target)

    def put_blob(self, desc: Descriptor, src: Source, progress: Progress) -> BlobOutcome:
        if self.uploader.exists(desc):
            outcome = BlobOutcome(
                str(desc.digest), desc.size, desc.media_type, False, 0, "", "present"
            )
            progress.done(desc, outcome)
            return outcome
        mount = src.mount_from
        mount_repo = (
            mount[1] if mount is not None and mount[0] == self.repo.transport.registry else None
        )
        staged: _Staged | None = None
        opener = src.opener(desc)
        if opener is None:
            if self.cache is None:
                raise InvalidInputError(
                    f"copying {desc.digest} from {src.description} needs a cache to stage it"
                )
            staged = _Staged(self.cache, desc, src.blob_source(desc, Progress()))
            if mount_repo is None:
                staged.fetch()  # now, so a download failure is reported as one
            opener = staged
        progress.start(desc)
        result = self.uploader.upload(
            desc, opener, mount_from=mount_repo, on_bytes=lambda n: progress.advance(desc, n)
        )
        fetched = staged is not None and staged.result is not None and staged.result.fetched
        down = staged.result.bytes_transferred if staged and staged.result else 0
        outcome = BlobOutcome(
            str(desc.digest),
            desc.size,
            desc.media_type,
            fetched,
            down + result.bytes_sent,
            "",
            result.action,
        )
        progress.done(desc, outcome)
        return outcome

    def put_document(
        self, desc: Descriptor, raw: bytes, doc: Manifest | Index, src: Source
    ) -> BlobOutcome:
        # A manifest with a subject is always put: that is what keeps the fallback index
        # of a registry without the referrers API up to date.
        if doc.subject is None and self.repo.manifest_exists(desc):
            return self._present(desc, src)
        return self._put(desc, raw, doc, src, str(desc.digest))

    def put_root(
        self, desc: Descriptor, raw: bytes, doc: Manifest | Index, src: Source
    ) -> BlobOutcome:
        target = self.target
        if target.digest is not None and target.digest != desc.digest:
            raise InvalidInputError(
                f"target {target} names digest {target.digest}, but the content is {desc.digest}"
            )
        reference = target.tag if target.digest is None and target.tag else str(desc.digest)
        if doc.subject is None and self._names(reference, desc):
            return self._present(desc, src)
        return self._put(desc, raw, doc, src, reference)

    def _names(self, reference: str, desc: Descriptor) -> bool:
        """Whether ``reference`` already names ``desc`` here (a re-push sends nothing)."""
        try:
            return self.repo.resolve(reference).digest == desc.digest
        except NotFoundError:
            return False

    def _present(self, desc: Descriptor, src: Source) -> BlobOutcome:
        return BlobOutcome(
            str(desc.digest), desc.size, desc.media_type, src.was_fetched(desc), 0, "", "present"
        )

    def _put(
        self, desc: Descriptor, raw: bytes, doc: Manifest | Index, src: Source, reference: str
    ) -> BlobOutcome:
        result = self.repo.put_manifest(desc, raw, reference)
        if doc.subject is not None and not result.subject_acknowledged:
            self._add_to_fallback(doc.subject.digest, referrer_descriptor(desc, doc))
        return BlobOutcome(
            str(desc.digest),
            desc.size,
            desc.media_type,
            src.was_fetched(desc),
            len(raw),
            "",
            "uploaded",
        )

    def _add_to_fallback(self, subject: Digest, referrer: Descriptor) -> None:
        """The tag-schema fallback: list ``referrer`` in the index tagged after ``subject``."""
        existing, _ = self.repo.referrers_fallback(subject)
        raw = merge_fallback_index(existing.raw if existing else None, referrer)
        if raw is None:
            return
        index = Descriptor(mt.OCI_INDEX, Digest.of_bytes(raw), len(raw))
        self.repo.put_manifest(index, raw, fallback_tag(subject))


def _counted(desc: Descriptor, chunks: Iterable[bytes], progress: Progress) -> Iterator[bytes]:
    for c in chunks:
        progress.advance(desc, len(c))
        yield c

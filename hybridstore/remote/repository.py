"""One repository on a registry: resolve, fetch and put manifests, stream blobs,
list tags and referrers.

Every manifest is verified against the digest we asked for, or hashed from its
bytes when fetched by tag (``Docker-Content-Digest`` is checked, never trusted
instead). Blob streams count bytes, resume with ``Range`` after a dropped
connection, and reject a ``Content-Range`` that does not start where we asked.

Manifests are put with their exact bytes (a digest names bytes, so nothing is
ever re-serialised) and their own media type as ``Content-Type``. Referrers come
from the OCI 1.1 referrers API, or, on registries without it (a 404 there, as
distribution 2.8 answers), from the ``<alg>-<encoded>`` tag-schema index. Blob
uploads live in ``upload.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from hybridstore.errors import (
    DigestMismatchError,
    InvalidDocumentError,
    NetworkError,
    NotFoundError,
    RegistryError,
    SizeMismatchError,
)
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest, DigestVerifier
from hybridstore.oci.jsondoc import load_json, load_json_object
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES, MAX_LIST_PAGE_BYTES
from hybridstore.oci.model import Descriptor, Index, parse_document
from hybridstore.oci.referrers import fallback_tag, filter_referrers, referrers_of_index
from hybridstore.remote.http import Response, TransportError, join_url, read_capped
from hybridstore.remote.readahead import read_ahead
from hybridstore.remote.safety import redact_url
from hybridstore.remote.transport import RegistryTransport

__all__ = ["Repository", "FetchedManifest", "PutManifestResult"]

log = logging.getLogger("hybridstore.remote")

_CHUNK = 1 << 20
_MAX_RESUMES = 5
# Read-ahead pays for one big stream; a pull of many mid-size blobs already overlaps
# receiving and storing across its parallel streams, and the extra thread per stream
# cost CPU there (many, 32 x 16 MiB: 0.08 CPU-s more, no faster).
_READ_AHEAD_FROM = 64 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


_MAX_REFERRER_PAGES = 100


@dataclass(frozen=True)
class FetchedManifest:
    descriptor: Descriptor
    raw: bytes


@dataclass(frozen=True)
class PutManifestResult:
    digest: Digest
    subject_acknowledged: bool
    """The registry answered ``OCI-Subject``: it indexes referrers itself (OCI 1.1)."""


class Repository:
    """``/v2/<name>/...`` on one registry. ``push=True`` asks for ``pull,push`` scope
    on every request, so one token serves a whole push."""

    def __init__(
        self,
        transport: RegistryTransport,
        name: str,
        *,
        manifest_limit: int = MAX_DOCUMENT_BYTES,
        push: bool = False,
    ) -> None:
        self.transport = transport
        self.name = name
        self.manifest_limit = manifest_limit
        self.scope = f"repository:{name}:{'pull,push' if push else 'pull'}"
        self._referrers_api: bool | None = None  # learnt on first use

    def __repr__(self) -> str:
        return f"Repository({self.transport.registry}/{self.name})"

    def _url(self, kind: str, reference: str) -> str:
        return self.transport.url(f"/v2/{self.name}/{kind}/{reference}")

    # -- manifests -----------------------------------------------------------

    def resolve(self, reference: str) -> Descriptor:
        """Descriptor of a tag or digest by HEAD (GET when HEAD is refused or vague)."""
        accept = {"Accept": ", ".join(mt.MANIFEST_ACCEPT)}
        resp = self.transport.send(
            "HEAD",
            self._url("manifests", reference),
            scope=self.scope,
            headers=accept,
            ok=(200, 405),
        )
        resp.close()
        header_digest = resp.headers.get("Docker-Content-Digest")
        ctype = _media_type(resp.headers.get("Content-Type"))
        length = resp.headers.get("Content-Length")
        if resp.status_code == 200 and header_digest and ctype and length and length.isdigit():
            digest = Digest.parse(header_digest)
            if _is_digest(reference) and digest != Digest.parse(reference):
                raise DigestMismatchError(
                    f"registry answered digest {digest} for requested {reference}"
                )
            if int(length) > self.manifest_limit:
                raise InvalidDocumentError(
                    f"manifest {reference} is {length} bytes, over the "
                    f"{self.manifest_limit}-byte limit (raise it with --max-manifest-size)"
                )
            if ctype in mt.MANIFEST_ACCEPT:
                return Descriptor(ctype, digest, int(length))
        return self.fetch_manifest(reference).descriptor

    def fetch_manifest(self, reference: str, expected: Descriptor | None = None) -> FetchedManifest:
        """GET a manifest with a size cap; verify its digest and media type."""
        accept = {"Accept": ", ".join(mt.MANIFEST_ACCEPT)}
        resp = self.transport.send(
            "GET",
            self._url("manifests", reference),
            scope=self.scope,
            headers=accept,
        )
        with resp:
            raw = _read_capped(resp, self.manifest_limit, reference)
        want = (
            expected.digest
            if expected
            else (Digest.parse(reference) if _is_digest(reference) else None)
        )
        digest = Digest.of_bytes(raw, want.algorithm if want else "sha256")
        if want is not None and digest != want:
            raise DigestMismatchError(
                f"manifest {self.name}@{reference}: expected {want}, got {digest}"
            )
        header = resp.headers.get("Docker-Content-Digest")
        if header and want is None and header != str(digest):
            raise DigestMismatchError(
                f"manifest {self.name}:{reference}: Docker-Content-Digest {header} "
                f"does not match the content ({digest})"
            )
        if expected is not None and expected.size != len(raw):
            raise SizeMismatchError(
                f"manifest {digest}: expected {expected.size} bytes, got {len(raw)}"
            )
        ctype = _media_type(resp.headers.get("Content-Type"))
        media_type = _document_media_type(raw, ctype, expected)
        return FetchedManifest(Descriptor(media_type, digest, len(raw)), raw)

    def manifest_exists(self, desc: Descriptor) -> bool:
        """Whether the registry holds the manifest ``desc`` names (HEAD by digest)."""
        try:
            resp = self.transport.send(
                "HEAD",
                self._url("manifests", str(desc.digest)),
                scope=self.scope,
                headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)},
            )
        except NotFoundError:
            return False
        resp.close()
        return True

    def put_manifest(self, desc: Descriptor, raw: bytes, reference: str) -> PutManifestResult:
        """PUT the exact bytes ``raw`` of ``desc`` as ``reference`` (a tag or its digest)."""
        actual = Digest.of_bytes(raw, desc.digest.algorithm)
        if actual != desc.digest or len(raw) != desc.size:
            raise DigestMismatchError(
                f"refusing to push manifest {desc.digest}: its bytes hash to {actual} "
                f"({len(raw)} bytes)"
            )
        resp = self.transport.send(
            "PUT",
            self._url("manifests", reference),
            scope=self.scope,
            headers={"Content-Type": desc.media_type},
            body=lambda: raw,
            follow_redirects=False,
            ok=(200, 201, 202, 204, 413),
        )
        resp.close()
        if resp.status_code == 413:
            raise RegistryError(
                f"registry {self.transport.registry} refused manifest {desc.digest} "
                f"({len(raw)} bytes) as too large (413); the registry's manifest size limit "
                "must be raised to push it"
            )
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.strip() != str(desc.digest):
            raise DigestMismatchError(
                f"registry {self.transport.registry} stored manifest {desc.digest} of "
                f"{self.name} as {header.strip()}: it changed the bytes"
            )
        return PutManifestResult(desc.digest, "OCI-Subject" in resp.headers)

    # -- referrers -----------------------------------------------------------

    def referrers(self, subject: Digest, artifact_types: Sequence[str] = ()) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``subject`` (optionally of ``artifact_types``).

        Uses the referrers API when the registry has it, else the tag-schema
        fallback index; an unknown subject has no referrers, never an error.
        """
        if self._referrers_api is not False:
            found = self._referrers_from_api(subject, artifact_types)
            if found is not None:
                self._referrers_api = True
                return found
            self._referrers_api = False
        return filter_referrers(self.referrers_fallback(subject)[1], artifact_types)

    def referrers_fallback(
        self, subject: Digest
    ) -> tuple[FetchedManifest | None, list[Descriptor]]:
        """The tag-schema fallback index of ``subject`` (None if absent) and its entries."""
        try:
            fetched = self.fetch_manifest(fallback_tag(subject))
        except NotFoundError:
            return None, []
        doc = parse_document(fetched.raw, fetched.descriptor.media_type)
        if not isinstance(doc, Index):
            raise InvalidDocumentError(
                f"{self.name}:{fallback_tag(subject)} is the referrers fallback tag but "
                "does not name an image index"
            )
        return fetched, referrers_of_index(doc)

    def _referrers_from_api(
        self, subject: Digest, artifact_types: Sequence[str]
    ) -> list[Descriptor] | None:
        """Referrers through ``GET /referrers/<digest>``; None when the API is absent."""
        url = self._url("referrers", str(subject))
        if len(artifact_types) == 1:
            url += "?artifactType=" + quote(artifact_types[0], safe="")
        out: list[Descriptor] = []
        for _ in range(_MAX_REFERRER_PAGES):
            resp = self.transport.send(
                "GET",
                url,
                scope=self.scope,
                headers={"Accept": mt.OCI_INDEX},
                ok=(200, 404),
            )
            with resp:
                if resp.status_code == 404:
                    if out:
                        raise RegistryError(f"referrers of {subject}: a later page was not found")
                    return None
                if _media_type(resp.headers.get("Content-Type")) != mt.OCI_INDEX:
                    return None  # not the API (a catch-all page or proxy): use the fallback
                raw = _read_capped(resp, self.manifest_limit, f"referrers of {subject}")
            doc = parse_document(raw, mt.OCI_INDEX)
            assert isinstance(doc, Index)
            out.extend(referrers_of_index(doc))
            nxt = resp.link("next")
            if not nxt:
                # Filtered here as well: a registry that ignored ``artifactType`` says so
                # only by omitting OCI-Filters-Applied, and filtering twice is harmless.
                return filter_referrers(out, artifact_types)
            url = join_url(url, nxt)
        raise RegistryError(
            f"referrers listing of {subject} did not end after {_MAX_REFERRER_PAGES} pages"
        )

    # -- blobs ---------------------------------------------------------------

    def read_blob(self, desc: Descriptor, limit: int | None = None) -> bytes:
        """A small blob (a config, a provenance file) in memory, digest-verified."""
        cap = self.manifest_limit if limit is None else limit
        if desc.size > cap:
            raise InvalidDocumentError(
                f"blob {desc.digest} is {desc.size} bytes, over the {cap}-byte limit for "
                "reading into memory"
            )
        verifier = DigestVerifier(desc.digest, desc.size)
        buf = bytearray()
        _, chunks = self.open_blob(desc)
        for chunk in chunks:
            verifier.update(chunk)
            buf += chunk
        verifier.verify()
        return bytes(buf)

    def open_blob(self, desc: Descriptor, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        """A cache ``BlobSource``: stream ``desc`` from ``offset`` (or from 0 if the
        registry ignores Range). Dropped connections resume transparently."""
        desc.digest.require_verifiable()
        stream = _BlobStream(self, desc)
        start = stream.open(offset)
        if desc.size - start < _READ_AHEAD_FROM:
            return start, stream.chunks()
        return start, read_ahead(stream.chunks())

    def blob_exists(self, desc: Descriptor) -> bool:
        try:
            resp = self.transport.send(
                "HEAD", self._url("blobs", str(desc.digest)), scope=self.scope
            )
        except NotFoundError:
            return False
        resp.close()
        return True

    # -- tags ----------------------------------------------------------------

    def tags(self, page_size: int = 1000, max_pages: int = 1000) -> list[str]:
        """All tags, following ``Link`` pagination with a page cap."""
        url = self.transport.url(f"/v2/{self.name}/tags/list?n={page_size}")
        out: list[str] = []
        for _ in range(max_pages):
            resp = self.transport.send("GET", url, scope=self.scope)
            with resp:
                raw = _read_body(resp, MAX_LIST_PAGE_BYTES)
            if raw is None:
                raise RegistryError(
                    f"tag list of {self.name}: a page is larger than {MAX_LIST_PAGE_BYTES} bytes"
                )
            body = load_json(raw, what="tag list", limit=MAX_LIST_PAGE_BYTES)
            tags = body.get("tags") if isinstance(body, dict) else None
            out.extend(t for t in (tags or []) if isinstance(t, str))
            nxt = resp.link("next")
            if not nxt:
                return out
            url = join_url(url, nxt)
        raise RegistryError(f"tag listing of {self.name} did not end after {max_pages} pages")


class _BlobStream:
    """One blob GET with byte counting and transparent Range resume."""

    def __init__(self, repo: Repository, desc: Descriptor) -> None:
        self.repo = repo
        self.desc = desc
        self.url = repo._url("blobs", str(desc.digest))
        self.pos = 0
        self.resp: Response | None = None

    def open(self, offset: int) -> int:
        """Issue the GET; returns the offset the body starts at."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.repo.transport.send(
            "GET", self.url, scope=self.repo.scope, headers=headers, ok=(200, 206)
        )
        start = 0
        if resp.status_code == 206:
            start = _content_range_start(resp, self.desc)
            if start != offset:
                resp.close()
                raise RegistryError(
                    f"blob {self.desc.digest}: asked for bytes from {offset}, "
                    f"server sent Content-Range starting at {start}"
                )
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != self.desc.size - start:
            resp.close()
            raise SizeMismatchError(
                f"blob {self.desc.digest}: Content-Length {length} but "
                f"{self.desc.size - start} bytes expected"
            )
        self.resp = resp
        self.pos = start
        return start

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._resuming_chunks()
        finally:  # also when the consumer stops early: never leave a response open
            if self.resp is not None:
                self.resp.close()

    def _resuming_chunks(self) -> Iterator[bytes]:
        resumes = 0
        while True:
            assert self.resp is not None
            try:
                for chunk in self.resp.iter_content(_CHUNK):
                    self.pos += len(chunk)
                    yield chunk
                self.resp.close()
                if self.pos >= self.desc.size:
                    return  # over-long bodies are caught by the cache's verifier
                reason = f"body ended after {self.pos} of {self.desc.size} bytes"
            except TransportError as e:
                reason = str(e)
            self.resp.close()
            resumes += 1
            if resumes > _MAX_RESUMES:
                raise NetworkError(
                    f"blob {self.desc.digest}: transfer kept failing ({reason}); giving up "
                    f"after {_MAX_RESUMES} resumes"
                )
            log.debug("blob %s: %s; resuming at %d", self.desc.digest.short, reason, self.pos)
            want = self.pos
            start = self.open(want)
            if start != want:  # server ignored Range: skip what we already have
                self._skip(want - start)

    def _skip(self, n: int) -> None:
        assert self.resp is not None
        while n > 0:
            got = _read_or_fail(self.resp, min(n, _CHUNK))
            if not got:
                raise NetworkError(f"blob {self.desc.digest}: body ended while skipping")
            n -= len(got)
            self.pos += len(got)


def _content_range_start(resp: Response, desc: Descriptor) -> int:
    value = resp.headers.get("Content-Range", "")
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if not m or "," in value:
        resp.close()
        raise RegistryError(f"blob {desc.digest}: invalid Content-Range {value!r} in a 206")
    first, last = int(m.group(1)), int(m.group(2))
    if last != desc.size - 1 or (m.group(3) != "*" and int(m.group(3)) != desc.size):
        resp.close()
        raise RegistryError(f"blob {desc.digest}: Content-Range {value!r} does not end the blob")
    return first


def _read_body(resp: Response, limit: int) -> bytes | None:
    """``read_capped``, with a connection lost mid-body as a ``NetworkError``."""
    try:
        return read_capped(resp, limit)
    except TransportError as e:
        raise NetworkError(f"{redact_url(resp.url)}: {e}") from None


def _read_or_fail(resp: Response, n: int) -> bytes:
    try:
        return resp.read(n)
    except TransportError as e:
        raise NetworkError(f"{redact_url(resp.url)}: {e}") from None


def _read_capped(resp: Response, limit: int, what: str) -> bytes:
    body = _read_body(resp, limit)
    if body is None:
        raise InvalidDocumentError(
            f"manifest {what} exceeds the {limit}-byte limit (raise it with --max-manifest-size)"
        )
    return body


def _is_digest(reference: str) -> bool:
    return ":" in reference


def _media_type(header: str | None) -> str | None:
    if not header:
        return None
    return header.split(";", 1)[0].strip().lower() or None


def _document_media_type(raw: bytes, ctype: str | None, expected: Descriptor | None) -> str:
    """The document's media type; ``Content-Type``, descriptor and body must agree."""
    own = load_json_object(raw, what="manifest", limit=None).get("mediaType")
    if own is not None and not isinstance(own, str):
        raise InvalidDocumentError("manifest 'mediaType' is not a string")
    if own and ctype and ctype in mt.MANIFEST_ACCEPT and own != ctype:
        raise InvalidDocumentError(
            f"registry sent Content-Type {ctype} for a document whose mediaType is {own}"
        )
    if (
        own
        and expected
        and expected.media_type in mt.MANIFEST_ACCEPT
        and own != expected.media_type
    ):
        raise InvalidDocumentError(
            f"descriptor says {expected.media_type} but the document says {own}"
        )
    chosen = own or (expected.media_type if expected else None) or ctype
    if not chosen:
        raise InvalidDocumentError("cannot tell the manifest's media type")
    return chosen

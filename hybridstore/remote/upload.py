"""Blob uploads into one repository: the push side of the registry client.

Per blob, cheapest first:

1. ``HEAD`` the blob; present means nothing is sent.
2. Cross-repository mount (``POST ?mount=<digest>&from=<repo>``) when the
   content already lives in another repository of the same registry; ``201``
   is done, ``202`` opens an ordinary upload session that we continue.
3. Monolithic upload: ``POST`` for a session, one ``PUT ?digest=`` with the
   whole body. With ``single_post_max`` set (off by default), small blobs
   first try a single ``POST ?digest=`` with the body, one round trip fewer on
   a registry that stores it; one that answers ``202`` instead (distribution
   ignores the body, so the blob goes out twice) is remembered and its session
   continued with the ``PUT``. Off by default because the common registry is
   that one, and oras-go, containers/image and go-containerregistry never
   send it either.
4. Chunked upload above a size threshold: ``PATCH`` chunks with
   ``Content-Range`` (at least ``OCI-Chunk-Min-Length`` each), following the
   ``Location`` every answer carries, then an empty ``PUT ?digest=``. A chunk
   that fails, or is answered ``416``, is recovered by asking the registry
   where the upload stands (``GET <location>`` -> ``Range``) and sending from
   there; when the registry has lost the session (distribution 2.8 answers 404
   to a stale one) the blob starts over in a new session, a bounded number of
   times.

Bodies always come from a local file that can be opened again (a layout blob or
a cache blob: content from another registry is staged in the cache first), so
every retry replays exactly the same bytes and nothing is retried that cannot
be. ``413`` and a registry's digest rejection are reported as what they mean.
Upload URLs carry secrets in ``_state``; they are never logged (the transport
redacts query strings) and must stay on the registry's own host.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import IO, Final
from urllib.parse import quote, urlsplit

from hybridstore.errors import (
    AuthError,
    DigestMismatchError,
    NetworkError,
    NotFoundError,
    RegistryError,
)
from hybridstore.oci.model import Descriptor
from hybridstore.remote.http import Response, join_url
from hybridstore.remote.repository import Repository
from hybridstore.remote.transport import RegistryTransport, registry_error_message

__all__ = ["BlobUploader", "UploadOptions", "UploadResult", "Opener"]

log = logging.getLogger("hybridstore.remote")

Opener = Callable[[], AbstractContextManager[IO[bytes]]]
"""Opens the blob's bytes from the start; called again for every (re)send."""

_READ_SIZE: Final = 1 << 20
_MAX_SESSIONS: Final = 3  # fresh upload sessions per blob before giving up
_MAX_RECOVERIES: Final = 5  # chunk recoveries (416, lost answers) per session
_RANGE: Final = re.compile(r"(?:bytes=)?0-(\d+)")

# Registries seen answering 202 to a single POST with a body: never tried again.
_NO_SINGLE_POST: weakref.WeakSet[RegistryTransport] = weakref.WeakSet()
_NO_SINGLE_POST_LOCK = threading.Lock()


@dataclass(frozen=True)
class UploadOptions:
    """How blobs are sent. ``chunked_above=0`` forces chunked uploads."""

    chunk_size: int = 16 << 20
    """Bytes per PATCH (raised to the registry's ``OCI-Chunk-Min-Length``)."""
    chunked_above: int = 64 << 20
    """Blobs larger than this go in chunks; smaller ones in one PUT."""
    single_post_max: int = 0
    """Blobs up to this size first try a single ``POST ?digest=`` (for registries known
    to store its body); 0, the default, never does."""

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.chunked_above < 0 or self.single_post_max < 0:
            raise ValueError("upload sizes must be positive")


@dataclass(frozen=True)
class UploadResult:
    action: str  # "present" | "mounted" | "uploaded"
    bytes_sent: int


class _SessionLost(Exception):
    """The registry no longer knows the upload session: start a new one."""


class _DigestRejected(_SessionLost):
    """The registry refused the finished upload's digest or size."""


class _Slice:
    """A sized, re-creatable request body over ``[offset, offset+length)`` of a file.

    The HTTP client sends it with ``Content-Length`` (``__len__``) by reading it in
    blocks; ``on_bytes`` sees every block (progress and byte counting).
    """

    def __init__(
        self, f: IO[bytes], offset: int, length: int, on_bytes: Callable[[int], None]
    ) -> None:
        f.seek(offset)
        self._f = f
        self._left = length
        self._length = length
        self._on_bytes = on_bytes

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.read(n)
        if not data and n:
            raise NetworkError("the local blob file ended early while uploading it")
        self._left -= len(data)
        self._on_bytes(len(data))
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(_READ_SIZE):
            yield chunk


class BlobUploader:
    """Uploads blobs into ``repo`` (which must have push scope)."""

    def __init__(self, repo: Repository, options: UploadOptions | None = None) -> None:
        self.repo = repo
        self.transport = repo.transport
        self.options = options or UploadOptions()
        self._may_mount = True

    # -- public -----------------------------------------------------------------------

    def exists(self, desc: Descriptor) -> bool:
        return self.repo.blob_exists(desc)

    def upload(
        self,
        desc: Descriptor,
        opener: Opener,
        *,
        mount_from: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> UploadResult:
        """Make ``desc`` present in the repository; mount from ``mount_from`` if given.

        Does not HEAD first (call ``exists``). ``on_bytes`` sees every byte sent.
        """
        sent = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n
            if on_bytes is not None:
                on_bytes(n)

        with ExitStack() as files:
            handle: list[IO[bytes]] = []  # one open file, seeked for every (re)send

            def body(offset: int, length: int) -> Callable[[], _Slice]:
                def make() -> _Slice:
                    if not handle:
                        handle.append(files.enter_context(opener()))
                    return _Slice(handle[0], offset, length, count)

                return make

            session: tuple[str, int] | None = None  # (location, OCI-Chunk-Min-Length)
            if mount_from is not None and mount_from != self.repo.name and self._may_mount:
                try:
                    session = self._mount(desc, mount_from)
                except AuthError as e:  # no pull right on the source: send the bytes
                    log.debug("mount from %s refused (%s); uploading instead", mount_from, e)
                    self._may_mount = False
                else:
                    if session is None:
                        return UploadResult("mounted", 0)
            elif self._try_single_post(desc):
                session = self._single_post(desc, body(0, desc.size))
                if session is None:
                    return UploadResult("uploaded", sent)
            rejected = 0
            for attempt in range(_MAX_SESSIONS):
                try:
                    location, min_chunk = session or self._start()
                    if desc.size > self.options.chunked_above:
                        self._chunked(desc, location, min_chunk, body)
                    else:
                        self._finish(desc, location, body(0, desc.size), desc.size)
                    return UploadResult("uploaded", sent)
                except _DigestRejected as e:
                    rejected += 1
                    if rejected > 1:  # twice the same verdict: the source itself is wrong
                        raise DigestMismatchError(
                            f"{e}; the source's bytes do not match their digest (check it "
                            "with `hybridstore layout verify`)"
                        ) from None
                    reason = str(e)
                except (_SessionLost, NotFoundError) as e:
                    reason = str(e) or "the registry lost the upload session"
                except RegistryError:
                    raise
                except NetworkError as e:
                    reason = str(e)
                if attempt == _MAX_SESSIONS - 1:
                    raise NetworkError(
                        f"upload of {desc.digest} to {self.transport.registry}/{self.repo.name} "
                        f"kept failing ({reason}); giving up after {_MAX_SESSIONS} sessions"
                    )
                log.debug("upload of %s: %s; starting a new session", desc.digest.short, reason)
                session = None
        raise AssertionError("unreachable")

    # -- sessions ---------------------------------------------------------------------

    def _uploads_url(self, query: str = "") -> str:
        return self.transport.url(f"/v2/{self.repo.name}/blobs/uploads/{query}")

    def _location(self, resp: Response, url: str) -> str:
        """The session URL of an answer; it must stay on the registry's own host."""
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(
                f"registry {self.transport.registry} opened an upload without a Location header"
            )
        absolute = join_url(url, loc)
        want, got = urlsplit(self.transport.base), urlsplit(absolute)
        if (got.scheme, got.netloc) != (want.scheme, want.netloc):
            raise RegistryError(
                f"registry {self.transport.registry} sent an upload location on another host "
                f"({got.scheme}://{got.hostname}); refusing to send credentials there"
            )
        return absolute

    def _start(self) -> tuple[str, int]:
        url = self._uploads_url()
        resp = self.transport.send("POST", url, scope=self.repo.scope, ok=(202,))
        resp.close()
        return self._session(resp, url)

    def _session(self, resp: Response, url: str) -> tuple[str, int]:
        return self._location(resp, url), _int_header(resp, "OCI-Chunk-Min-Length")

    def _mount(self, desc: Descriptor, source_repo: str) -> tuple[str, int] | None:
        """Mount from ``source_repo``: None when done, else the session to upload into."""
        url = self._uploads_url(
            f"?mount={quote(str(desc.digest), safe=':')}&from={quote(source_repo, safe='/')}"
        )
        scope = f"{self.repo.scope} repository:{source_repo}:pull"
        resp = self.transport.send("POST", url, scope=scope, ok=(201, 202))
        resp.close()
        if resp.status_code == 201:
            self._check_digest_header(resp, desc)
            return None
        log.debug("mount of %s from %s declined; uploading", desc.digest.short, source_repo)
        return self._session(resp, url)

    def _try_single_post(self, desc: Descriptor) -> bool:
        if desc.size > self.options.single_post_max:
            return False
        with _NO_SINGLE_POST_LOCK:
            return self.transport not in _NO_SINGLE_POST

    def _single_post(self, desc: Descriptor, body: Callable[[], _Slice]) -> tuple[str, int] | None:
        """``POST ?digest=`` with the body: None when stored, else the session opened."""
        url = self._uploads_url(f"?digest={quote(str(desc.digest), safe=':')}")
        resp = self.transport.send(
            "POST",
            url,
            scope=self.repo.scope,
            headers=_octets(desc.size),
            body=body,
            follow_redirects=False,
            ok=(201, 202, 413),
        )
        resp.close()
        if resp.status_code == 201:
            self._check_digest_header(resp, desc)
            return None
        if resp.status_code == 413:
            raise self._too_large(desc, desc.size)
        with _NO_SINGLE_POST_LOCK:
            _NO_SINGLE_POST.add(self.transport)
        log.debug("%s ignores single-POST uploads; using POST+PUT", self.transport.registry)
        return self._session(resp, url)

    # -- monolithic and chunked -------------------------------------------------------

    def _finish(
        self, desc: Descriptor, location: str, body: Callable[[], _Slice] | None, length: int
    ) -> None:
        """``PUT <location>&digest=`` with the rest of the blob (or nothing)."""
        sep = "&" if urlsplit(location).query else "?"
        url = f"{location}{sep}digest={quote(str(desc.digest), safe=':')}"
        resp = self.transport.send(
            "PUT",
            url,
            scope=self.repo.scope,
            headers=_octets(length),
            body=body if body is not None else (lambda: b""),
            follow_redirects=False,
            ok=(201, 204, 400, 413),
        )
        resp.close()
        if resp.status_code == 413:
            raise self._too_large(desc, length)
        if resp.status_code == 400:
            message = registry_error_message(resp)
            if "DIGEST_INVALID" in message or "SIZE_INVALID" in message:
                raise _DigestRejected(
                    f"registry {self.transport.registry} rejected the uploaded bytes of "
                    f"{desc.digest} ({message})"
                )
            raise RegistryError(
                f"registry {self.transport.registry} refused blob {desc.digest}: {message}"
            )
        self._check_digest_header(resp, desc)

    def _chunked(
        self,
        desc: Descriptor,
        location: str,
        min_chunk: int,
        body: Callable[[int, int], Callable[[], _Slice]],
    ) -> None:
        chunk = max(self.options.chunk_size, min_chunk)
        offset = 0
        recoveries = 0
        while offset < desc.size:
            n = min(chunk, desc.size - offset)
            resp: Response | None
            try:
                resp = self.transport.send(
                    "PATCH",
                    location,
                    scope=self.repo.scope,
                    headers={**_octets(n), "Content-Range": f"{offset}-{offset + n - 1}"},
                    body=body(offset, n),
                    follow_redirects=False,
                    ok=(202, 204, 413, 416),
                )
                resp.close()
            except RegistryError:
                raise
            except NotFoundError:
                raise _SessionLost("the registry no longer knows the upload session") from None
            except NetworkError as e:
                log.debug("chunk at %d of %s failed: %s", offset, desc.digest.short, e)
                resp = None
            if resp is not None and resp.status_code == 413:
                raise self._too_large(desc, n, chunk=True)
            if resp is not None and resp.status_code in (202, 204):
                location = self._location(resp, location)
                got = _range_end(resp)
                if got is None or got == offset + n:
                    offset += n
                    continue
                if got > desc.size:
                    raise _SessionLost(f"registry holds {got} bytes of a {desc.size}-byte blob")
                offset = got  # the registry has less (or more) than we think: follow it
                continue
            recoveries += 1
            if recoveries > _MAX_RECOVERIES:
                raise _SessionLost(f"chunked upload did not progress after {_MAX_RECOVERIES} tries")
            location, offset = self._status(location, desc)
        self._finish(desc, location, None, 0)

    def _status(self, location: str, desc: Descriptor) -> tuple[str, int]:
        """Where an upload stands (after a 416 or a lost answer): its location and size."""
        try:
            resp = self.transport.send("GET", location, scope=self.repo.scope, ok=(200, 204))
        except NotFoundError:
            raise _SessionLost("the registry lost the upload session") from None
        resp.close()
        got = _range_end(resp)
        if got is None or got > desc.size:
            raise _SessionLost("the registry did not say how much of the upload it has")
        log.debug("upload of %s: registry has %d bytes; continuing", desc.digest.short, got)
        return self._location(resp, location), got

    # -- errors -----------------------------------------------------------------------

    def _too_large(self, desc: Descriptor, length: int, chunk: bool = False) -> RegistryError:
        what = f"a {length}-byte chunk of blob {desc.digest}" if chunk else f"blob {desc.digest}"
        fix = (
            "use a smaller --chunk-size"
            if chunk
            else "raise the registry's body size limit, or send it in chunks (--chunked-above)"
        )
        return RegistryError(
            f"registry {self.transport.registry} refused {what} ({length} bytes) as too "
            f"large (413); {fix}"
        )

    def _check_digest_header(self, resp: Response, desc: Descriptor) -> None:
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.strip() != str(desc.digest):
            raise DigestMismatchError(
                f"registry {self.transport.registry} stored blob {desc.digest} as {header.strip()}"
            )


def _octets(length: int) -> dict[str, str]:
    return {"Content-Type": "application/octet-stream", "Content-Length": str(length)}


def _int_header(resp: Response, name: str) -> int:
    value = resp.headers.get(name, "").strip()
    return int(value) if value.isdigit() else 0


def _range_end(resp: Response) -> int | None:
    """Bytes the registry holds, from ``Range: 0-<last>`` (``0-0`` is read as none:
    distribution writes it for an empty session)."""
    m = _RANGE.fullmatch(resp.headers.get("Range", "").strip())
    if m is None:
        return None
    last = int(m.group(1))
    return 0 if last == 0 else last + 1

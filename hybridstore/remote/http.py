"""The HTTP client the registry code talks to: ``HTTPClient.request`` and
``Response``, over requests (``session.py``), which is imported on the first
request only: commands that never reach a registry never load it.

This layer owns what every body read needs: bounds and progress. No body is
read whole without a cap (``read_capped``; error bodies up to 64 KiB), and a
body that trickles in slower than ``MIN_BODY_RATE`` over a ``timeout`` window is
given up (``TransportError``) instead of waited on. URLs are checked before
anything is sent: one that cannot be parsed (a hostile ``Location`` or realm
with bad IPv6 brackets, a port out of range, control characters) is refused
with a ``RegistryError``, not retried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urljoin, urlsplit

from hybridstore.errors import RegistryError
from hybridstore.remote.neterrors import TLSError, TransportError
from hybridstore.remote.safety import redact_url

if TYPE_CHECKING:
    import requests

__all__ = [
    "Body",
    "HTTPClient",
    "MIN_BODY_RATE",
    "Response",
    "TLSError",
    "TransportError",
    "check_url",
    "https_hint",
    "plain_http_hint",
    "speaks_https",
    "join_url",
    "parse_link",
    "read_capped",
]

# A request body: bytes, or a sized stream (``__len__`` plus ``read``) sent with a
# Content-Length.
Body = bytes | Iterable[bytes]

USER_AGENT: Final = "hybridstore/0.1"
MIN_BODY_RATE: Final = 1024
"""Bytes per second a body must average over each ``timeout`` window (curl's
``--speed-limit``/``--speed-time`` idea): slower is a stalled transfer."""
ERROR_BODY_MAX: Final = 64 * 1024  # an error body is read up to this, the rest dropped
_DRAIN_MAX: Final = 64 * 1024  # an unread rest up to this is read to keep the connection
_SCHEMES: Final = frozenset({"http", "https"})


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL we can send, else a ``RegistryError`` naming it."""
    shown = repr(url[:100])
    if any(c <= " " or c == "\x7f" or not c.isascii() for c in url):
        raise RegistryError(f"refusing to send a request to {shown}: invalid URL")
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError as e:
        raise RegistryError(f"refusing to send a request to {shown}: invalid URL ({e})") from None
    if p.scheme not in _SCHEMES or not p.hostname or port == 0:
        raise RegistryError(f"refusing to send a request to {shown}: not an http(s) URL")
    return url


def join_url(base: str, ref: str) -> str:
    """``ref`` (a ``Location``, a ``Link`` target) resolved against ``base`` and checked."""
    try:
        url = urljoin(base, ref)
    except ValueError as e:
        raise RegistryError(f"refusing to follow {ref[:100]!r}: invalid URL ({e})") from None
    return check_url(url)


def parse_link(value: str, rel: str) -> str | None:
    """The target of ``rel`` in a ``Link`` header (RFC 8288), e.g. tag pagination."""
    for part in value.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if not (target.startswith("<") and target.endswith(">")):
            continue
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key.strip().lower() == "rel" and rel in val.strip().strip('"').split():
                return target[1:-1]
    return None


class _Progress:
    """Gives up on a body averaging under ``MIN_BODY_RATE`` over a ``window``."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.mark = time.monotonic()
        self.count = 0

    def update(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        elapsed = now - self.mark
        if elapsed < self.window:
            return
        if self.count < MIN_BODY_RATE * elapsed:
            raise TransportError(
                f"the body arrived slower than {MIN_BODY_RATE} bytes/s for {elapsed:.0f} s"
            )
        self.mark, self.count = now, 0


class Response:
    """One answer, its body still on the wire. ``close`` hands a fully read
    connection back to the pool (draining a small rest first) and drops any other."""

    def __init__(
        self,
        resp: requests.Response,
        read_some: Callable[[Any, int], bytes],
        url: str,
        request_headers: Mapping[str, str],
        timeout: float,
    ) -> None:
        self._resp = resp
        self._read_some = read_some
        self.status_code: int = resp.status_code
        self.reason: str = resp.reason or ""
        self.headers: Mapping[str, str] = resp.headers
        self.url = url
        #: What was sent (auth compares the Authorization it sent with what it would send).
        self.request_headers = request_headers
        self._progress = _Progress(timeout)
        self._error_body: bytes | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Response {self.status_code}>"

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body, as sent; ``b""`` at its end."""
        if self._closed:
            return b""
        data = self._read_some(self._resp.raw, n)
        self._progress.update(len(data))
        return data

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The body in chunks of up to ``chunk_size``, as the socket delivers them (not
        gathered: another copy of every byte cost a 512 MiB pull 30 % more CPU)."""
        while data := self.read(chunk_size):
            yield data

    def error_body(self) -> bytes:
        """The first ``ERROR_BODY_MAX`` bytes of the body (kept, so also after
        ``close``); ``b""`` when it cannot be read: an error's status already says
        what happened, its body only adds the registry's words."""
        if self._error_body is None:
            buf = bytearray()
            try:
                while len(buf) < ERROR_BODY_MAX and (data := self.read(ERROR_BODY_MAX - len(buf))):
                    buf += data
            except TransportError:
                pass
            self._error_body = bytes(buf)
        return self._error_body

    def link(self, rel: str) -> str | None:
        return parse_link(self.headers.get("Link", ""), rel)

    def close(self) -> None:
        if self._closed:
            return
        raw = self._resp.raw
        left = getattr(raw, "length_remaining", None)
        if left == 0:  # nothing left (a HEAD, an empty body): finish it, keep the connection
            raw.drain_conn()
        elif left is not None and left <= _DRAIN_MAX and self._error_body is None:
            self.error_body()  # drained: the connection stays usable
        self._closed = True
        self._resp.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def speaks_https(resp: Response) -> bool:
    """A TLS port's answer to plain HTTP: ``--plain-http`` was given for a registry that
    speaks HTTPS. Go's TLS server answers a bare 400 without a single header (so even a
    HEAD is recognised); nginx says so in its body."""
    if resp.status_code != 400:
        return False
    if not resp.headers:
        return True
    text = resp.error_body().decode("utf-8", "replace").lower()
    return "http request to an https server" in text or "sent to https port" in text


def plain_http_hint(registry: str) -> str:
    return f"{registry} speaks plain HTTP, not HTTPS: use --plain-http"


def https_hint(registry: str) -> str:
    return f"{registry} speaks HTTPS, not plain HTTP: leave out --plain-http"


class HTTPClient:
    """One command's HTTP: a requests session (opened on the first request) whose
    pools hold ``pool_size`` connections per host, shared by the command's threads.

    ``verify``: True (the system trust store), a CA file, or False (``--insecure``).
    """

    def __init__(
        self, *, verify: bool | str = True, pool_size: int = 16, user_agent: str = USER_AGENT
    ) -> None:
        self.verify = verify
        self.pool_size = pool_size
        self.user_agent = user_agent
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        timeout: float = 30.0,
    ) -> Response:
        """Send one request and read the status and headers; no redirects, no retries."""
        from hybridstore.remote import session as wire

        check_url(url)
        with self._lock:
            if self._session is None:
                self._session = wire.new_session(self.verify, self.pool_size, self.user_agent)
            session = self._session
        sent = {"User-Agent": self.user_agent, **(headers or {})}
        if body is not None and not isinstance(body, bytes) and len(body) == 0:  # type: ignore[arg-type]
            body = b""  # requests would send an empty stream chunked
        try:
            resp = wire.send(
                session,
                method,
                url,
                headers=sent,
                body=body,
                timeout=timeout,
                verify=self.verify is not False,
            )
        except wire.Refused as e:
            raise RegistryError(
                f"refusing to send {method} {redact_url(url)}: invalid URL or header ({e})"
            ) from None
        return Response(resp, wire.read_some, url, sent, timeout)

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_capped(resp: Response, limit: int) -> bytes | None:
    """The body of a streamed response, or ``None`` as soon as it is known to exceed
    ``limit`` bytes (by ``Content-Length`` or while reading: a hostile server may
    stream forever). The caller closes ``resp`` and names the problem."""
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        return None
    buf = bytearray()
    while data := resp.read(min(1 << 20, limit + 1 - len(buf))):
        buf += data
        if len(buf) > limit:
            return None
    return bytes(buf)

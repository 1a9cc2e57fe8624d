"""A small HTTP/1.1 client on the standard library's ``http.client``: pooled
keep-alive connections, TLS, proxies from the environment, streamed bodies.

Hand-written on purpose. Importing requests (urllib3, charset_normalizer,
idna, cookie jars) cost about 40 ms of every command's start-up, more than a
warm pull's whole work (issue 8), and what a registry client needs from such a
library beyond ``http.client`` is small: the redirect policy, retries and auth
are ours anyway (``transport.py``, ``auth.py``). What is left here is
connection reuse, stale-connection detection and mapping socket errors to one
``TransportError`` family. Bodies are never decoded (``Accept-Encoding:
identity``): a digest names the bytes on the wire.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from hybridstore.errors import RegistryError
from hybridstore.remote.safety import redact_url

if TYPE_CHECKING:
    import ssl

__all__ = [
    "Body",
    "HTTPClient",
    "Headers",
    "Response",
    "TLSError",
    "TransportError",
    "read_capped",
]

# A request body: bytes, or a sized stream (``__len__`` plus ``read``) sent with a
# Content-Length.
Body = bytes | Iterable[bytes]

USER_AGENT: Final = "hybridstore/0.1"
_BLOCK: Final = 1 << 20  # socket writes of streamed bodies
_DRAIN_MAX: Final = 64 * 1024  # an unread rest up to this is read to keep the connection
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class TransportError(Exception):
    """No complete HTTP answer: refused, reset, timed out, dropped mid-body or garbled.
    The message is a short reason fit for an error line."""


class TLSError(TransportError):
    """The TLS handshake failed, usually certificate verification."""


def _reason(e: BaseException) -> TransportError:
    """One ``TransportError`` for whatever a socket, TLS or HTTP parse raised."""
    ssl_mod = sys.modules.get("ssl")
    if ssl_mod is not None and isinstance(e, ssl_mod.SSLError):
        detail = getattr(e, "verify_message", None) or getattr(e, "reason", None) or e
        return TLSError(f"TLS failed: {detail}")
    if isinstance(e, TimeoutError):
        return TransportError("timed out")
    if isinstance(e, http.client.IncompleteRead):
        return TransportError("the connection closed in the middle of the body")
    if isinstance(e, http.client.RemoteDisconnected):
        return TransportError("the server closed the connection without answering")
    if isinstance(e, http.client.HTTPException):
        return TransportError(f"invalid HTTP answer ({type(e).__name__})")
    if isinstance(e, socket.gaierror):
        return TransportError(f"cannot resolve the host name ({e.strerror})")
    if isinstance(e, OSError) and e.strerror:
        return TransportError(e.strerror.lower())
    return TransportError(type(e).__name__)


def _refused(method: str, url: str, e: Exception) -> RegistryError:
    """Not sent at all (a hostile ``Location`` with spaces, say): retrying cannot help."""
    return RegistryError(
        f"refusing to send {method} {redact_url(url)}: invalid URL or header ({e})"
    )


class Headers(Mapping[str, str]):
    """Response headers, case-insensitive; repeated fields joined with ", " (RFC 9110)."""

    def __init__(self, fields: Iterable[tuple[str, str]]) -> None:
        self._d: dict[str, str] = {}
        for name, value in fields:
            key = name.lower()
            self._d[key] = f"{self._d[key]}, {value}" if key in self._d else value

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({sorted(self._d)})"


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


class Response:
    """One answer. The body streams from the connection; ``close`` hands a fully
    read connection back to the pool and drops any other."""

    def __init__(
        self,
        client: HTTPClient,
        key: tuple[Any, ...],
        conn: http.client.HTTPConnection,
        raw: http.client.HTTPResponse,
        url: str,
        request_headers: Mapping[str, str],
    ) -> None:
        self._client, self._key, self._conn, self._raw = client, key, conn, raw
        self.status_code = raw.status
        self.reason = raw.reason
        self.headers = Headers(raw.getheaders())
        self.url = url
        #: What was sent (auth compares the Authorization it sent with what it would send).
        self.request_headers = request_headers
        self._content: bytes | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Response {self.status_code}>"

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the body (all with -1); ``b""`` at its end, also when the
        server closed early (callers compare against the size they expect)."""
        try:
            return self._raw.read(None if n < 0 else n)
        except (OSError, http.client.HTTPException) as e:
            raise _reason(e) from None

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        while chunk := self.read(chunk_size):
            yield chunk

    @property
    def content(self) -> bytes:
        """The whole body, read once (for small answers: errors, tag lists, tokens)."""
        if self._content is None:
            self._content = self.read()
        return self._content

    def json(self) -> Any:
        return json.loads(self.content)

    def link(self, rel: str) -> str | None:
        return parse_link(self.headers.get("Link", ""), rel)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        raw = self._raw
        reusable = not raw.will_close
        if reusable and not raw.isclosed():
            left = raw.length
            reusable = left is not None and left <= _DRAIN_MAX
            if reusable:
                try:  # kept: an error body may still be asked for after close
                    rest = raw.read()
                except (OSError, http.client.HTTPException):
                    reusable = False
                else:
                    if self._content is None:
                        self._content = rest
        if reusable and self._conn.sock is not None:
            self._client._release(self._key, self._conn)
        else:
            raw.close()
            self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dropped(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed (or sent garbage)."""
    try:
        poller = select.poll()
    except AttributeError:  # Windows
        return bool(select.select([sock], [], [], 0)[0])
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _proxy_for(scheme: str, host: str) -> str | None:
    """``<scheme>_proxy`` from the environment unless ``no_proxy`` covers ``host``
    (the standard library's rules; its module is imported only when one is set)."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None
    import urllib.request

    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies_environment().get(scheme)


def _proxy_authorization(proxy: str) -> dict[str, str]:
    p = urlsplit(proxy)
    if p.username is None:
        return {}
    import base64

    raw = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(raw).decode()}


class HTTPClient:
    """Pooled HTTP/1.1 connections per (scheme, host, port, TLS trust, proxy), shared by
    a command's threads; each connection serves one request at a time."""

    def __init__(self, *, user_agent: str = USER_AGENT, pool_size: int = 16) -> None:
        self.user_agent = user_agent
        self.pool_size = pool_size
        self._idle: dict[tuple[Any, ...], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._contexts: dict[bool | str, ssl.SSLContext] = {}

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
    ) -> Response:
        """Send one request and read the status and headers; no redirects, no retries
        beyond one fresh connection when a reused keep-alive one turns out dead."""
        p = urlsplit(url)
        if p.scheme not in _DEFAULT_PORTS or not p.hostname:
            raise TransportError(f"not an http(s) URL: {p.scheme}://{p.hostname or ''}")
        try:
            port = p.port or _DEFAULT_PORTS[p.scheme]
        except ValueError:
            raise TransportError("invalid port in the URL") from None
        proxy = _proxy_for(p.scheme, p.hostname)
        key = (p.scheme, p.hostname, port, verify if p.scheme == "https" else None, proxy)
        sent = {"User-Agent": self.user_agent, **(headers or {})}
        if body is not None and not isinstance(body, bytes) and "Content-Length" not in sent:
            sent["Content-Length"] = str(len(body))  # type: ignore[arg-type]
        target = p.path or "/"
        if p.query:
            target = f"{target}?{p.query}"
        wire = dict(sent)
        if proxy and p.scheme == "http":
            target = f"http://{p.netloc.rpartition('@')[2]}{target}"  # absolute form for a proxy
            wire.update(_proxy_authorization(proxy))
        replayable = body is None or isinstance(body, bytes)
        while True:
            conn, reused = self._acquire(key, timeout)
            try:
                conn.request(method, target, body=body, headers=wire)
                raw = conn.getresponse()
            except http.client.InvalidURL as e:  # control characters in a URL
                conn.close()
                raise _refused(method, url, e) from None
            except (OSError, http.client.HTTPException) as e:  # TLS failures included
                conn.close()
                stale = isinstance(
                    e, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                )
                if reused and replayable and stale:
                    continue  # the server dropped an idle connection: once more, fresh
                raise _reason(e) from None
            except ValueError as e:  # an invalid header value
                conn.close()
                raise _refused(method, url, e) from None
            return Response(self, key, conn, raw, url, sent)

    def _acquire(
        self, key: tuple[Any, ...], timeout: float
    ) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                conn = idle.pop()
                if conn.sock is not None and not _dropped(conn.sock):
                    if conn.sock.gettimeout() != timeout:  # settimeout is an ioctl each time
                        conn.sock.settimeout(timeout)
                    return conn, True
                conn.close()
        return self._connect(key, timeout), False

    def _connect(self, key: tuple[Any, ...], timeout: float) -> http.client.HTTPConnection:
        scheme, host, port, verify, proxy = key
        if proxy:
            pp = urlsplit(proxy)
            conn_host, conn_port = pp.hostname or "", pp.port or 80
        else:
            conn_host, conn_port = host, port
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                conn_host, conn_port, timeout=timeout, context=self._tls(verify), blocksize=_BLOCK
            )
            if proxy:
                conn.set_tunnel(host, port, headers=_proxy_authorization(proxy))
        else:
            conn = http.client.HTTPConnection(
                conn_host, conn_port, timeout=timeout, blocksize=_BLOCK
            )
        return conn

    def _tls(self, verify: bool | str) -> ssl.SSLContext:
        """One context per trust setting: loading the CA store costs milliseconds."""
        with self._lock:
            ctx = self._contexts.get(verify)
            if ctx is None:
                import ssl

                if verify is False:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                else:
                    ctx = ssl.create_default_context(
                        cafile=verify if isinstance(verify, str) else None
                    )
                self._contexts[verify] = ctx
            return ctx

    def _release(self, key: tuple[Any, ...], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.pool_size:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pools, self._idle = self._idle, {}
        for idle in pools.values():
            for conn in idle:
                conn.close()

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
    for chunk in resp.iter_content(65536):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)

"""A fault-injecting reverse proxy for loopback tests, stdlib only.

``FaultProxy`` listens on a free 127.0.0.1 port and forwards every request to
an upstream (normally a real ``docker-registry``), unless a programmed
``Fault`` matches the request's method and path. Faults are tried in the order
they were added; each fires ``times`` times (``None`` = forever) and counts its
``hits``. A fault that is used up no longer matches, so a *sequence* (500 then
503 then success) is several one-shot faults.

Fault kinds:
    truncate      forward, send the headers (with the full Content-Length) and
                  ``after_bytes`` of body, then close the connection.
    reset         send a TCP RST: at once (``after_bytes=None``, upstream never
                  sees the request) or after ``after_bytes`` of the real body.
    status        answer ``status`` with ``headers`` and ``body`` without asking
                  upstream (5xx, 429 with Retry-After, ...).
    stall         wait ``seconds`` (bounded by ``MAX_STALL``; ``stop()`` ends it
                  early) before the response, or after ``after_bytes`` of body,
                  then continue normally.
    ignore_range  drop ``Range``/``If-Range`` before forwarding: the client gets
                  200 and the whole body.
    redirect      fetch the body from upstream (with the client's credentials),
                  park it in the ``cdn`` server and answer ``307`` pointing
                  there. The CDN is a second loopback host serving those bytes
                  (with single-range support) and recording every request, so a
                  test can assert that no Authorization header reached it.

The proxy forwards ``Host`` unchanged and sets ``X-Forwarded-Proto``, so the
registry builds upload ``Location`` URLs that point back at the proxy.
Everything is bounded: socket timeouts, capped stalls, a cap on concurrent
upstream requests, and request bodies held in memory (tests move megabytes).
"""

from __future__ import annotations

import http.client
import re
import secrets
import socket
import ssl
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from . import LoopbackServer, QuietHandler

__all__ = ["CDN", "Fault", "FaultProxy", "SeenRequest"]

FaultKind = Literal["truncate", "reset", "status", "stall", "ignore_range", "redirect"]

MAX_STALL = 30.0
UPSTREAM_TIMEOUT = 30.0
MAX_CONCURRENT_UPSTREAM = 64
_CHUNK = 64 * 1024
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_ANY = "GET|HEAD|POST|PUT|PATCH|DELETE"
_UNAVAILABLE = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault","detail":null}]}'


@dataclass(frozen=True)
class SeenRequest:
    """A request as the proxy or the CDN received it."""

    method: str
    target: str
    headers: Mapping[str, str]
    fault: FaultKind | None = None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Fault:
    """One programmed fault; see the module docstring for the kinds.

    ``method`` and ``path`` are regular expressions: ``method`` must match the
    whole method, ``path`` is searched in the request path (query excluded).
    """

    kind: FaultKind
    path: str = ""
    method: str = _ANY
    times: int | None = 1
    after_bytes: int | None = 0
    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = _UNAVAILABLE
    seconds: float = 0.0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.seconds > MAX_STALL:
            raise ValueError(f"stall of {self.seconds}s exceeds MAX_STALL={MAX_STALL}s")
        self._method = re.compile(self.method)
        self._path = re.compile(self.path)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, path: str) -> bool:
        return (
            not self.exhausted
            and self._method.fullmatch(method) is not None
            and self._path.search(path) is not None
        )


class FaultProxy:
    """Reverse proxy to ``upstream`` (``host:port``) with programmable faults.

    Use ``start()``/``stop()`` or a ``with`` block. ``url``/``host_port`` are
    what clients should talk to instead of the upstream.
    """

    def __init__(
        self,
        upstream: str,
        *,
        upstream_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream = upstream
        self.upstream_tls = upstream_tls
        self.cdn = CDN()
        self._faults: list[Fault] = []
        self._seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_UPSTREAM)
        self._server = LoopbackServer(_ProxyHandler, self)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self.cdn.start()
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases stalled handlers
        self._server.stop()
        self.cdn.stop()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host_port(self) -> str:
        return self._server.host_port

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    # -- programming -------------------------------------------------------------------
    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove all faults and forget seen requests (the CDN's too)."""
        with self._lock:
            self._faults.clear()
            self._seen.clear()
        self.cdn.clear()

    # Shorthands. ``method`` defaults to any method (GET|HEAD for redirects);
    # ``times=None`` keeps a fault firing forever.
    def truncate(
        self, path: str, after_bytes: int, *, method: str = _ANY, times: int | None = 1
    ) -> Fault:
        return self.add(Fault("truncate", path, method, times, after_bytes=after_bytes))

    def reset(
        self,
        path: str,
        after_bytes: int | None = None,
        *,
        method: str = _ANY,
        times: int | None = 1,
    ) -> Fault:
        return self.add(Fault("reset", path, method, times, after_bytes=after_bytes))

    def fail(
        self,
        path: str,
        status: int = 503,
        *,
        method: str = _ANY,
        times: int | None = 1,
        headers: Mapping[str, str] | None = None,
        body: bytes = _UNAVAILABLE,
    ) -> Fault:
        return self.add(
            Fault("status", path, method, times, status=status, headers=headers or {}, body=body)
        )

    def fail_sequence(self, path: str, statuses: list[int], *, method: str = _ANY) -> list[Fault]:
        """One one-shot status fault per entry: e.g. ``[500, 503]``, then pass-through."""
        return [self.fail(path, status, method=method, times=1) for status in statuses]

    def too_many_requests(
        self, path: str, retry_after: str = "1", *, method: str = _ANY, times: int | None = 1
    ) -> Fault:
        return self.fail(
            path,
            429,
            method=method,
            times=times,
            headers={"Retry-After": retry_after},
            body=b'{"errors":[{"code":"TOOMANYREQUESTS","message":"injected 429"}]}',
        )

    def stall(
        self,
        path: str,
        seconds: float,
        after_bytes: int = 0,
        *,
        method: str = _ANY,
        times: int | None = 1,
    ) -> Fault:
        return self.add(
            Fault("stall", path, method, times, after_bytes=after_bytes, seconds=seconds)
        )

    def ignore_range(self, path: str, *, method: str = "GET", times: int | None = 1) -> Fault:
        return self.add(Fault("ignore_range", path, method, times))

    def redirect_to_cdn(
        self,
        path: str = r"/blobs/sha256:",
        status: int = 307,
        *,
        method: str = "GET",
        times: int | None = None,
    ) -> Fault:
        return self.add(Fault("redirect", path, method, times, status=status))

    # -- observation -------------------------------------------------------------------
    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    @property
    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    # -- internals used by the handler -------------------------------------------------
    def _take(self, method: str, target: str, headers: Mapping[str, str]) -> Fault | None:
        path = urlsplit(target).path
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, path)), None)
            if fault is not None:
                fault.hits += 1
            self._seen.append(
                SeenRequest(method, target, dict(headers), fault.kind if fault else None)
            )
        return fault

    def _connect(self) -> http.client.HTTPConnection:
        host, _, port = self.upstream.rpartition(":")
        if self.upstream_tls is not None:
            return http.client.HTTPSConnection(
                host, int(port), timeout=UPSTREAM_TIMEOUT, context=self.upstream_tls
            )
        return http.client.HTTPConnection(host, int(port), timeout=UPSTREAM_TIMEOUT)


class _ProxyHandler(QuietHandler):
    def _dispatch(self) -> None:
        proxy: FaultProxy = self.app
        body = self._read_body()
        fault = proxy._take(self.command, self.path, dict(self.headers.items()))
        if fault is not None and fault.kind == "reset" and fault.after_bytes is None:
            return self._reset()
        if fault is not None and fault.kind == "status":
            return self._send_fixed(fault.status, fault.headers, fault.body)
        if fault is not None and fault.kind == "stall" and not fault.after_bytes:
            proxy._stopping.wait(fault.seconds)
        if fault is not None and fault.kind == "redirect":
            return self._redirect(fault, body)
        drop = (
            {"range", "if-range"} if fault is not None and fault.kind == "ignore_range" else set()
        )
        with proxy._slots:
            self._forward(body, fault, drop)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    # -- request side ------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _upstream_headers(self, drop: set[str]) -> dict[str, str]:
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() not in drop
        }
        # Keep the client's Host so the registry's Location URLs point back here; say
        # the client spoke plain HTTP even when the upstream is TLS.
        headers.setdefault("Host", self.server.host_port)
        headers["X-Forwarded-Proto"] = "http"
        return headers

    # -- response side -----------------------------------------------------------------
    def _forward(self, body: bytes, fault: Fault | None, drop: set[str]) -> None:
        proxy: FaultProxy = self.app
        conn = proxy._connect()
        try:
            try:
                conn.request(
                    self.command, self.path, body=body, headers=self._upstream_headers(drop)
                )
                resp = conn.getresponse()
            except OSError as exc:
                return self._send_fixed(502, {}, f"upstream: {exc}".encode())
            self._relay(resp, fault)
        finally:
            conn.close()

    def _relay(self, resp: http.client.HTTPResponse, fault: Fault | None) -> None:
        proxy: FaultProxy = self.app
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        prefetched: bytes | None = None
        if length is None and not no_body:
            prefetched = resp.read()  # chunked or close-delimited: size it ourselves
            length = str(len(prefetched))
        self.send_response_only(resp.status, resp.reason)
        for key, value in headers:
            self.send_header(key, value)
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if no_body:
            return
        # Bytes still to send before the fault acts (None: no body fault).
        limit = None
        if fault is not None and fault.kind in ("truncate", "reset"):
            limit = fault.after_bytes or 0
        elif fault is not None and fault.kind == "stall" and fault.after_bytes:
            limit = fault.after_bytes
        first = prefetched
        while True:
            if first is not None:
                chunk, first = first, None
            else:
                chunk = resp.read(_CHUNK)
            eof = not chunk
            if limit is not None and (eof or len(chunk) >= limit):
                assert fault is not None
                self.wfile.write(chunk[:limit])
                chunk, limit = chunk[limit:], None
                if fault.kind == "truncate":
                    self.close_connection = True
                    return
                if fault.kind == "reset":
                    return self._reset()
                proxy._stopping.wait(fault.seconds)  # stall mid-body, then the rest
            if eof:
                return
            if chunk:
                self.wfile.write(chunk)
                if limit is not None:
                    limit -= len(chunk)

    def _send_fixed(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response_only(status)
        has_type = any(k.lower() == "content-type" for k in headers)
        if not has_type:
            self.send_header("Content-Type", "application/json")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close with SO_LINGER 0 so the peer gets a TCP RST, not a FIN."""
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference so close() really closes the fd
        sock.close()
        self.close_connection = True

    def _redirect(self, fault: Fault, body: bytes) -> None:
        proxy: FaultProxy = self.app
        conn = proxy._connect()
        try:
            headers = self._upstream_headers({"range", "if-range"})
            conn.request("GET", self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                return self._relay(resp, None)
            data = resp.read()
            media_type = resp.getheader("Content-Type") or "application/octet-stream"
        finally:
            conn.close()
        location = proxy.cdn.publish(data, media_type, urlsplit(self.path).path)
        self._send_fixed(fault.status, {"Location": location}, b"")


class CDN:
    """A second loopback host serving parked blobs; records what it was sent."""

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, str]] = {}
        self._seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(_CDNHandler, self)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def host_port(self) -> str:
        return self._server.host_port

    def publish(self, data: bytes, media_type: str, origin_path: str) -> str:
        """Park ``data`` and return the URL that serves it (a fresh one each time)."""
        key = secrets.token_hex(8)
        with self._lock:
            self._blobs[key] = (data, media_type)
        name = origin_path.rstrip("/").rsplit("/", 1)[-1]
        return f"{self.url}/cdn/{key}/{name}?expires=never&signature={key}"

    @property
    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    @property
    def saw_authorization(self) -> bool:
        """True if any request that reached the CDN carried an Authorization header."""
        return any(r.header("Authorization") is not None for r in self.requests)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _CDNHandler(QuietHandler):
    def _serve(self) -> None:
        cdn: CDN = self.app
        with cdn._lock:
            cdn._seen.append(SeenRequest(self.command, self.path, dict(self.headers.items())))
        parts = urlsplit(self.path).path.split("/")
        key = parts[2] if len(parts) > 2 and parts[1] == "cdn" else ""
        with cdn._lock:
            entry = cdn._blobs.get(key)
        if entry is None:
            return self._reply(404, "text/plain", b"no such object", {})
        data, media_type = entry
        status, extra = 200, {"Accept-Ranges": "bytes"}
        m = _RANGE.fullmatch(self.headers.get("Range") or "")
        if m is not None and (m[1] or m[2]):
            if m[1]:
                start = int(m[1])
                end = min(int(m[2]), len(data) - 1) if m[2] else len(data) - 1
            else:  # suffix range: the last N bytes
                start, end = max(0, len(data) - int(m[2])), len(data) - 1
            if start >= len(data) or start > end:
                extra["Content-Range"] = f"bytes */{len(data)}"
                return self._reply(416, media_type, b"", extra)
            extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._reply(status, media_type, data, extra)

    do_GET = do_HEAD = _serve

    def _reply(self, status: int, media_type: str, data: bytes, headers: Mapping[str, str]) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

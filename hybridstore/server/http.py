"""A read-only OCI distribution endpoint over layouts: air-gapped sites and the demo.

It serves ``/v2/``, manifests by tag and digest, blobs (one ``Range`` per
request: 206/416), tag listing with ``n``/``last`` pagination, ``/v2/_catalog``
and the referrers API (with the ``artifactType`` filter); every error carries
an OCI error body, and every write method gets 405 ``UNSUPPORTED``. It is a
convenience, not a registry product: for anything shared, push into a real
registry (distribution, Harbor, zot).

Why the standard library (``http.server.ThreadingHTTPServer``) and not a web
framework: the endpoint is a dozen read-only routes whose bodies are files; a
thread per connection with HTTP/1.1 keep-alive serves skopeo, containerd and
helm pulls concurrently, ``socket.sendfile`` streams blobs without copying
through Python (and falls back to ``send`` under TLS), and ``ssl`` gives HTTPS,
all without adding a dependency to a tool whose job is the client side.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

from hybridstore.errors import HybridstoreError, InvalidDigestError, InvalidInputError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.server.catalog import Catalog, Repository
from hybridstore.store.layout import OCILayout

__all__ = ["RegistryServer", "parse_listen"]

log = logging.getLogger(__name__)

_MAX_DRAINED_BODY: Final = 1 << 20
_API_VERSION: Final = ("Docker-Distribution-API-Version", "registry/2.0")
_READ_ONLY: Final = "this registry is read-only (hybridstore serve); push to a real registry"
_MANIFEST_PATH: Final = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)")
_BLOB_PATH: Final = re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)")
_TAGS_PATH: Final = re.compile(r"/v2/(?P<name>.+)/tags/list")
_REFERRERS_PATH: Final = re.compile(r"/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)")
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)


class _HTTPError(Exception):
    """An OCI error response: status, error code, message."""

    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(first, last)`` byte of a single ``Range``; ``None`` to send the whole blob."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None or not (m.group(1) or m.group(2)):
        return None  # several ranges, or not bytes: RFC 9110 lets us ignore it
    unsatisfiable = _HTTPError(
        416,
        "SIZE_INVALID",
        f"range {header.strip()!r} is not satisfiable for a blob of {size} bytes",
        **{"Content-Range": f"bytes */{size}"},
    )
    if m.group(1):
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else size - 1
        if first >= size or last < first:
            raise unsatisfiable
        return first, min(last, size - 1)
    suffix = int(m.group(2))
    if suffix == 0 or size == 0:
        raise unsatisfiable
    return max(0, size - suffix), size - 1


def _page(items: list[str], query: dict[str, list[str]]) -> tuple[list[str], bool]:
    """``n``/``last`` pagination over sorted ``items``; also says whether more follow."""
    last = query.get("last", [""])[0]
    if last:
        items = [i for i in items if i > last]
    raw_n = query.get("n", [None])[0]
    if raw_n is None:
        return items, False
    if not raw_n.isdigit():
        raise _HTTPError(400, "PAGINATION_NUMBER_INVALID", f"n={raw_n!r} is not a number")
    n = int(raw_n)
    return items[:n], len(items) > n > 0


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "hybridstore-serve"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    timeout = 300  # seconds an idle keep-alive connection is kept

    # -- plumbing ---------------------------------------------------------------------------

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _headers(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header(*_API_VERSION)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _json(self, status: int, obj: Any, head: bool, **headers: str) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(body))
        self._headers(status, headers)
        if not head:
            self.wfile.write(body)

    def _error(self, err: _HTTPError, head: bool) -> None:
        body = {"errors": [{"code": err.code, "message": err.message}]}
        self._json(err.status, body, head, **err.headers)

    def _dispatch(self, head: bool) -> None:
        try:
            self._route(head)
        except _HTTPError as e:
            self._error(e, head)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:  # one bad request must not take the server down
            log.exception("%s %s failed", self.command, self.path)
            self._error(_HTTPError(500, "UNKNOWN", f"internal error: {e}"), head)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def _refuse_write(self) -> None:
        # Read a small body so that closing with unread data does not reset the connection
        # before the client sees the 405; anything else ends the connection after the reply.
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= _MAX_DRAINED_BODY:
            self.rfile.read(int(length))
        elif length != "0" and (length or self.headers.get("Transfer-Encoding")):
            self.close_connection = True
        err = _HTTPError(405, "UNSUPPORTED", _READ_ONLY, Allow="GET, HEAD")
        self._error(err, head=False)

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write  # noqa: N815

    # -- routes -----------------------------------------------------------------------------

    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        if path in ("/v2", "/v2/"):
            self._json(200, {}, head)
            return
        repos = self.server.catalog.repositories()
        if path == "/v2/_catalog":
            names, more = _page(sorted(repos), query)
            extra = self._next_link("/v2/_catalog", query, names) if more else {}
            self._json(200, {"repositories": names}, head, **extra)
            return
        for pattern, handler in (
            (_MANIFEST_PATH, self._manifest),
            (_BLOB_PATH, self._blob),
            (_TAGS_PATH, self._tags),
            (_REFERRERS_PATH, self._referrers),
        ):
            m = pattern.fullmatch(path)
            if m is not None:
                name = m.group("name")
                repo = repos.get(name)
                if repo is None:
                    raise _HTTPError(404, "NAME_UNKNOWN", f"repository {name!r} is not served here")
                handler(repo, m, query, head)
                return
        raise _HTTPError(404, "NOT_FOUND", f"no such endpoint: {path}")

    def _next_link(self, path: str, query: dict[str, list[str]], page: list[str]) -> dict[str, str]:
        params = urlencode({"n": query["n"][0], "last": page[-1]})
        return {"Link": f'<{path}?{params}>; rel="next"'}

    def _manifest(
        self, repo: Repository, m: re.Match[str], query: dict[str, list[str]], head: bool
    ) -> None:
        reference = m.group("ref")
        if ":" in reference:
            digest = _digest(reference)
            found = repo.content.get(digest)
            if found is None or not (
                mt.is_manifest(found[1].media_type) or mt.is_index(found[1].media_type)
            ):
                raise _HTTPError(404, "MANIFEST_UNKNOWN", f"{repo.name}@{reference} is not here")
        else:
            tagged = repo.tags.get(reference)
            found = repo.content.get(tagged.digest) if tagged is not None else None
            if found is None:
                raise _HTTPError(404, "MANIFEST_UNKNOWN", f"{repo.name}:{reference} is not here")
        layout, desc = found
        self._send_blob(layout, desc, desc.media_type, head, ranged=False)

    def _blob(
        self, repo: Repository, m: re.Match[str], query: dict[str, list[str]], head: bool
    ) -> None:
        digest = _digest(m.group("digest"))
        found = repo.content.get(digest)
        if found is None:
            raise _HTTPError(404, "BLOB_UNKNOWN", f"blob {digest} is not in {repo.name}")
        layout, desc = found
        self._send_blob(layout, desc, "application/octet-stream", head, ranged=True)

    def _send_blob(
        self, layout: OCILayout, desc: Descriptor, media_type: str, head: bool, *, ranged: bool
    ) -> None:
        first, last = 0, desc.size - 1
        headers = {"Content-Type": media_type, "Docker-Content-Digest": str(desc.digest)}
        status = 200
        if ranged:
            headers["Accept-Ranges"] = "bytes"
            wanted = _byte_range(self.headers.get("Range"), desc.size)
            if wanted is not None:
                first, last = wanted
                status = 206
                headers["Content-Range"] = f"bytes {first}-{last}/{desc.size}"
        length = last - first + 1
        headers["Content-Length"] = str(length)
        try:
            stream = layout.fetch(desc)
        except HybridstoreError as e:
            log.warning("cannot serve %s from %s: %s", desc.digest, layout.root, e)
            code = "BLOB_UNKNOWN" if ranged else "MANIFEST_UNKNOWN"
            raise _HTTPError(404, code, f"{desc.digest} is not readable here") from None
        with stream as f:
            self._headers(status, headers)
            if head or length == 0:
                return
            self.wfile.flush()
            sent = self.connection.sendfile(f, first, length)
            if sent != length:  # the file shrank under us: the client sees a short body
                self.close_connection = True

    def _tags(
        self, repo: Repository, m: re.Match[str], query: dict[str, list[str]], head: bool
    ) -> None:
        tags, more = _page(sorted(repo.tags), query)
        path = f"/v2/{repo.name}/tags/list"
        extra = self._next_link(path, query, tags) if more else {}
        self._json(200, {"name": repo.name, "tags": tags}, head, **extra)

    def _referrers(
        self, repo: Repository, m: re.Match[str], query: dict[str, list[str]], head: bool
    ) -> None:
        subject = _digest(m.group("digest"))
        found = sorted(repo.referrers.get(subject, {}).values(), key=lambda d: str(d.digest))
        headers = {"Content-Type": mt.OCI_INDEX}
        wanted = query.get("artifactType")
        if wanted:
            found = [d for d in found if d.artifact_type in wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [d.to_json() for d in found],
        }
        self._json(200, body, head, **headers)


def _digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except InvalidDigestError as e:
        raise _HTTPError(400, "DIGEST_INVALID", str(e)) from None


# --- the server ----------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client never blocks shutdown
    request_queue_size = 128  # many clients connecting at once (a CI fleet, containerd)
    catalog: Catalog
    tls: ssl.SSLContext | None = None

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS query); we need none.
        super(ThreadingHTTPServer, self).server_bind()  # socketserver.TCPServer.server_bind
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread, so a slow TLS handshake stalls only it.
        if self.tls is not None:
            try:
                request.settimeout(_Handler.timeout)  # a client that never says hello
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake with %s failed: %s", client_address, e)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT`` (host defaults to 127.0.0.1)."""
    host, port = "127.0.0.1", text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise InvalidInputError(f"--listen {text!r}: use [ADDRESS]:PORT for IPv6")
        host, port = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, _, port = text.rpartition(":")
        host = host or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise InvalidInputError(f"--listen {text!r}: the port must be a number 0-65535")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RegistryServer:
    """Serve ``layouts`` read-only at ``host:port`` (port 0 picks a free one).

    ``start()`` serves from a background thread, ``stop()`` ends it; also a
    context manager. With ``tls_cert`` (and ``tls_key`` unless the certificate
    file holds it) it speaks HTTPS.
    """

    def __init__(
        self,
        layouts: Sequence[OCILayout | str | os.PathLike[str]],
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> None:
        opened = [x if isinstance(x, OCILayout) else OCILayout.open(x) for x in layouts]
        self.catalog = Catalog(opened)
        self.catalog.repositories()  # report broken layouts and collisions at start
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        try:
            self.httpd = cls((host, port), _Handler)
        except OSError as e:
            raise InvalidInputError(
                f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --listen "
                "address or port (port 0 picks a free one)"
            ) from e
        self.httpd.catalog = self.catalog
        if tls_cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(tls_cert, tls_key)
            except (OSError, ssl.SSLError) as e:
                self.httpd.server_close()
                raise InvalidInputError(f"cannot load the TLS certificate/key: {e}") from e
            self.httpd.tls = ctx
        elif not _is_loopback(host):
            log.warning(
                "serving plain HTTP on %s: anyone who can reach it can read these layouts; "
                "use --tls-cert/--tls-key or a loopback address",
                host,
            )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_name, self.httpd.server_port
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.httpd.tls is not None else "http"
        return f"{scheme}://{shown}:{port}"

    @property
    def host_port(self) -> str:
        return self.url.split("://", 1)[1]

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> RegistryServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name="hybridstore-serve", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the listening socket; in-flight responses are abandoned."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def repositories(self) -> Iterator[Repository]:
        yield from (r for _, r in sorted(self.catalog.repositories().items()))

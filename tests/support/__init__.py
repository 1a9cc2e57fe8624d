"""Test infrastructure: real peers (registry, token server) and deterministic OCI content.

Modules:
    registry     run the CNCF distribution registry (``docker-registry``) per test or session;
                 variants: plain, htpasswd basic auth, token auth, TLS, pull-through, read-only
    tokenserver  a distribution-style bearer token server (ES256 JWTs, ``x5c`` from a test CA)
    faultproxy   a reverse proxy that injects faults (truncation, resets, 5xx, 429, stalls,
                 ignored Range, redirects to a "CDN") in front of a real registry
    oci_builder  build OCI layouts deterministically and push them into a registry
    tls          a throwaway CA issuing TLS and token-signing certificates

Typical use (fixtures from ``tests/conftest.py``)::

    def test_pull(registry, oci_builder, repo_name, tmp_cache):
        b = oci_builder()                       # LayoutBuilder in tmp_path/layout, seed 0
        image = b.image("v1", layers=3)         # BuiltImage: digests, sizes, bytes
        push_layout(b.path, "v1", registry, f"{repo_name}:v1")   # skopeo, digests kept
        mark = registry.access_log_mark()
        ...  # run hybridstore against registry.ref(repo_name, "v1")
        assert registry.count_requests("GET", r".*/blobs/sha256:.*", mark) == 3

    def test_auth(registry_factory):
        reg = registry_factory(auth="token", tls=True)   # token server + CA wired up
        reg.credentials, reg.ca_path, reg.token_server.requests

    def test_flaky_network(fault_proxy):        # in front of the session registry
        fault_proxy.truncate("/blobs/", after_bytes=1000)
        ... point the client at fault_proxy.url ...

This package itself holds only what several of those modules share: free
ports, the threaded loopback HTTP server they all run, and skipping when a
peer binary is missing.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["LoopbackServer", "QuietHandler", "free_port", "require_binary"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(name: str) -> str:
    """Return the path of ``name`` on PATH, or skip the calling test with a reason."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (needed for this test)")
    return path


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler that keeps stderr clean; ``self.app`` is the owning object."""

    protocol_version = "HTTP/1.1"
    # The server is the typed subclass below; handlers reach their owner through it.
    server: LoopbackServer

    @property
    def app(self) -> Any:
        return self.server.app

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP(S) server on 127.0.0.1 with a free port, run in a daemon thread.

    ``app`` is the object whose state the handlers use (token server, proxy, CDN).
    TLS handshakes run in the per-connection thread, so one stuck client cannot
    block ``accept``.
    """

    daemon_threads = True
    allow_reuse_address = True
    # Connections blocked longer than this give up instead of pinning a thread forever.
    request_timeout = 30.0

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        app: Any,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.app = app
        self.scheme = "https" if ssl_context is not None else "http"
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_port}"

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.settimeout(self.request_timeout)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Peers hanging up (resets, TLS refusals, client timeouts) are normal in fault
        # tests; anything else is a bug in the test server and is shown.
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self.app).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

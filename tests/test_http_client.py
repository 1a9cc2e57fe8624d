"""The registry HTTP client (``remote/http.py`` over requests) and blob read-ahead against
real loopback servers: connection reuse, dead keep-alive connections, header folding,
errors, TLS trust, and proxies from the environment (a forward proxy and a CONNECT tunnel)."""

from __future__ import annotations

import base64
import json
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import LoopbackServer, QuietHandler, free_port
from support.tls import CertificateAuthority

from hybridstore.errors import RegistryError
from hybridstore.remote.http import HTTPClient, Response, TLSError, TransportError, parse_link
from hybridstore.remote.readahead import read_ahead

BIG = 1 << 20


def body(resp: Response) -> bytes:
    """The whole (small) body."""
    out = b""
    while chunk := resp.read(BIG):
        out += chunk
    return out


class Recorder:
    """What a scripted server saw: the client port of each request, and request lines."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.lines: list[str] = []
        self.proxy_auth: list[str | None] = []
        self.close_after_reply = False


class ScriptedHandler(QuietHandler):
    def do_HEAD(self) -> None:
        app: Recorder = self.app
        app.ports.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()

    def do_GET(self) -> None:
        app: Recorder = self.app
        app.ports.append(self.client_address[1])
        app.lines.append(self.requestline)
        app.proxy_auth.append(self.headers.get("Proxy-Authorization"))
        if self.path.endswith("/big"):
            body = b"x" * BIG
        elif self.path.endswith("/error"):
            body = b'{"errors":[{"code":"DENIED","message":"no"}]}'
        else:
            body = b"ok"
        self.send_response(403 if self.path.endswith("/error") else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("WWW-Authenticate", 'Bearer realm="a"')
        self.send_header("www-authenticate", 'Basic realm="b"')
        self.send_header("Link", '</v2/x/tags/list?last=b&n=2>; rel="next"')
        self.end_headers()
        self.wfile.write(body)
        if app.close_after_reply:  # hang up without saying "Connection: close"
            self.close_connection = True


@contextmanager
def running(
    handler: type[ScriptedHandler], ssl_context: ssl.SSLContext | None = None
) -> Iterator[tuple[LoopbackServer, Recorder]]:
    app = Recorder()
    srv = LoopbackServer(handler, app, ssl_context=ssl_context)
    srv.start()
    try:
        yield srv, app
    finally:
        srv.shutdown()
        srv.server_close()


def tls_context(tmp_path: Path, ca: CertificateAuthority) -> ssl.SSLContext:
    cert, key = ca.issue_server().write(tmp_path, "server")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


@pytest.fixture
def server() -> Iterator[tuple[LoopbackServer, Recorder]]:
    with running(ScriptedHandler) as pair:
        yield pair


def test_keep_alive_reuses_one_connection(server: tuple[LoopbackServer, Recorder]) -> None:
    srv, app = server
    with HTTPClient() as client:
        for _ in range(5):
            with client.request("GET", f"{srv.url}/v2/") as resp:
                assert resp.status_code == 200 and body(resp) == b"ok"
            with client.request("HEAD", f"{srv.url}/v2/") as resp:  # no body to read
                assert resp.status_code == 200
    assert len(app.ports) == 10 and len(set(app.ports)) == 1


def test_unread_big_body_drops_the_connection_small_one_is_kept(
    server: tuple[LoopbackServer, Recorder],
) -> None:
    srv, app = server
    with HTTPClient() as client:
        client.request("GET", f"{srv.url}/v2/big").close()  # 1 MiB unread: not worth draining
        client.request("GET", f"{srv.url}/v2/").close()
        err = client.request("GET", f"{srv.url}/v2/error")
        err.close()  # a small unread body is drained, and still readable afterwards
        assert err.status_code == 403
        assert json.loads(err.error_body())["errors"][0]["code"] == "DENIED"
        client.request("GET", f"{srv.url}/v2/").close()
    assert app.ports[0] != app.ports[1]
    assert app.ports[1] == app.ports[2] == app.ports[3]


def test_a_connection_the_server_dropped_is_replaced(
    server: tuple[LoopbackServer, Recorder],
) -> None:
    srv, app = server
    app.close_after_reply = True
    with HTTPClient() as client:
        for _ in range(3):
            with client.request("GET", f"{srv.url}/v2/") as resp:
                assert body(resp) == b"ok"
    assert len(set(app.ports)) == 3


def test_headers_are_case_insensitive_and_repeats_joined(
    server: tuple[LoopbackServer, Recorder],
) -> None:
    srv, _ = server
    with HTTPClient() as client, client.request("GET", f"{srv.url}/v2/") as resp:
        assert resp.headers["WWW-AUTHENTICATE"] == 'Bearer realm="a", Basic realm="b"'
        assert resp.link("next") == "/v2/x/tags/list?last=b&n=2"
        assert resp.request_headers["User-Agent"].startswith("hybridstore/")


@pytest.mark.parametrize(
    ("value", "rel", "target"),
    [
        ('</a?n=1>; rel="next"', "next", "/a?n=1"),
        ('<https://x/p>; rel="prev", </q>; rel=next', "next", "/q"),
        ('</q>; rel="first next"', "next", "/q"),
        ('</q>; rel="prev"', "next", None),
        ("garbage", "next", None),
        ("", "next", None),
    ],
)
def test_parse_link(value: str, rel: str, target: str | None) -> None:
    assert parse_link(value, rel) == target


def test_refused_connection_is_a_transport_error() -> None:
    port = free_port()
    with HTTPClient() as client, pytest.raises(TransportError, match="refused"):
        client.request("GET", f"http://127.0.0.1:{port}/v2/", timeout=5)


def test_tls_trust(tmp_path: Path, test_ca: CertificateAuthority) -> None:
    ca = test_ca.write_cert(tmp_path / "ca.pem")
    with running(ScriptedHandler, tls_context(tmp_path, test_ca)) as (srv, _):
        with HTTPClient() as client, pytest.raises(TLSError, match="certificate"):
            client.request("GET", f"{srv.url}/v2/", timeout=10)
        with HTTPClient(verify=str(ca)) as client:
            with client.request("GET", f"{srv.url}/v2/", timeout=10) as resp:
                assert body(resp) == b"ok"
        with HTTPClient(verify=False) as client:
            with client.request("GET", f"{srv.url}/v2/", timeout=10) as resp:
                assert body(resp) == b"ok"


# -- proxies ----------------------------------------------------------------------------


class TunnelHandler(ScriptedHandler):
    """A forward proxy: plain requests are answered by ScriptedHandler (recording the
    absolute request line); CONNECT opens a byte pipe to the target."""

    def do_CONNECT(self) -> None:
        app: Recorder = self.app
        app.lines.append(self.requestline)
        app.proxy_auth.append(self.headers.get("Proxy-Authorization"))
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        ends = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(ends, [], [], 10)
                if not readable:
                    return
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()
            self.close_connection = True


@pytest.fixture
def proxy() -> Iterator[tuple[LoopbackServer, Recorder]]:
    with running(TunnelHandler) as pair:
        yield pair


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_http_proxy_from_the_environment(
    proxy: tuple[LoopbackServer, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, app = proxy
    monkeypatch.setenv("HTTP_PROXY", f"http://alice:s%40cret@{srv.host_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with HTTPClient() as client:
        with client.request("GET", "http://registry.invalid:5000/v2/", timeout=10) as resp:
            assert body(resp) == b"ok"
        assert app.lines == ["GET http://registry.invalid:5000/v2/ HTTP/1.1"]
        assert app.proxy_auth == [_basic("alice", "s@cret")]
        monkeypatch.setenv("NO_PROXY", "registry.invalid")
        with pytest.raises(TransportError, match="resolve"):  # straight to the bogus host
            client.request("GET", "http://registry.invalid:5000/v2/", timeout=10)
    assert len(app.lines) == 1


def test_https_through_a_connect_tunnel(
    proxy: tuple[LoopbackServer, Recorder],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    test_ca: CertificateAuthority,
) -> None:
    proxy_srv, proxy_app = proxy
    ca = test_ca.write_cert(tmp_path / "ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", f"http://bob:pw@{proxy_srv.host_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with running(ScriptedHandler, tls_context(tmp_path, test_ca)) as (target, target_app):
        with HTTPClient(verify=str(ca)) as client:
            for _ in range(2):
                with client.request("GET", f"{target.url}/v2/") as resp:
                    assert body(resp) == b"ok"
    assert len(proxy_app.lines) == 1  # one tunnel, reused
    assert proxy_app.lines[0].startswith(f"CONNECT {target.host_port} HTTP/1.")
    assert proxy_app.proxy_auth == [_basic("bob", "pw")]
    assert target_app.lines == ["GET /v2/ HTTP/1.1"] * 2
    assert target_app.proxy_auth == [None, None]  # proxy credentials stay with the proxy


# -- read-ahead -------------------------------------------------------------------------


def test_read_ahead_keeps_order_and_raises_where_the_source_failed() -> None:
    def source() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise TransportError("reset")

    got: list[bytes] = []
    with pytest.raises(TransportError, match="reset"):
        for chunk in read_ahead(source(), depth=1):
            got.append(chunk)
    assert got == [b"a", b"b"]


def test_closing_read_ahead_stops_and_closes_the_source() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def source() -> Iterator[bytes]:
        try:
            for i in range(1000):
                produced.append(i)
                yield b"x"
        finally:
            closed.set()

    stream = read_ahead(source(), depth=2)
    assert next(stream) == b"x"
    stream.close()  # type: ignore[attr-defined]
    assert closed.wait(timeout=30)
    assert len(produced) < 10  # stopped within the queue's depth, not read to the end


def test_a_url_with_control_characters_is_refused_not_retried(
    server: tuple[LoopbackServer, Recorder],
) -> None:
    srv, app = server
    with HTTPClient() as client, pytest.raises(RegistryError, match="invalid URL"):
        client.request("GET", f"{srv.url}/v2/a b/tags/list")  # e.g. from a hostile Location
    assert app.lines == []


def test_no_proxy_takes_cidr_and_port_entries(
    proxy: tuple[LoopbackServer, Recorder],
    server: tuple[LoopbackServer, Recorder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy_srv, proxy_app = proxy
    srv, app = server
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy_srv.host_port}")
    with HTTPClient() as client:
        monkeypatch.setenv("NO_PROXY", "10.0.0.0/8,127.0.0.0/8")  # CIDR covers the server
        with client.request("GET", f"{srv.url}/v2/", timeout=10) as resp:
            assert body(resp) == b"ok"
        assert proxy_app.lines == [] and app.lines == ["GET /v2/ HTTP/1.1"]
        monkeypatch.setenv("NO_PROXY", "registry.invalid:5001")  # another port: proxied
        with client.request("GET", "http://registry.invalid:5000/v2/", timeout=10) as resp:
            assert body(resp) == b"ok"
        assert proxy_app.lines == ["GET http://registry.invalid:5000/v2/ HTTP/1.1"]
        monkeypatch.setenv("NO_PROXY", "registry.invalid:5000")  # this port: direct
        with pytest.raises(TransportError, match="resolve"):
            client.request("GET", "http://registry.invalid:5000/v2/", timeout=10)
    assert len(proxy_app.lines) == 1


def test_an_https_proxy_gets_tls_before_the_connect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, test_ca: CertificateAuthority
) -> None:
    """``HTTPS_PROXY=https://...``: TLS to the proxy (trusted through the system store,
    here SSL_CERT_FILE), then CONNECT and TLS to the registry inside it."""
    ca = test_ca.write_cert(tmp_path / "ca.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with (
        running(TunnelHandler, tls_context(tmp_path, test_ca)) as (proxy_srv, proxy_app),
        running(ScriptedHandler, tls_context(tmp_path, test_ca)) as (target, target_app),
    ):
        monkeypatch.setenv("HTTPS_PROXY", f"https://{proxy_srv.host_port}")
        with HTTPClient() as client, client.request("GET", f"{target.url}/v2/") as resp:
            assert body(resp) == b"ok"
    assert len(proxy_app.lines) == 1 and proxy_app.lines[0].startswith("CONNECT ")
    assert target_app.lines == ["GET /v2/ HTTP/1.1"]

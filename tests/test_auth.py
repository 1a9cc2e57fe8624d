"""Registry authentication: challenge parsing, realm policy, tokens, basic auth, login.

Integration tests run against the real CNCF distribution registry (htpasswd
basic auth; token auth with the test token server; TLS). A few protocol corners
that distribution cannot produce (token redirects, huge token bodies, GET-less
token endpoints, hostile 401s from another host) use tiny scripted loopback
HTTP servers: real peers over real sockets, not mocks of requests.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import LoopbackServer, QuietHandler, free_port
from support.registry import (
    BasicAuth,
    Registry,
    RegistryConfig,
    RegistryFactory,
    TLSFiles,
    TokenAuth,
)
from support.tls import CertificateAuthority
from support.tokenserver import TokenServer, TokenServerConfig

from hybridstore.errors import AuthError, RegistryError
from hybridstore.remote.auth import (
    Authenticator,
    Challenge,
    check_login,
    check_realm,
    is_local_host,
    merge_scopes,
    parse_challenges,
    redact_headers,
    repository_scope,
)
from hybridstore.remote.credentials import Credential
from hybridstore.remote.http import HTTPClient, Response

ALICE_PW = "alice-Pw-7d1f!x:secret"  # a colon inside on purpose
BOB_PW = "bob-Pw-0a9e"
USERS = {"alice": ALICE_PW, "bob": BOB_PW}

# -- WWW-Authenticate parsing -----------------------------------------------------------


def ch(scheme: str, token68: str | None = None, **params: str) -> Challenge:
    return Challenge(scheme, params, token68)


def as_tuples(challenges: list[Challenge]) -> list[tuple[str, dict[str, str], str | None]]:
    return [(c.scheme, dict(c.params), c.token68) for c in challenges]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.example/token",service="registry.example",'
            'scope="repository:a/b:pull,push"',
            [
                ch(
                    "bearer",
                    realm="https://auth.example/token",
                    service="registry.example",
                    scope="repository:a/b:pull,push",
                )
            ],
        ),
        (
            'Basic realm="x", Bearer realm="https://a/t",scope="repository:r:pull,push"',
            [
                ch("basic", realm="x"),
                ch("bearer", realm="https://a/t", scope="repository:r:pull,push"),
            ],
        ),
        (
            'Bearer realm="https://a/t", error="insufficient_scope", '
            'scope="repository:x:pull,push repository:y:pull"',
            [
                ch(
                    "bearer",
                    realm="https://a/t",
                    error="insufficient_scope",
                    scope="repository:x:pull,push repository:y:pull",
                )
            ],
        ),
        ('Basic title="a \\"b\\" c", realm="r"', [ch("basic", title='a "b" c', realm="r")]),
        ('Basic realm="back\\\\slash"', [ch("basic", realm="back\\slash")]),
        (
            "BEARER Realm=https://a/t , SERVICE = reg",
            [ch("bearer", realm="https://a/t", service="reg")],
        ),
        ("Basic", [ch("basic")]),
        ("Basic, Bearer realm=x", [ch("basic"), ch("bearer", realm="x")]),
        ("Negotiate dG9rZW42OA==", [ch("negotiate", "dG9rZW42OA==")]),
        (
            "Negotiate abc/+=, Basic realm=r",
            [ch("negotiate", "abc/+="), ch("basic", realm="r")],
        ),
        ('Basic realm="first", realm="second"', [ch("basic", realm="first")]),
        (
            'Basic realm="unterminated, Bearer realm=x',
            [ch("basic", realm="unterminated, Bearer realm=x")],
        ),
        ("", []),
        (" , ,", []),
        ('=== "junk", Basic realm=r', [ch("basic", realm="r")]),
        ('Bearer realm="a" junk junk, service="s"', [ch("bearer", realm="a", service="s")]),
    ],
)
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert as_tuples(parse_challenges(header)) == as_tuples(expected)


@given(st.text(max_size=300))
def test_parse_challenges_never_raises(header: str) -> None:
    for c in parse_challenges(header):
        assert c.scheme and c.scheme == c.scheme.lower()
        assert all(k == k.lower() for k in c.params)


_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_tokens = st.text(alphabet=_TCHARS, min_size=1, max_size=12)
_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_challenge = st.tuples(_tokens, st.dictionaries(_tokens, _values, max_size=4))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(st.lists(_challenge, max_size=4))
def test_parse_challenges_round_trip(challenges: list[tuple[str, dict[str, str]]]) -> None:
    rendered = ", ".join(
        scheme
        + ("" if not params else " " + ", ".join(f"{k}={_quote(v)}" for k, v in params.items()))
        for scheme, params in challenges
    )
    expected = []
    for scheme, params in challenges:
        lowered: dict[str, str] = {}
        for k, v in params.items():
            lowered.setdefault(k.lower(), v)
        expected.append((scheme.lower(), lowered, None))
    assert as_tuples(parse_challenges(rendered)) == expected


# -- realm policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("realm", "registry", "scheme", "allowed"),
    [
        ("https://auth.example/token", "registry.example", "https", True),
        ("http://auth.example/token", "registry.example", "https", False),  # downgrade
        ("http://auth.example/token", "registry.example", "http", True),
        ("https://127.0.0.1/token", "registry.example", "https", False),  # loopback
        ("https://localhost:8443/token", "registry.example", "https", False),
        ("https://169.254.169.254/latest/meta-data", "registry.example", "https", False),
        ("https://[::1]/token", "registry.example", "https", False),
        ("https://0.0.0.0/token", "registry.example", "https", False),
        ("https://[fe80::1]/token", "registry.example", "https", False),
        ("https://10.1.2.3/token", "registry.example", "https", True),  # private is not local
        ("http://127.0.0.1:5001/token", "127.0.0.1:5000", "http", True),
        ("http://127.0.0.1:5001/token", "localhost:5000", "http", True),
        ("ftp://auth.example/token", "registry.example", "https", False),
        ("/token", "registry.example", "https", False),
        ("https:///token", "registry.example", "https", False),
    ],
)
def test_check_realm(realm: str, registry: str, scheme: str, allowed: bool) -> None:
    if allowed:
        check_realm(realm, registry, scheme)
    else:
        with pytest.raises(AuthError, match="realm"):
            check_realm(realm, registry, scheme)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("foo.localhost", True),
        ("127.0.0.5", True),
        ("[::1]", True),
        ("169.254.1.1", True),
        ("::", True),
        ("127.8.9.10", True),
        ("169.254.169.254", True),
        ("192.168.1.1", False),
        ("10.0.0.1", False),
        ("8.8.8.8", False),
        ("registry.example.com", False),
    ],
)
def test_is_local_host(host: str, local: bool) -> None:
    # resolve=False: literals and localhost names are decided without a resolver.
    assert is_local_host(host, resolve=False) is local


@pytest.mark.parametrize(
    ("answers", "local"),
    [
        (["127.0.0.1"], True),
        (["203.0.113.7", "fe80::1%eth0"], True),  # any local answer counts (regclient)
        (["203.0.113.7"], False),
        (OSError("name does not resolve"), False),
    ],
)
def test_is_local_host_by_resolution(
    monkeypatch: pytest.MonkeyPatch, answers: list[str] | OSError, local: bool
) -> None:
    """A name counts as local when it resolves to a local address; no real DNS is asked."""
    asked: list[str] = []

    def getaddrinfo(host: str, *_: object, **__: object) -> list[tuple[object, ...]]:
        asked.append(host)
        if isinstance(answers, OSError):
            raise answers
        return [(0, 0, 0, "", (ip, 0)) for ip in answers]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert is_local_host("Registry.Example.COM.") is local
    assert asked == ["registry.example.com"]


@pytest.mark.parametrize(
    ("scopes", "merged"),
    [
        (["repository:a:pull", "repository:a:push,pull"], ["repository:a:pull,push"]),
        (["repository:a:pull repository:b:pull", ""], ["repository:a:pull", "repository:b:pull"]),
        (["registry:catalog:*", "repository:x:pull"], ["registry:catalog:*", "repository:x:pull"]),
        (
            ["repository:host:5000/a:pull", "repository:host:5000/a:delete"],
            ["repository:host:5000/a:delete,pull"],
        ),
        (["garbage", "repository:a:pull"], ["garbage", "repository:a:pull"]),
        ([""], []),
    ],
)
def test_merge_scopes(scopes: list[str], merged: list[str]) -> None:
    assert merge_scopes(*scopes) == merged


def test_redact_headers_and_scope() -> None:
    shown = redact_headers({"Authorization": "Bearer abc", "Accept": "x", "cookie": "c=1"})
    assert shown == {"Authorization": "<redacted>", "Accept": "x", "cookie": "<redacted>"}
    assert repository_scope("a/b") == "repository:a/b:pull"
    assert repository_scope("a/b", "pull,push") == "repository:a/b:pull,push"


# -- real registries --------------------------------------------------------------------


@dataclass
class TokenEnv:
    registry: Registry
    tokens: TokenServer


@pytest.fixture(scope="module")
def factory(
    tmp_path_factory: pytest.TempPathFactory, test_ca: CertificateAuthority
) -> Iterator[RegistryFactory]:
    """Registries shared by this module's tests (each starts in well under a second,
    but there is no need to start one per test)."""
    f = RegistryFactory(tmp_path_factory.mktemp("auth-registries"), test_ca)
    yield f
    f.close()


@pytest.fixture(scope="module")
def token_env(factory: RegistryFactory) -> TokenEnv:
    config = TokenServerConfig(
        users=USERS, user_actions={"bob": frozenset({"pull"})}, anonymous_pull=True
    )
    reg = factory(auth="token", token=config)
    return TokenEnv(reg, reg.token_server)


@pytest.fixture
def tokens(token_env: TokenEnv) -> TokenEnv:
    token_env.tokens.clear()
    return token_env


@pytest.fixture(scope="module")
def basic_registry(factory: RegistryFactory) -> Registry:
    return factory(auth="basic", basic=BasicAuth(users=USERS))


def new_auth(
    registry: Registry,
    credential: Credential | None,
    clock: Callable[[], float] | None = None,
    client: HTTPClient | None = None,
) -> Authenticator:
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    return Authenticator(
        client or HTTPClient(verify=registry.verify),
        registry.host_port,
        scheme=registry.scheme,
        credential=credential,
        timeout=10,
        **kwargs,
    )


def fetch(url: str, headers: dict[str, str] | None = None) -> Response:
    """One GET, answer read and closed (what the authenticator is handed)."""
    with HTTPClient().request("GET", url, headers=headers, timeout=10) as resp:
        return resp


def send(
    auth: Authenticator, url: str, scope: str, method: str = "GET", verify: bool | str = True
) -> Response:
    """What the transport does: cached header, one re-auth after a 401."""
    client = HTTPClient(verify=verify)
    header = auth.header_for(scope)
    resp = client.request(
        method,
        url,
        headers={"Authorization": header} if header else {},
        timeout=10,
    )
    resp.close()
    if resp.status_code == 401:
        header = auth.on_unauthorized(resp, scope)
        resp = client.request(method, url, headers={"Authorization": header}, timeout=10)
        resp.close()
    return resp


def tags_url(registry: Registry, repo: str = "library/hello") -> str:
    return f"{registry.url}/v2/{repo}/tags/list"


def test_basic_login_ok_and_bad(basic_registry: Registry) -> None:
    host = basic_registry.host_port
    assert check_login(host, Credential("alice", ALICE_PW), scheme="http") == "basic"
    with pytest.raises(AuthError, match="rejected the credentials") as info:
        check_login(host, Credential("alice", "wrong-password"), scheme="http")
    assert "wrong-password" not in str(info.value)
    with pytest.raises(AuthError, match="authentication required"):
        check_login(host, None, scheme="http")


def test_wrong_basic_password_is_not_retried(basic_registry: Registry) -> None:
    auth = new_auth(basic_registry, Credential("alice", "wrong-password"))
    scope = repository_scope("library/hello")
    first = fetch(tags_url(basic_registry))
    header = auth.on_unauthorized(first, scope)
    assert header.startswith("Basic ") and auth.header_for("any:other:scope") == header
    second = fetch(tags_url(basic_registry), {"Authorization": header})
    assert second.status_code == 401
    with pytest.raises(AuthError, match="rejected the credentials \\(as user 'alice'\\)"):
        auth.on_unauthorized(second, scope)


def test_basic_auth_is_reused_for_every_scope(basic_registry: Registry) -> None:
    auth = new_auth(basic_registry, Credential("bob", BOB_PW))
    mark = basic_registry.access_log_mark()
    for repo in ("a/one", "a/two", "b/three"):
        resp = send(auth, tags_url(basic_registry, repo), repository_scope(repo))
        assert resp.status_code == 404  # authorized; the repository just does not exist
    statuses = [e.status for e in basic_registry.access_log_requests(mark)]
    assert statuses == [401, 404, 404, 404]


def test_basic_auth_without_credentials(basic_registry: Registry) -> None:
    auth = new_auth(basic_registry, None)
    resp = fetch(tags_url(basic_registry))
    with pytest.raises(AuthError, match=r"run 'hybridstore login 127\.0\.0\.1:\d+'"):
        auth.on_unauthorized(resp, repository_scope("library/hello"))


def test_anonymous_pull_token(tokens: TokenEnv) -> None:
    auth = new_auth(tokens.registry, None)
    scope = repository_scope("library/hello")
    resp = send(auth, tags_url(tokens.registry), scope)
    assert resp.status_code == 404  # the token was accepted
    (req,) = tokens.tokens.requests
    assert req.method == "GET" and req.username is None
    assert req.query["scope"] == [scope] and "Authorization" not in req.headers


def test_credentialed_token_and_login(tokens: TokenEnv) -> None:
    assert (
        check_login(tokens.registry.host_port, Credential("alice", ALICE_PW), scheme="http")
        == "bearer"
    )
    auth = new_auth(tokens.registry, Credential("alice", ALICE_PW))
    scope = repository_scope("team/app", "pull,push")
    resp = send(auth, f"{tokens.registry.url}/v2/team/app/blobs/uploads/", scope, method="POST")
    assert resp.status_code == 202  # push granted: an upload session started
    last = tokens.tokens.requests[-1]
    assert last.username == "alice" and last.query["account"] == ["alice"]
    assert [a.scope() for a in last.granted] == [scope]


def test_bad_password_on_token_server(tokens: TokenEnv) -> None:
    with pytest.raises(AuthError) as info:
        check_login(tokens.registry.host_port, Credential("alice", "nope-nope"), scheme="http")
    msg = str(info.value)
    assert "refused the credentials" in msg and "bad credentials" in msg  # the server's words
    assert "nope-nope" not in msg


def test_token_is_cached_per_scope(tokens: TokenEnv) -> None:
    auth = new_auth(tokens.registry, Credential("alice", ALICE_PW))
    mark = tokens.registry.access_log_mark()
    pull = repository_scope("library/hello")
    for _ in range(5):
        assert send(auth, tags_url(tokens.registry), pull).status_code == 404
    assert tokens.tokens.tokens_issued == 1
    assert (
        send(
            auth, tags_url(tokens.registry, "other/repo"), repository_scope("other/repo")
        ).status_code
        == 404
    )
    assert tokens.tokens.tokens_issued == 2
    statuses = [e.status for e in tokens.registry.access_log_requests(mark)]
    assert statuses.count(401) == 2  # one challenge per scope, then the cached token


def test_concurrent_401s_fetch_one_token(tokens: TokenEnv) -> None:
    auth = new_auth(tokens.registry, None)
    scope = repository_scope("library/hello")
    barrier = threading.Barrier(8)
    results: list[int] = []

    def worker() -> None:
        barrier.wait(timeout=30)
        results.append(send(auth, tags_url(tokens.registry), scope).status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [404] * 8
    assert tokens.tokens.tokens_issued == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_expired_token_is_fetched_again(tokens: TokenEnv) -> None:
    clock = FakeClock()
    auth = new_auth(tokens.registry, None, clock=clock)
    scope = repository_scope("library/hello")
    send(auth, tags_url(tokens.registry), scope)
    assert auth.header_for(scope) is not None
    clock.now += 250  # the server said expires_in=300
    assert auth.header_for(scope) is not None
    assert send(auth, tags_url(tokens.registry), scope).status_code == 404
    assert tokens.tokens.tokens_issued == 1
    clock.now += 60
    assert auth.header_for(scope) is None
    assert send(auth, tags_url(tokens.registry), scope).status_code == 404
    assert tokens.tokens.tokens_issued == 2


def test_identity_token_uses_oauth2_post(tokens: TokenEnv) -> None:
    refresh = tokens.tokens.new_refresh_token("alice")
    auth = new_auth(tokens.registry, Credential(identity_token=refresh))
    scope = repository_scope("team/app", "pull,push")
    resp = send(auth, f"{tokens.registry.url}/v2/team/app/blobs/uploads/", scope, method="POST")
    assert resp.status_code == 202
    (req,) = tokens.tokens.requests
    form = parse_qs(req.body.decode())
    assert req.method == "POST" and form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == [refresh] and form["client_id"] == ["hybridstore"]
    assert form["scope"] == [scope] and "Authorization" not in req.headers


def test_insufficient_scope_is_reported(tokens: TokenEnv) -> None:
    auth = new_auth(tokens.registry, Credential("bob", BOB_PW))  # bob may only pull
    scope = repository_scope("team/app", "pull,push")
    resp = send(auth, f"{tokens.registry.url}/v2/team/app/blobs/uploads/", scope, method="POST")
    assert resp.status_code == 401
    err = auth.error_for(resp, scope)
    assert "insufficient scope" in str(err) and "repository:team/app:pull,push" in str(err)
    assert "as user 'bob'" in str(err)


def test_access_token_field(registry_factory: RegistryFactory) -> None:
    config = TokenServerConfig(users=USERS, anonymous_pull=True, token_field="access_token")
    registry = registry_factory(auth="token", token=config)
    auth = new_auth(registry, None)
    assert send(auth, tags_url(registry), repository_scope("x/y")).status_code == 404
    assert registry.token_server.tokens_issued == 1


@pytest.fixture(scope="module")
def tls_registry_http_realm(
    tmp_path_factory: pytest.TempPathFactory, test_ca: CertificateAuthority
) -> Iterator[TokenEnv]:
    """An https registry whose token realm is plain http: a downgrade. (The factory
    always gives a TLS registry an https token server, so this one is built by hand.)"""
    workdir = tmp_path_factory.mktemp("tls-http-realm")
    cert, key = test_ca.issue_server().write(workdir, "server")
    tls = TLSFiles(cert, key, test_ca.write_cert(workdir / "ca.pem"))
    config = TokenServerConfig(users=USERS, anonymous_pull=True)
    with TokenServer(workdir / "ts", config, ca=test_ca) as ts:
        auth = TokenAuth(ts.realm, config.service, config.issuer, ts.rootcertbundle)
        with Registry(workdir / "reg", RegistryConfig(token_auth=auth, tls=tls)) as reg:
            yield TokenEnv(reg, ts)


def test_realm_downgrade_is_refused(tls_registry_http_realm: TokenEnv) -> None:
    env = tls_registry_http_realm
    assert env.tokens.realm.startswith("http://") and env.registry.scheme == "https"
    with pytest.raises(AuthError, match="refusing token realm .* from https registry"):
        check_login(
            env.registry.host_port,
            Credential("alice", ALICE_PW),
            verify=str(env.registry.ca_path),
        )
    auth = new_auth(env.registry, None)
    with pytest.raises(AuthError, match="credentials are never sent over plain http"):
        send(auth, tags_url(env.registry), repository_scope("x/y"), verify=env.registry.verify)
    assert env.tokens.requests == []


def test_tls_needs_the_ca(tls_registry_http_realm: TokenEnv) -> None:
    from hybridstore.errors import NetworkError

    with pytest.raises(NetworkError, match="--ca-file"):
        check_login(tls_registry_http_realm.registry.host_port, Credential("alice", ALICE_PW))


# -- scripted loopback peers ------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Scripted:
    """A loopback HTTP server answering from ``routes`` and recording every request."""

    routes: dict[str, Callable[[Seen], Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    server: LoopbackServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def host_port(self) -> str:
        assert self.server is not None
        return self.server.host_port


class _ScriptedHandler(QuietHandler):
    def _serve(self) -> None:
        app: Scripted = self.app
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
        app.seen.append(seen)
        route = app.routes.get(urlsplit(self.path).path)
        status, headers, body = route(seen) if route else (404, {}, b"")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _serve


@pytest.fixture
def scripted() -> Iterator[Callable[[], Scripted]]:
    servers: list[LoopbackServer] = []

    def make() -> Scripted:
        app = Scripted()
        app.server = LoopbackServer(_ScriptedHandler, app)
        app.server.start()
        servers.append(app.server)
        return app

    yield make
    for s in servers:
        s.stop()


def token_reply(token: str = "tok-123", **extra: Any) -> Reply:
    return 200, {"Content-Type": "application/json"}, json.dumps({"token": token, **extra}).encode()


def challenge_route(realm: str) -> Callable[[Seen], Reply]:
    def route(seen: Seen) -> Reply:
        if seen.headers.get("Authorization", "").startswith("Bearer "):
            return 200, {}, b"{}"
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="svc"'}, b""

    return route


def scripted_auth(peer: Scripted, credential: Credential | None, **kw: Any) -> Authenticator:
    return Authenticator(
        HTTPClient(),
        peer.host_port,
        scheme="http",
        credential=credential,
        timeout=10,
        **kw,
    )


def challenge_from(peer: Scripted) -> Response:
    return fetch(peer.url + "/v2/")


def test_401_from_another_host_gets_no_credentials(
    tokens: TokenEnv, scripted: Callable[[], Scripted]
) -> None:
    """ContainerDrip: a foreign host (a redirect target) answers 401 pointing at a realm."""
    evil = scripted()
    evil.routes["/v2/"] = challenge_route(tokens.tokens.realm)
    auth = new_auth(tokens.registry, Credential("alice", ALICE_PW))
    with pytest.raises(AuthError, match="it is not the registry"):
        auth.on_unauthorized(challenge_from(evil), "")
    assert tokens.tokens.requests == []


def test_token_redirect_to_another_host_drops_credentials(scripted: Callable[[], Scripted]) -> None:
    registry, other = scripted(), scripted()
    registry.routes["/v2/"] = challenge_route(registry.url + "/token")
    registry.routes["/token"] = lambda seen: (302, {"Location": other.url + "/elsewhere?x=1"}, b"")
    other.routes["/elsewhere"] = lambda seen: token_reply("redirected-token")
    auth = scripted_auth(registry, Credential("alice", ALICE_PW))
    assert auth.on_unauthorized(challenge_from(registry), "") == "Bearer redirected-token"
    assert registry.seen[-1].headers["Authorization"].startswith("Basic ")
    assert "Authorization" not in other.seen[-1].headers


def test_token_post_redirect_to_another_host_is_refused(scripted: Callable[[], Scripted]) -> None:
    registry, other = scripted(), scripted()
    registry.routes["/v2/"] = challenge_route(registry.url + "/token")
    registry.routes["/token"] = lambda seen: (307, {"Location": other.url + "/token"}, b"")
    auth = scripted_auth(registry, Credential(identity_token="refresh-secret-1"))
    with pytest.raises(AuthError, match="refusing to resend"):
        auth.on_unauthorized(challenge_from(registry), "")
    assert other.seen == []


def test_get_refused_falls_back_to_password_grant(scripted: Callable[[], Scripted]) -> None:
    registry = scripted()
    registry.routes["/v2/"] = challenge_route(registry.url + "/token")

    def token(seen: Seen) -> Reply:
        if seen.method == "GET":
            return 405, {}, b""
        form = parse_qs(seen.body.decode())
        ok = form.get("grant_type") == ["password"] and form.get("password") == [ALICE_PW]
        return (200, {}, b'{"access_token": "oauth-token"}') if ok else (401, {}, b"")

    registry.routes["/token"] = token
    auth = scripted_auth(registry, Credential("alice", ALICE_PW))
    assert (
        auth.on_unauthorized(challenge_from(registry), "repository:a:pull") == "Bearer oauth-token"
    )
    assert [s.method for s in registry.seen[1:]] == ["GET", "POST"]


def test_default_lifetime_is_60_seconds(scripted: Callable[[], Scripted]) -> None:
    registry = scripted()
    registry.routes["/v2/"] = challenge_route(registry.url + "/token")
    registry.routes["/token"] = lambda seen: token_reply("no-expiry")
    clock = FakeClock()
    auth = scripted_auth(registry, None, clock=clock)
    auth.on_unauthorized(challenge_from(registry), "s")
    clock.now += 50
    assert auth.header_for("s") == "Bearer no-expiry"
    clock.now += 11
    assert auth.header_for("s") is None


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ((200, {}, b"x" * (512 * 1024)), "more than 128 KiB"),
        ((200, {}, b'{"token": ""}'), "no usable token"),
        ((200, {}, b"not json"), "no usable token"),
        ((500, {}, b'{"details": "database down"}'), "answered 500: database down"),
    ],
)
def test_bad_token_responses(scripted: Callable[[], Scripted], reply: Reply, error: str) -> None:
    registry = scripted()
    registry.routes["/v2/"] = challenge_route(registry.url + "/token")
    registry.routes["/token"] = lambda seen: reply
    auth = scripted_auth(registry, None)
    with pytest.raises(RegistryError, match=error):
        auth.on_unauthorized(challenge_from(registry), "")


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("", "without a WWW-Authenticate challenge"),
        ('Negotiate abc=, Digest realm="x"', "unsupported authentication"),
        ('Bearer service="x"', "without a realm"),
    ],
)
def test_unusable_challenges(scripted: Callable[[], Scripted], header: str, error: str) -> None:
    registry = scripted()
    registry.routes["/v2/"] = lambda seen: (
        401,
        {"WWW-Authenticate": header} if header else {},
        b"",
    )
    with pytest.raises(AuthError, match=error):
        scripted_auth(registry, None).on_unauthorized(challenge_from(registry), "")


def test_token_server_message_is_scrubbed_of_secrets(scripted: Callable[[], Scripted]) -> None:
    registry = scripted()
    registry.routes["/v2/"] = challenge_route(registry.url + "/token")
    registry.routes["/token"] = lambda seen: (
        401,
        {},
        json.dumps({"details": f"wrong password {ALICE_PW} for alice"}).encode(),
    )
    with pytest.raises(AuthError) as info:
        scripted_auth(registry, Credential("alice", ALICE_PW)).on_unauthorized(
            challenge_from(registry), ""
        )
    assert ALICE_PW not in str(info.value) and "wrong password *** for alice" in str(info.value)


# -- no secret in logs, errors or reprs -------------------------------------------------


def test_no_secret_in_debug_logs_errors_or_reprs(
    caplog: pytest.LogCaptureFixture, tokens: TokenEnv, basic_registry: Registry
) -> None:
    caplog.set_level(logging.DEBUG)
    refresh = tokens.tokens.new_refresh_token("alice")
    seen_secrets = [ALICE_PW, refresh, base64.b64encode(f"alice:{ALICE_PW}".encode()).decode()]
    texts: list[str] = []

    check_login(basic_registry.host_port, Credential("alice", ALICE_PW), scheme="http")
    check_login(tokens.registry.host_port, Credential("alice", ALICE_PW), scheme="http")
    for cred in (Credential("alice", ALICE_PW), Credential(identity_token=refresh)):
        auth = new_auth(tokens.registry, cred)
        scope = repository_scope("team/app", "pull,push")
        send(auth, f"{tokens.registry.url}/v2/team/app/blobs/uploads/", scope, method="POST")
        header = auth.header_for(scope)
        assert header is not None
        seen_secrets.append(header.split(" ", 1)[1])
        texts += [repr(auth), repr(cred), str(cred)]
    for registry, cred in (
        (basic_registry, Credential("alice", ALICE_PW + "x")),
        (tokens.registry, Credential("alice", ALICE_PW + "x")),
        (tokens.registry, Credential(identity_token=refresh + "x")),
    ):
        with pytest.raises(AuthError) as info:
            check_login(registry.host_port, cred, scheme="http")
        texts += [str(info.value), repr(info.value)]
    assert "token for" in caplog.text  # DEBUG logging was really on
    everything = caplog.text + "\n".join(texts)
    for secret in seen_secrets:
        assert secret not in everything
        assert secret[:12] not in everything


# -- the CLI ----------------------------------------------------------------------------


def run_cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR")
    }
    env["HOME"] = str(home)
    exe = Path(sys.executable).parent / "hybridstore"
    return subprocess.run(
        [str(exe), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def test_cli_login_logout_basic(tmp_path: Path, basic_registry: Registry) -> None:
    host = basic_registry.host_port
    config = tmp_path / ".docker" / "config.json"
    bad = run_cli(
        tmp_path, "login", host, "-u", "alice", "--password-stdin", "--plain-http", stdin="nope\n"
    )
    assert bad.returncode == 5 and "rejected the credentials" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not config.exists()

    ok = run_cli(
        tmp_path,
        "--debug",
        "login",
        host,
        "-u",
        "alice",
        "--password-stdin",
        "--plain-http",
        stdin=ALICE_PW + "\n",
    )
    assert ok.returncode == 0, ok.stderr
    assert f"Login succeeded for {host}" in ok.stdout and "stored unencrypted" in ok.stderr
    assert ALICE_PW not in ok.stdout + ok.stderr
    assert (config.stat().st_mode & 0o777) == 0o600
    entry = json.loads(config.read_text())["auths"][host]
    assert base64.b64decode(entry["auth"]).decode() == f"alice:{ALICE_PW}"

    out = run_cli(tmp_path, "logout", host, "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"registry": host, "removed": True}
    again = run_cli(tmp_path, "logout", host)
    assert again.returncode == 0 and f"Not logged in to {host}" in again.stdout


def test_cli_login_token_registry_json(tmp_path: Path, tokens: TokenEnv) -> None:
    host = tokens.registry.host_port
    res = run_cli(
        tmp_path,
        "--debug",
        "login",
        f"http://{host}/",
        "-u",
        "alice",
        "--password-stdin",
        "--plain-http",
        "--json",
        stdin=ALICE_PW,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "registry": host,
        "auth": "bearer",
        "stored_in": str(tmp_path / ".docker" / "config.json"),
    }
    assert ALICE_PW not in res.stdout + res.stderr and "token for" in res.stderr


def test_cli_login_debug_failure_has_no_secret(tmp_path: Path, tokens: TokenEnv) -> None:
    res = run_cli(
        tmp_path,
        "--debug",
        "login",
        tokens.registry.host_port,
        "-u",
        "alice",
        "--password-stdin",
        "--plain-http",
        stdin=ALICE_PW + "-wrong",
    )
    assert res.returncode != 0 and "AuthError" in res.stderr  # --debug shows the traceback
    assert ALICE_PW not in res.stdout + res.stderr


def _expect(fd: int, text: str, seen: bytearray, timeout: float = 30) -> None:
    """Read the terminal until ``text`` shows up (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {text!r} on the terminal; got {bytes(seen)!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            raise AssertionError(f"terminal closed before {text!r}; got {bytes(seen)!r}")
        seen += chunk


def test_cli_login_prompts_on_a_terminal(tmp_path: Path, basic_registry: Registry) -> None:
    """On a TTY, login asks for the user name and the password (not echoed)."""
    host = basic_registry.host_port
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE")}
    env["HOME"] = str(tmp_path)
    argv = [str(Path(sys.executable).parent / "hybridstore"), "login", host, "--plain-http"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        os.execve(argv[0], argv, env)
    seen = bytearray()
    try:
        _expect(fd, "Username:", seen)
        os.write(fd, b"alice\n")
        _expect(fd, "Password:", seen)
        os.write(fd, ALICE_PW.encode() + b"\n")
        _expect(fd, "Login succeeded", seen)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ALICE_PW.encode() not in seen  # hidden input
    doc = json.loads((tmp_path / ".docker" / "config.json").read_text())
    assert base64.b64decode(doc["auths"][host]["auth"]).decode() == f"alice:{ALICE_PW}"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--password-stdin"], "pw", "--password-stdin needs --username"),
        (["-u", "alice"], None, "stdin is not a terminal"),
        (["-u", "alice", "--password-stdin"], "\n", "stdin was empty"),
    ],
)
def test_cli_login_input_errors(
    tmp_path: Path, args: list[str], stdin: str | None, message: str
) -> None:
    res = run_cli(tmp_path, "login", "reg.example", *args, stdin=stdin)
    assert res.returncode == 10 and message in res.stderr


def test_cli_login_unreachable(tmp_path: Path) -> None:
    res = run_cli(
        tmp_path,
        "login",
        f"127.0.0.1:{free_port()}",
        "-u",
        "a",
        "--password-stdin",
        "--plain-http",
        stdin="pw",
    )
    assert res.returncode == 6 and "cannot reach" in res.stderr

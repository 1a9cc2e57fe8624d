"""A distribution-style bearer token server for tests, run in a thread on loopback.

It speaks both halves of the distribution token protocol
(``docs/spec/auth/token.md`` and ``oauth.md`` in distribution):

* ``GET /token?service=S&scope=T:N:A[,A]...`` with optional HTTP basic auth
  (``offline_token=true`` also returns a refresh token);
* ``POST /token`` with an ``application/x-www-form-urlencoded`` body,
  ``grant_type=password`` (username, password) or ``grant_type=refresh_token``;
  ``access_type=offline`` returns a refresh token.

Tokens are JWTs built by hand (no PyJWT: a JWS compact serialisation is three
base64url parts, and hand-building lets tests mint deliberately broken tokens),
signed ES256 with a key whose certificate travels in the ``x5c`` header.
Distribution 2.8 (``registry/auth/token/token.go``) accepts a token when
``iss`` is the configured issuer, ``aud`` equals the configured service,
``nbf <= now <= exp`` (no leeway in 2.8), and the ``x5c`` leaf chains to a
certificate in ``rootcertbundle``; the ``access`` claim then decides which
repository actions are allowed.

Every request is recorded (headers and body included) so tests can assert that
no secret went where it should not.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from . import LoopbackServer, QuietHandler
from .tls import CertificateAuthority, IssuedCert

__all__ = [
    "Access",
    "TokenRequest",
    "TokenServer",
    "TokenServerConfig",
    "decode_jwt",
    "make_jwt",
    "parse_scope",
]

ALL_ACTIONS: frozenset[str] = frozenset({"pull", "push", "delete", "*"})


@dataclass(frozen=True)
class Access:
    """One entry of the token's ``access`` claim (a scope the server granted)."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}

    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scope(scope: str) -> Access | None:
    """Parse ``type[(class)]:name:action[,action]``; the name may itself hold colons."""
    head, sep, actions = scope.rpartition(":")
    if not sep:
        return None
    typ, sep, name = head.partition(":")
    if not sep or not typ or not name:
        return None
    typ = typ.split("(", 1)[0]  # drop a resource class such as repository(plugin)
    return Access(typ, name, tuple(a for a in actions.split(",") if a))


@dataclass
class TokenServerConfig:
    """What the token server accepts and how it answers.

    ``users`` maps user name to password. ``user_actions`` restricts what a user
    may be granted (default: every requested action). ``anonymous_pull`` grants
    ``pull`` to requests without credentials; ``reject_anonymous`` answers them
    401 instead of an empty-access token. ``token_field`` picks the JSON field
    of GET responses (``token``, ``access_token`` or ``both``); POST responses
    always use ``access_token`` as the OAuth2 spec requires. ``oauth_post=False``
    answers POST with 405 so clients must fall back to GET.
    """

    service: str = "hybridstore-test-registry"
    issuer: str = "hybridstore-test-token-issuer"
    users: Mapping[str, str] = field(default_factory=lambda: {"alice": "alice-s3cret-pw"})
    user_actions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    anonymous_pull: bool = False
    reject_anonymous: bool = False
    lifetime: int = 300
    token_field: Literal["token", "access_token", "both"] = "token"
    oauth_post: bool = True
    path: str = "/token"


@dataclass(frozen=True)
class TokenRequest:
    """A request the token server saw, kept whole for leak assertions."""

    method: str
    path: str
    query: Mapping[str, Sequence[str]]
    headers: Mapping[str, str]
    body: bytes
    username: str | None
    status: int
    granted: tuple[Access, ...]

    def text(self) -> str:
        """Everything the client sent, as one string (for ``secret not in ...`` checks)."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        query = "&".join(f"{k}={v}" for k, vs in self.query.items() for v in vs)
        return f"{self.method} {self.path}?{query}\n{head}\n\n" + self.body.decode(
            "utf-8", "replace"
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(
    claims: Mapping[str, Any],
    signer: IssuedCert,
    *,
    header_extra: Mapping[str, Any] | None = None,
    include_x5c: bool = True,
) -> str:
    """Sign ``claims`` ES256 with ``signer``'s key; ``x5c`` carries its certificate."""
    header: dict[str, Any] = {"typ": "JWT", "alg": "ES256"}
    if include_x5c:
        header["x5c"] = [base64.b64encode(signer.cert_der).decode("ascii")]
    header.update(header_extra or {})
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    )
    der = signer.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    # JWS ES256 wants the raw 32-byte big-endian r || s, not the DER that
    # cryptography returns.
    return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(header, claims)`` of a compact JWT without verifying it (test inspection)."""
    head, body, _sig = token.split(".")
    return json.loads(_b64url_decode(head)), json.loads(_b64url_decode(body))


class TokenServer:
    """Issue registry bearer tokens; start with ``start()`` or use as a context manager.

    ``rootcertbundle`` is the path to hand to the registry's ``auth.token``
    configuration; ``realm`` is the URL to put in it.
    """

    def __init__(
        self,
        workdir: Path,
        config: TokenServerConfig | None = None,
        *,
        ca: CertificateAuthority | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config or TokenServerConfig()
        self.ca = ca or CertificateAuthority("hybridstore token CA")
        self.signer = self.ca.issue_signing()
        self.rootcertbundle = self.ca.write_cert(workdir / "token-rootcertbundle.pem")
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._refresh: dict[str, str] = {}
        self._server = LoopbackServer(_TokenHandler, self, ssl_context=ssl_context)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> TokenServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def realm(self) -> str:
        return self._server.url + self.config.path

    @property
    def host_port(self) -> str:
        return self._server.host_port

    # -- observation -------------------------------------------------------------------
    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def tokens_issued(self) -> int:
        return sum(1 for r in self.requests if r.status == 200)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- token minting -----------------------------------------------------------------
    def issue(
        self,
        access: Sequence[Access],
        *,
        subject: str = "",
        lifetime: int | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        not_before: int | None = None,
    ) -> str:
        """Mint a token directly (overrides let tests make wrong-audience/expired ones)."""
        now = int(time.time())
        life = self.config.lifetime if lifetime is None else lifetime
        claims = {
            "iss": self.config.issuer if issuer is None else issuer,
            "sub": subject,
            "aud": self.config.service if audience is None else audience,
            "exp": now + life,
            # 2.8 compares nbf with no leeway; back-date it so a clock tick cannot bite.
            "nbf": now - 10 if not_before is None else not_before,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [a.claim() for a in access],
        }
        return make_jwt(claims, self.signer)

    def grant(self, username: str | None, wanted: Sequence[Access]) -> tuple[Access, ...]:
        """Which of ``wanted`` this user (None = anonymous) gets."""
        if username is None:
            allowed = frozenset({"pull"}) if self.config.anonymous_pull else frozenset()
        else:
            allowed = self.config.user_actions.get(username, ALL_ACTIONS)
        granted = []
        for want in wanted:
            actions = tuple(a for a in want.actions if a in allowed)
            if actions:
                granted.append(Access(want.type, want.name, actions))
        return tuple(granted)

    def check_password(self, username: str, password: str) -> bool:
        expected = self.config.users.get(username)
        return expected is not None and secrets.compare_digest(expected, password)

    def new_refresh_token(self, username: str) -> str:
        token = "refresh-" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = username
        return token

    def user_for_refresh_token(self, token: str) -> str | None:
        with self._lock:
            return self._refresh.get(token)

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)


class _TokenHandler(QuietHandler):
    def do_GET(self) -> None:
        ts: TokenServer = self.app
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path != ts.config.path:
            return self._finish(url.path, query, b"", None, 404, {"error": "not found"})
        username = None
        auth = self.headers.get("Authorization")
        if auth is not None:
            user = self._basic_user(auth, ts)
            if user is None:
                return self._finish(url.path, query, b"", None, 401, {"error": "bad credentials"})
            username = user
        elif ts.config.reject_anonymous:
            return self._finish(url.path, query, b"", None, 401, {"error": "login required"})
        if query.get("service", [""])[0] != ts.config.service:
            return self._finish(url.path, query, b"", username, 400, {"error": "unknown service"})
        wanted = [a for s in query.get("scope", []) for a in self._scopes(s)]
        granted = ts.grant(username, wanted)
        payload = self._token_payload(ts, username, granted, oauth=False)
        if username is not None and query.get("offline_token", [""])[0] == "true":
            payload["refresh_token"] = ts.new_refresh_token(username)
        self._finish(url.path, query, b"", username, 200, payload, granted)

    def do_POST(self) -> None:
        ts: TokenServer = self.app
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path != ts.config.path:
            return self._finish(url.path, query, body, None, 404, {"error": "not found"})
        if not ts.config.oauth_post:
            return self._finish(url.path, query, body, None, 405, {"error": "use GET"})
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        grant_type = form.get("grant_type")
        username: str | None
        if grant_type == "password":
            username = form.get("username", "")
            if not ts.check_password(username, form.get("password", "")):
                return self._finish(url.path, query, body, None, 401, {"error": "invalid_grant"})
        elif grant_type == "refresh_token":
            username = ts.user_for_refresh_token(form.get("refresh_token", ""))
            if username is None:
                return self._finish(url.path, query, body, None, 401, {"error": "invalid_grant"})
        else:
            return self._finish(
                url.path, query, body, None, 400, {"error": "unsupported_grant_type"}
            )
        if not form.get("client_id"):
            return self._finish(url.path, query, body, username, 400, {"error": "invalid_request"})
        if form.get("service") != ts.config.service:
            return self._finish(url.path, query, body, username, 400, {"error": "invalid_request"})
        wanted = [a for s in form.get("scope", "").split(" ") if s for a in self._scopes(s)]
        granted = ts.grant(username, wanted)
        payload = self._token_payload(ts, username, granted, oauth=True)
        payload["scope"] = " ".join(a.scope() for a in granted)
        if form.get("access_type") == "offline" or grant_type == "refresh_token":
            payload["refresh_token"] = ts.new_refresh_token(username)
        self._finish(url.path, query, body, username, 200, payload, granted)

    # -- helpers -----------------------------------------------------------------------
    @staticmethod
    def _scopes(text: str) -> list[Access]:
        parsed = parse_scope(text)
        return [parsed] if parsed is not None else []

    @staticmethod
    def _basic_user(header: str, ts: TokenServer) -> str | None:
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user if ts.check_password(user, password) else None

    @staticmethod
    def _token_payload(
        ts: TokenServer, username: str | None, granted: Sequence[Access], *, oauth: bool
    ) -> dict[str, Any]:
        token = ts.issue(granted, subject=username or "")
        field_name = "access_token" if oauth else ts.config.token_field
        payload: dict[str, Any] = {}
        if field_name in ("token", "both"):
            payload["token"] = token
        if field_name in ("access_token", "both"):
            payload["access_token"] = token
        payload["expires_in"] = ts.config.lifetime
        payload["issued_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return payload

    def _finish(
        self,
        path: str,
        query: Mapping[str, Sequence[str]],
        body: bytes,
        username: str | None,
        status: int,
        payload: Mapping[str, Any],
        granted: Sequence[Access] = (),
    ) -> None:
        ts: TokenServer = self.app
        ts._record(
            TokenRequest(
                method=self.command,
                path=path,
                query={k: list(v) for k, v in query.items()},
                headers=dict(self.headers.items()),
                body=body,
                username=username,
                status=status,
                granted=tuple(granted),
            )
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="hybridstore-test-token"')
        self.end_headers()
        self.wfile.write(data)

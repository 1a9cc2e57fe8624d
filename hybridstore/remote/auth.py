"""Registry authentication: ``WWW-Authenticate`` challenges, bearer tokens, basic auth.

An ``Authenticator`` belongs to one registry endpoint. The transport asks it for
the ``Authorization`` value of a scope before a request (``header_for``) and,
once per request, after a 401 (``on_unauthorized``). Tokens are cached per
host and scope until ``expires_in`` (default 60 s) runs out; concurrent 401s
for one scope fetch one token.

Credentials go only where the registry's own challenge points, and only when
that realm is safe: an https registry cannot send us to an http realm, and a
registry that is not local cannot send us to a loopback or link-local one
(SSRF and credential theft; regclient hardening, CVE-2020-15157). No secret is
ever logged or put in an error message.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from hybridstore.errors import AuthError, InvalidDocumentError, NetworkError, RegistryError
from hybridstore.oci.jsondoc import load_json, load_json_object
from hybridstore.remote.challenge import Challenge, parse_challenges
from hybridstore.remote.credentials import Credential
from hybridstore.remote.http import (
    HTTPClient,
    Response,
    TLSError,
    TransportError,
    https_hint,
    join_url,
    plain_http_hint,
    read_capped,
    speaks_https,
)
from hybridstore.remote.safety import (
    check_realm,
    is_local_host,
    origin_of,
    redact_headers,
    redact_url,
)

__all__ = [
    "Authenticator",
    "Challenge",
    "DEFAULT_TOKEN_LIFETIME",
    "check_login",
    "check_realm",
    "is_local_host",
    "merge_scopes",
    "parse_challenges",
    "redact_headers",
    "repository_scope",
]

log = logging.getLogger("hybridstore.remote.auth")

DEFAULT_TOKEN_LIFETIME: Final = 60.0
MAX_TOKEN_RESPONSE: Final = 128 * 1024  # oras-go's cap; a token is a few KiB
CLIENT_ID: Final = "hybridstore"
_MAX_HOPS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_HUB_ENDPOINTS: Final = frozenset({"registry-1.docker.io", "index.docker.io", "docker.io"})


# -- scopes, hosts, redaction ---------------------------------------------------------


def repository_scope(repository: str, actions: str = "pull") -> str:
    """``repository:<name>:<actions>`` (actions comma-separated, e.g. ``pull,push``)."""
    return f"repository:{repository}:{actions}"


def merge_scopes(*scopes: str) -> list[str]:
    """Space-separated scope lists merged per resource, actions united and sorted:
    ``repository:a:push,pull`` and ``repository:a:pull`` give ``repository:a:pull,push``
    (registries send actions in any order). Unparseable scopes are kept verbatim."""
    actions: dict[str, set[str]] = {}
    other: set[str] = set()
    for item in " ".join(scopes).split():
        resource, sep, acts = item.rpartition(":")
        if not sep or ":" not in resource:
            other.add(item)
            continue
        actions.setdefault(resource, set()).update(a for a in acts.split(",") if a)
    merged = [f"{r}:{','.join(sorted(a))}" for r, a in actions.items()]
    return sorted([*merged, *other])


def _scope_key(scope: str) -> str:
    return " ".join(merge_scopes(scope))


def _login_name(registry: str) -> str:
    return "docker.io" if registry in _HUB_ENDPOINTS else registry


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _server_message(resp: Response, body: bytes, secrets: Iterable[str]) -> str:
    """The server's own explanation (token-server or OCI error JSON, else text)."""
    message = ""
    try:
        doc = load_json(body, what="the server's error body", limit=MAX_TOKEN_RESPONSE)
    except InvalidDocumentError:
        doc = None
    if isinstance(doc, dict):
        errs = doc.get("errors")
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            message = str(errs[0].get("message") or errs[0].get("code") or "")
        for key in ("details", "error_description", "message", "error"):
            if not message and isinstance(doc.get(key), str):
                message = doc[key]
    elif body:
        message = body.decode("utf-8", "replace").strip().splitlines()[0] if body.strip() else ""
    message = " ".join(message.split())[:200]
    message = _scrub(message, secrets)
    return message or f"{resp.status_code} {resp.reason}"


def _authorization(value: str | None) -> dict[str, str]:
    """Exactly our Authorization value, or none at all."""
    return {"Authorization": value} if value else {}


@dataclass(frozen=True)
class _Cached:
    header: str = field(repr=False)
    deadline: float


class Authenticator:
    """Authorization for one registry endpoint (``host[:port]`` over ``scheme``)."""

    def __init__(
        self,
        client: HTTPClient,
        registry: str,
        *,
        scheme: str,
        credential: Credential | None,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry.lower()
        self.scheme = scheme
        self._client = client
        self._credential = credential
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._flights: dict[str, threading.Lock] = {}
        self._tokens: dict[tuple[str, str], _Cached] = {}
        self._basic: str | None = None
        #: What an auth error tells the user to do (``check_login`` asks to check the password).
        self.hint = f"run 'hybridstore login {_login_name(self.registry)}'"

    def __repr__(self) -> str:
        who = "anonymous" if self._credential is None else "with credentials"
        return f"Authenticator({self.scheme}://{self.registry}, {who})"

    @property
    def _secrets(self) -> tuple[str, ...]:
        cred = self._credential
        if cred is None:
            return ()
        encoded = base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()
        return (*cred.secrets(), encoded)

    def header_for(self, scope: str) -> str | None:
        """The Authorization value to send for ``scope`` now, or None to go without."""
        with self._lock:
            if self._basic is not None:
                return self._basic
            cached = self._tokens.get((self.registry, _scope_key(scope)))
            if cached is not None and cached.deadline > self._clock():
                return cached.header
            return None

    def on_unauthorized(self, response: Response, scope: str) -> str:
        """Answer a 401: the Authorization value to retry the request with."""
        self._check_origin(response)
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        by_scheme = {c.scheme: c for c in reversed(challenges)}  # first of each wins
        sent = response.request_headers.get("Authorization")
        if "bearer" in by_scheme:
            return self._bearer(by_scheme["bearer"], scope, sent)
        if "basic" in by_scheme:
            return self._basic_header(sent)
        if not challenges:
            raise AuthError(
                f"registry {self.registry} answered 401 without a WWW-Authenticate challenge"
            )
        schemes = ", ".join(sorted(by_scheme))
        raise AuthError(
            f"registry {self.registry} asks for unsupported authentication ({schemes}); "
            "only Bearer and Basic are supported"
        )

    def error_for(self, response: Response, scope: str) -> AuthError:
        """A clear error for a request that still fails with 401/403 after re-auth."""
        ch = next(iter(parse_challenges(response.headers.get("WWW-Authenticate", ""))), None)
        insufficient = ch is not None and ch.params.get("error") == "insufficient_scope"
        if insufficient or response.status_code == 403:
            wanted = " ".join(merge_scopes((ch.params.get("scope") if ch else None) or scope))
            return AuthError(
                f"insufficient scope: {self.registry} did not grant {wanted!r} "
                f"({self._who()}); check your permissions or {self.hint}"
            )
        if self._credential is None:
            return AuthError(f"authentication required for {self.registry}: {self.hint}")
        return AuthError(
            f"registry {self.registry} rejected the credentials ({self._who()}): {self.hint}"
        )

    # -- internals ------------------------------------------------------------------

    def _who(self) -> str:
        cred = self._credential
        if cred is None:
            return "anonymously"
        if cred.username:
            return f"as user {cred.username!r}"
        return "with the stored identity token"

    def _check_origin(self, response: Response) -> None:
        """A 401 is answered only for the registry itself, never for a redirect target
        (CVE-2020-15157: foreign hosts must not harvest our credentials)."""
        got = origin_of(response.url)
        want = origin_of(f"{self.scheme}://{self.registry}/")
        if got != want:
            raise AuthError(
                f"refusing to authenticate to {redact_url(response.url)}: it is not the "
                f"registry {self.registry}"
            )

    def _basic_header(self, sent: str | None) -> str:
        cred = self._credential
        if cred is None or not cred.has_password:
            if cred is not None:
                raise AuthError(
                    f"registry {self.registry} needs a user name and password, but only an "
                    f"identity token is stored: {self.hint}"
                )
            raise AuthError(f"authentication required for {self.registry}: {self.hint}")
        raw = f"{cred.username}:{cred.password}".encode()
        value = "Basic " + base64.b64encode(raw).decode()
        if sent == value:
            raise AuthError(
                f"registry {self.registry} rejected the credentials ({self._who()}): {self.hint}"
            )
        with self._lock:
            self._basic = value
        log.debug("auth: %s uses basic authentication", self.registry)
        return value

    def _bearer(self, ch: Challenge, scope: str, sent: str | None) -> str:
        realm = ch.params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.registry} sent a Bearer challenge without a realm")
        check_realm(realm, self.registry, self.scheme)
        key = _scope_key(scope)
        insufficient = ch.params.get("error") == "insufficient_scope"
        scopes = merge_scopes(scope, ch.params.get("scope", ""))
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:  # one token fetch per scope, however many requests got a 401
            with self._lock:
                cached = self._tokens.get((self.registry, key))
            now = self._clock()
            if (
                cached is not None
                and cached.deadline > now
                and cached.header != sent
                and not insufficient
            ):
                return cached.header
            token, lifetime = self._fetch_token(realm, ch.params.get("service"), scopes)
            header = f"Bearer {token}"
            margin = min(10.0, lifetime / 10)
            with self._lock:
                self._tokens[(self.registry, key)] = _Cached(header, now + lifetime - margin)
            return header

    def _fetch_token(self, realm: str, service: str | None, scopes: list[str]) -> tuple[str, float]:
        """Docker's token protocol: OAuth2 POST with an identity token; otherwise GET,
        with basic credentials when we have them (POST grant_type=password when the
        endpoint refuses GET with 404/405)."""
        cred = self._credential
        base: dict[str, str] = {"service": service} if service else {}
        log.debug(
            "auth: token for %s scope %r from %s (%s)",
            self.registry,
            " ".join(scopes),
            redact_url(realm),
            "anonymous" if cred is None else "with credentials",
        )
        if cred is not None and cred.identity_token:
            form = {
                **base,
                "grant_type": "refresh_token",
                "refresh_token": cred.identity_token,
                "client_id": CLIENT_ID,
                "scope": " ".join(scopes),
            }
            resp, body = self._token_request("POST", realm, None, form)
        else:
            query = [*base.items(), *(("scope", s) for s in scopes)]
            basic = None
            if cred is not None and cred.has_password:
                query.append(("account", cred.username or ""))
                raw = f"{cred.username}:{cred.password}".encode()
                basic = "Basic " + base64.b64encode(raw).decode()
            sep = "&" if "?" in realm else "?"
            url = realm + (sep + urlencode(query) if query else "")
            resp, body = self._token_request("GET", url, basic, None)
            if resp.status_code in (404, 405) and cred is not None and cred.has_password:
                form = {
                    **base,
                    "grant_type": "password",
                    "username": cred.username or "",
                    "password": cred.password or "",
                    "client_id": CLIENT_ID,
                    "scope": " ".join(scopes),
                }
                resp, body = self._token_request("POST", realm, None, form)
        return self._parse_token(resp, body, scopes)

    def _token_request(
        self, method: str, url: str, header: str | None, form: Mapping[str, str] | None
    ) -> tuple[Response, bytes]:
        """One token call, redirects followed by hand: a redirect must pass the realm
        checks, and credentials (header or form) never leave the realm's origin."""
        origin = origin_of(url)
        for _ in range(_MAX_HOPS + 1):
            headers = _authorization(header)
            if form is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            try:
                resp = self._client.request(
                    method,
                    url,
                    headers=headers,
                    body=urlencode(form).encode() if form is not None else None,
                    timeout=self._timeout,
                )
                body = _read_capped(resp)
            except TLSError as e:
                raise NetworkError(
                    f"TLS verification of token server {redact_url(url)} failed "
                    f"(registry {self.registry}: {e}): use --ca-file or --insecure"
                ) from None
            except TransportError as e:
                raise NetworkError(
                    f"cannot reach token server {redact_url(url)} for {self.registry}: {e}"
                ) from None
            if resp.status_code not in _REDIRECTS:
                return resp, body
            location = resp.headers.get("Location")
            if not location:
                raise RegistryError(f"token server {redact_url(url)} redirected without Location")
            url = join_url(url, location)
            check_realm(url, self.registry, "https" if origin[0] == "https" else self.scheme)
            if origin_of(url) != origin:
                if form is not None:
                    raise AuthError(
                        f"token server for {self.registry} redirected a credential POST to "
                        f"another host ({redact_url(url)}); refusing to resend it"
                    )
                header = None  # credentials stay with the realm's host
            if resp.status_code == 303:
                method, form = "GET", None
        raise RegistryError(f"token server for {self.registry}: more than {_MAX_HOPS} redirects")

    def _parse_token(self, resp: Response, body: bytes, scopes: list[str]) -> tuple[str, float]:
        host = redact_url(resp.url)
        if resp.status_code in (401, 403):
            message = _server_message(resp, body, self._secrets)
            if self._credential is None:
                raise AuthError(
                    f"authentication required for {self.registry} (token server {host}: "
                    f"{message}): {self.hint}"
                )
            raise AuthError(
                f"token server {host} refused the credentials for {self.registry} "
                f"({self._who()}): {message}; {self.hint}"
            )
        if resp.status_code != 200:
            message = _server_message(resp, body, self._secrets)
            raise RegistryError(
                f"token server {host} for {self.registry} answered {resp.status_code}: {message}"
            )
        try:
            doc = load_json_object(body, what="the token answer", limit=MAX_TOKEN_RESPONSE)
            token = doc.get("token") or doc.get("access_token")
        except InvalidDocumentError:
            token = None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise RegistryError(f"token server {host} for {self.registry} returned no usable token")
        lifetime = doc.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        log.debug(
            "auth: got token for %s scope %r, valid %g s", self.registry, " ".join(scopes), lifetime
        )
        return token, float(lifetime)


def _read_capped(resp: Response) -> bytes:
    """The token response, at most MAX_TOKEN_RESPONSE bytes."""
    try:
        body = read_capped(resp, MAX_TOKEN_RESPONSE)
    except TransportError as e:
        raise NetworkError(
            f"token server {redact_url(resp.url)}: the answer was cut short ({e})"
        ) from None
    finally:
        resp.close()
    if body is None:
        raise RegistryError(
            f"token server {redact_url(resp.url)} sent more than "
            f"{MAX_TOKEN_RESPONSE // 1024} KiB; refusing it"
        )
    return body


# -- login check ------------------------------------------------------------------------


def check_login(
    registry: str,
    credential: Credential | None,
    *,
    scheme: str = "https",
    verify: bool | str = True,
    timeout: float = 30.0,
    client: HTTPClient | None = None,
) -> str:
    """Prove ``credential`` works against ``registry`` (GET /v2/, answer the challenge,
    GET /v2/ again). Returns the scheme used: "none", "basic" or "bearer"."""
    endpoint = "registry-1.docker.io" if registry == "docker.io" else registry
    own = client is None
    if client is None:
        client = HTTPClient(verify=verify)
    try:
        auth = Authenticator(
            client, endpoint, scheme=scheme, credential=credential, timeout=timeout
        )
        auth.hint = "check the user name and password"
        url = f"{scheme}://{endpoint}/v2/"
        resp = _ping(client, url, None, registry, timeout)
        if resp.status_code == 200:
            log.debug("auth: %s does not ask for authentication", registry)
            return "none"
        if scheme == "http" and speaks_https(resp):
            raise RegistryError(https_hint(registry))
        if resp.status_code != 401:
            raise RegistryError(
                f"{registry} answered {resp.status_code} to GET /v2/: is it an OCI registry "
                "(and is --plain-http right)?"
            )
        header = auth.on_unauthorized(resp, "")
        kind = header.split(" ", 1)[0].lower()
        again = _ping(client, url, header, registry, timeout)
        if again.status_code == 200:
            return kind
        if again.status_code in (401, 403):
            raise auth.error_for(again, "")
        raise RegistryError(f"{registry} answered {again.status_code} to an authenticated GET /v2/")
    finally:
        if own:
            client.close()


def _ping(
    client: HTTPClient,
    url: str,
    header: str | None,
    registry: str,
    timeout: float,
) -> Response:
    """GET /v2/ following same-origin redirects only (credentials stay home)."""
    origin = origin_of(url)
    for _ in range(_MAX_HOPS + 1):
        try:
            resp = client.request("GET", url, headers=_authorization(header), timeout=timeout)
        except TLSError as e:
            if e.plain_http_peer:
                raise NetworkError(plain_http_hint(registry)) from None
            raise NetworkError(
                f"TLS verification of {registry} failed ({e}): use --ca-file with its CA, "
                "or --insecure"
            ) from None
        except TransportError as e:
            raise NetworkError(
                f"cannot reach {registry} over {origin[0]} ({e}): check the "
                "address and network, and --plain-http for a registry without TLS"
            ) from None
        if resp.status_code != 400:
            resp.close()  # a 400 may be a TLS port's answer: its body is read first
        if resp.status_code not in _REDIRECTS:
            return resp
        target = join_url(url, resp.headers.get("Location", ""))
        if origin_of(target) != origin:
            raise RegistryError(
                f"{registry} redirected /v2/ to another host ({redact_url(target)}); refusing"
            )
        url = target
    raise RegistryError(f"{registry}: more than {_MAX_HOPS} redirects on /v2/")

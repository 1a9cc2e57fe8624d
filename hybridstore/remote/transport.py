"""HTTP transport to one registry: auth, retries, redirects, error mapping.

Redirects are followed here, not by the HTTP client, so that ``Authorization`` never
crosses a host boundary, https never downgrades to http, and a non-local
registry cannot bounce us to a loopback address. Retries cover connection
errors, 408, 429 (honouring ``Retry-After``) and 5xx, bounded in count and in
total time; a request whose body cannot be replayed is never retried.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from hybridstore.errors import AuthError, NetworkError, NotFoundError, RegistryError
from hybridstore.oci.jsondoc import load_json
from hybridstore.remote.auth import Authenticator
from hybridstore.remote.credentials import Credential
from hybridstore.remote.http import (
    Body,
    HTTPClient,
    Response,
    TLSError,
    TransportError,
    https_hint,
    join_url,
    plain_http_hint,
    speaks_https,
)
from hybridstore.remote.safety import host_of, is_local_host, redact_url

__all__ = ["TransportOptions", "RegistryTransport", "new_client", "retry_after_seconds"]

log = logging.getLogger("hybridstore.remote")

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MAX_REDIRECTS = 10


@dataclass(frozen=True)
class TransportOptions:
    """How to talk to registries; one instance is shared by a whole command."""

    plain_http: bool = False
    insecure: bool = False
    ca_file: str | None = None
    timeout: float = 30.0
    """Seconds to connect, to wait for each read, and the window over which a body must
    average ``http.MIN_BODY_RATE``."""
    pool_size: int = 40
    """Connections kept per host: the streams of a transfer (``--concurrency`` large
    blobs plus the small-blob fan-out); verbs size it with ``with_streams``."""
    max_retries: int = 5
    retry_base: float = 0.25
    retry_cap: float = 10.0
    retry_total: float = 120.0
    registries_conf: str | None = None  # None: where the containers tools look
    mirrors: tuple[str, ...] = ()  # --mirror hosts, tried before registries.conf's
    retry_delay: float | None = None
    """A fixed pause between retries (``--retry-delay``) instead of exponential backoff."""

    def with_streams(self, streams: int) -> TransportOptions:
        """These options with pools for ``streams`` parallel transfers (and a few spare
        for manifests and tokens): no connection is opened only to be dropped."""
        return replace(self, pool_size=max(self.pool_size, streams + 4))

    @property
    def verify(self) -> bool | str:
        if self.insecure:
            return False
        return self.ca_file or True


def new_client(options: TransportOptions) -> HTTPClient:
    """One pooled client per command (no ``.netrc``, no cookies: only the credentials
    we resolve ever go out)."""
    return HTTPClient(verify=options.verify, pool_size=options.pool_size)


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """Parse ``Retry-After`` (delta seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), cap))


def registry_error_message(resp: Response) -> str:
    """The registry's own error text (OCI error body, read up to 64 KiB) or the HTTP reason."""
    try:
        body = load_json(resp.error_body(), what="error body", limit=None)
        errs = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errs, list) and errs:
            parts = []
            for e in errs[:3]:
                if isinstance(e, dict):
                    parts.append(f"{e.get('code', '')}: {e.get('message', '')}".strip(": "))
            if parts:
                return "; ".join(parts)
    except (ValueError, RecursionError):
        pass
    return f"{resp.status_code} {resp.reason}"


class RegistryTransport:
    """Requests to one registry endpoint (``host[:port]``), shared by its repositories."""

    def __init__(
        self,
        registry: str,
        options: TransportOptions,
        *,
        client: HTTPClient | None = None,
        credential: Credential | None = None,
        plain_http: bool | None = None,
    ) -> None:
        self.registry = registry
        self.options = options
        self.client = client or new_client(options)
        use_http = options.plain_http if plain_http is None else plain_http
        self.scheme = "http" if use_http else "https"
        self.base = f"{self.scheme}://{registry}"
        self.local = is_local_host(host_of(registry))
        self.auth = Authenticator(
            self.client,
            registry,
            scheme=self.scheme,
            credential=credential,
            timeout=options.timeout,
        )

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Body | None] | None = None,
        follow_redirects: bool = True,
        ok: tuple[int, ...] = (200,),
    ) -> Response:
        """Send with auth, retries and safe redirects; raise a hybridstore error unless
        the final status is in ``ok`` (404 -> NotFoundError, 401/403 -> AuthError)."""
        deadline = time.monotonic() + self.options.retry_total
        attempt = 0
        while True:
            try:
                resp = self._send_authorized(
                    method, url, scope, headers or {}, body, follow_redirects
                )
            except TLSError as e:
                if e.plain_http_peer:
                    raise NetworkError(
                        f"{method} {redact_url(url)}: {plain_http_hint(self.registry)}"
                    ) from None
                raise NetworkError(
                    f"{method} {redact_url(url)}: {e} for {self.registry}; use --ca-file "
                    "with its CA, or --insecure"
                ) from None
            except TransportError as e:
                if not self._may_retry(attempt, deadline, body is None or method == "GET"):
                    raise NetworkError(
                        f"{method} {redact_url(url)}: cannot reach {self.registry}: {e}; "
                        "check the address, network and --plain-http"
                    ) from None
                self._backoff(attempt, None)
                attempt += 1
                continue
            if resp.status_code in _RETRY_STATUS and self._may_retry(attempt, deadline, True):
                wait = retry_after_seconds(resp.headers.get("Retry-After"), self.options.retry_cap)
                log.debug("%s %s -> %d, retrying", method, redact_url(url), resp.status_code)
                resp.close()
                self._backoff(attempt, wait)
                attempt += 1
                continue
            if resp.status_code in ok:
                return resp
            raise self._error(method, url, scope, resp)

    def _may_retry(self, attempt: int, deadline: float, replayable: bool) -> bool:
        return replayable and attempt < self.options.max_retries and time.monotonic() < deadline

    def _backoff(self, attempt: int, wait: float | None) -> None:
        if wait is None and self.options.retry_delay is not None:
            wait = self.options.retry_delay
        if wait is None:
            base = min(self.options.retry_cap, self.options.retry_base * (2**attempt))
            wait = base * (0.5 + random.random() / 2)  # jitter
        time.sleep(wait)

    def _error(self, method: str, url: str, scope: str, resp: Response) -> Exception:
        where = f"{method} {redact_url(url)}"
        if self.scheme == "http" and speaks_https(resp):
            resp.close()
            return RegistryError(f"{where}: {https_hint(self.registry)}")
        msg = registry_error_message(resp)
        resp.close()
        challenge = resp.headers.get("WWW-Authenticate", "")
        if resp.status_code == 401 or (
            resp.status_code == 403 and "insufficient_scope" in challenge
        ):
            return self.auth.error_for(resp, scope)
        if resp.status_code == 403:
            return AuthError(
                f"{where}: {self.registry} denied access ({msg}); check your permissions "
                f"or {self.auth.hint}"
            )
        if resp.status_code == 404:
            return NotFoundError(f"{where}: not found ({msg})")
        return RegistryError(f"{where}: registry {self.registry} answered {msg}")

    def _send_authorized(
        self,
        method: str,
        url: str,
        scope: str,
        headers: Mapping[str, str],
        body: Callable[[], Body | None] | None,
        follow_redirects: bool,
    ) -> Response:
        auth_header = self.auth.header_for(scope)
        reauthed = False
        while True:
            h = dict(headers)
            if auth_header:
                h["Authorization"] = auth_header
            resp = self._request(method, url, h, body)
            if resp.status_code == 401 and not reauthed:
                reauthed = True
                auth_header = self.auth.on_unauthorized(resp, scope)
                resp.close()
                continue
            if follow_redirects and resp.status_code in (301, 302, 303, 307, 308):
                return self._follow(method, url, resp, headers, auth_header)
            return resp

    def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Callable[[], Body | None] | None,
    ) -> Response:
        log.debug("%s %s", method, redact_url(url))
        return self.client.request(
            method,
            url,
            headers=headers,
            body=body() if body else None,
            timeout=self.options.timeout,
        )

    def _follow(
        self,
        method: str,
        url: str,
        resp: Response,
        headers: Mapping[str, str],
        auth_header: str | None,
    ) -> Response:
        """Follow redirects (GET/HEAD only). Credentials stay with the registry host."""
        origin = urlsplit(url)
        for _ in range(_MAX_REDIRECTS):
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise RegistryError(f"{method} {redact_url(url)}: redirect without Location")
            url = join_url(url, location)
            target = urlsplit(url)
            if target.scheme not in ("http", "https"):
                raise RegistryError(f"refusing redirect to non-HTTP URL {redact_url(url)}")
            if origin.scheme == "https" and target.scheme != "https":
                raise RegistryError(
                    f"refusing redirect from https to {target.scheme}: {redact_url(url)}"
                )
            if not self.local and is_local_host(target.hostname or ""):
                raise RegistryError(f"refusing redirect to a local address: {redact_url(url)}")
            same = (target.scheme, target.netloc) == (origin.scheme, origin.netloc)
            h = dict(headers)
            if same and auth_header:
                h["Authorization"] = auth_header
            resp = self._request(method, url, h, None)
            if resp.status_code not in (301, 302, 303, 307, 308):
                return resp
        resp.close()
        raise RegistryError(f"{method}: more than {_MAX_REDIRECTS} redirects")

"""Run the CNCF distribution registry (Debian ``docker-registry``, 2.8) for tests.

A ``Registry`` owns one ``docker-registry serve`` process on a free loopback
port with filesystem storage in its own directory. ``RegistryConfig`` selects
the variant: plain HTTP, htpasswd basic auth, token auth, TLS, read-only, or a
pull-through cache.

Logs: distribution 2.8 writes its application log (logrus) to stderr and the
HTTP access log (gorilla's combined log format) to stdout, one ``write`` per
request after the handler returns. ``stdout`` goes to ``access.log`` and
``stderr`` to ``registry.log`` in the work directory.

Counting requests reliably: a client can see the last byte of a response before
the registry has written that request's access-log line (bodies are streamed
straight to the socket; the line is written when the handler returns). So
``access_log_requests()`` first sends a *barrier* request on a fresh connection
and waits (bounded poll) until the barrier's own line is in the log. The
barrier is issued after the caller's requests completed and takes a whole new
TCP round trip, so the lines of those earlier requests are on disk by then.
Barrier and readiness probes carry a marker User-Agent and are filtered out.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import bcrypt
import requests

from . import free_port, require_binary
from .tls import CertificateAuthority
from .tokenserver import TokenServer, TokenServerConfig

__all__ = [
    "AccessLogEntry",
    "BasicAuth",
    "ChallengeAuth",
    "Registry",
    "RegistryConfig",
    "RegistryFactory",
    "RegistryStartError",
    "TLSFiles",
    "TokenAuth",
    "write_htpasswd",
]

BINARY = "docker-registry"
PROBE_USER_AGENT = "hybridstore-tests-probe"
START_TIMEOUT = 60.0  # safety nets only: generous for a loaded 2-core CI box
STOP_TIMEOUT = 5.0
BARRIER_TIMEOUT = 30.0
_POLL = 0.01

# 127.0.0.1 - - [29/Nov/2026:08:33:03 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_COMBINED = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>\S+) (?P<target>\S+) (?P<proto>[^"]+)" (?P<status>\d{3}) (?P<size>\d+|-)'
    r' "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"$'
)


class RegistryStartError(RuntimeError):
    """The registry process did not come up; the message holds its log tail."""


class AccessLogEntry(NamedTuple):
    """One access-log line: compares equal to a ``(method, path, status)`` tuple.

    ``path`` is the request target as sent, query string included.
    """

    method: str
    path: str
    status: int


@dataclass(frozen=True)
class BasicAuth:
    """htpasswd basic auth; ``users`` maps user name to clear-text password."""

    users: Mapping[str, str] = field(default_factory=lambda: {"alice": "alice-s3cret-pw"})
    realm: str = "hybridstore-test-basic"


@dataclass(frozen=True)
class TokenAuth:
    """Bearer token auth against a token server (see ``tokenserver.TokenServer``)."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class TLSFiles:
    """Server certificate and key for the registry, and the CA clients must trust."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class RegistryConfig:
    """Which registry variant to run. The default is plain HTTP, no auth, delete enabled.

    ``extra`` is deep-merged into the generated configuration last, for the odd
    test that needs a setting not modelled here.
    """

    basic_auth: BasicAuth | None = None
    token_auth: TokenAuth | None = None
    tls: TLSFiles | None = None
    delete_enabled: bool = True
    read_only: bool = False
    proxy_remote_url: str | None = None
    proxy_username: str | None = None
    proxy_password: str | None = None
    log_level: str = "info"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.basic_auth is not None and self.token_auth is not None:
            raise ValueError("choose basic_auth or token_auth, not both")


def write_htpasswd(path: Path, users: Mapping[str, str]) -> Path:
    """Write an htpasswd file with bcrypt hashes (the only scheme distribution accepts).

    Cost 4 is bcrypt's minimum: the registry checks it on every request, and
    tests do not need brute-force resistance.
    """
    lines = [
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, pw in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _loopback_session() -> requests.Session:
    """A session that ignores proxy and CA environment variables (everything is loopback)."""
    s = requests.Session()
    s.trust_env = False
    return s


class ChallengeAuth(requests.auth.AuthBase):
    """Answer a registry's ``401`` the way a client would, for test-side plumbing.

    Basic challenge: resend with the credentials. Bearer challenge: fetch a
    token from the realm (``GET ?service=&scope=``, credentials as basic auth
    if any), resend with it, and send that token up front afterwards until a
    401 asks for a new one. Bodies must be bytes (they are resent).

    This is test infrastructure, not the product's auth: it exists so tests can
    seed and inspect auth-protected registries independently of hybridstore.
    """

    def __init__(self, credentials: tuple[str, str] | None, *, verify: bool | str = True) -> None:
        self.credentials = credentials
        self.verify = verify
        self._header: str | None = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._header is not None:
            request.headers["Authorization"] = self._header
        request.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or getattr(response.request, "_challenge_retry", False):
            return response
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic" and self.credentials is not None:
            self._header = requests.auth._basic_auth_str(*self.credentials)
        elif scheme == "bearer" and "realm" in params:
            self._header = "Bearer " + self.fetch_token(params)
        else:
            return response
        retry = response.request.copy()
        retry.headers["Authorization"] = self._header
        retry._challenge_retry = True  # type: ignore[attr-defined]
        response.content  # noqa: B018 - drain so the connection can be reused
        response.close()
        assert response.connection is not None
        new = response.connection.send(retry, **kwargs)
        new.history.append(response)
        new.request = retry
        return new

    def fetch_token(self, params: Mapping[str, str]) -> str:
        query = {k: params[k] for k in ("service", "scope") if k in params}
        with _loopback_session() as s:
            resp = s.get(
                params["realm"], params=query, auth=self.credentials, verify=self.verify, timeout=10
            )
        resp.raise_for_status()
        body = resp.json()
        return str(body.get("token") or body["access_token"])


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


class Registry:
    """One ``docker-registry`` process. ``start()``/``stop()`` or use as a context manager.

    ``workdir`` holds ``config.yml``, ``data/`` (storage root), ``registry.log``,
    ``access.log`` and, for basic auth, ``htpasswd``.
    """

    def __init__(self, workdir: Path, config: RegistryConfig | None = None) -> None:
        self.workdir = workdir
        self.config = config or RegistryConfig()
        self.storage_dir = workdir / "data"
        self.config_path = workdir / "config.yml"
        self.log_path = workdir / "registry.log"
        self.access_log_path = workdir / "access.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        #: (user, password) a test should use, or None for anonymous registries.
        self.credentials: tuple[str, str] | None = None
        if self.config.basic_auth is not None:
            self.credentials = next(iter(self.config.basic_auth.users.items()), None)
        #: The token server behind a token-auth registry (set by whoever started both).
        self.token_server: Any = None

    # -- addresses ---------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.config.tls is not None else "http"

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``: the registry part of a reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_port}"

    @property
    def ca_path(self) -> Path | None:
        return self.config.tls.ca if self.config.tls is not None else None

    @property
    def verify(self) -> bool | str:
        """The ``verify=`` value for ``requests`` against this registry."""
        return str(self.ca_path) if self.ca_path is not None else True

    def ref(self, repository: str, tag_or_digest: str = "latest") -> str:
        """A full reference ``127.0.0.1:PORT/repo:tag`` (or ``@sha256:...``)."""
        sep = "@" if ":" in tag_or_digest else ":"
        return f"{self.host_port}/{repository}{sep}{tag_or_digest}"

    def session(self, credentials: tuple[str, str] | None | bool = True) -> requests.Session:
        """A ``requests`` session trusting the registry's CA that answers auth challenges.

        ``credentials=True`` uses ``self.credentials``; ``None``/``False`` stays
        anonymous (bearer registries still get anonymous tokens); a tuple
        overrides. Basic and bearer challenges are both handled (``ChallengeAuth``).
        """
        creds = self.credentials if credentials is True else credentials or None
        # trust_env=False: with REQUESTS_CA_BUNDLE set (it is on many CI images) requests
        # would silently prefer it over ``s.verify``; and loopback must never go to a proxy.
        s = _loopback_session()
        s.verify = self.verify
        s.auth = ChallengeAuth(creds, verify=self.verify)
        return s

    # -- configuration -----------------------------------------------------------------
    def render_config(self) -> dict[str, Any]:
        cfg = self.config
        doc: dict[str, Any] = {
            "version": 0.1,
            "log": {
                "level": cfg.log_level,
                "formatter": "text",
                "accesslog": {"disabled": False},
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": cfg.delete_enabled},
                "maintenance": {
                    "uploadpurging": {"enabled": False},
                    "readonly": {"enabled": cfg.read_only},
                },
            },
            "http": {
                "addr": self.host_port,
                "secret": secrets.token_hex(16),
            },
        }
        if cfg.tls is not None:
            doc["http"]["tls"] = {"certificate": str(cfg.tls.cert), "key": str(cfg.tls.key)}
        if cfg.basic_auth is not None:
            htpasswd = write_htpasswd(self.workdir / "htpasswd", cfg.basic_auth.users)
            doc["auth"] = {"htpasswd": {"realm": cfg.basic_auth.realm, "path": str(htpasswd)}}
        if cfg.token_auth is not None:
            ta = cfg.token_auth
            doc["auth"] = {
                "token": {
                    "realm": ta.realm,
                    "service": ta.service,
                    "issuer": ta.issuer,
                    "rootcertbundle": str(ta.rootcertbundle),
                }
            }
        if cfg.proxy_remote_url is not None:
            proxy: dict[str, Any] = {"remoteurl": cfg.proxy_remote_url}
            if cfg.proxy_username is not None:
                proxy["username"] = cfg.proxy_username
                proxy["password"] = cfg.proxy_password or ""
            doc["proxy"] = proxy
        return _merge(doc, cfg.extra)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, attempts: int = 3) -> Registry:
        """Start and wait until ``GET /v2/`` answers; retry on a port lost to a race."""
        binary = require_binary(BINARY)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        for attempt in range(attempts):
            self.port = free_port()
            # YAML is a superset of JSON, so no YAML library is needed.
            self.config_path.write_text(json.dumps(self.render_config(), indent=2))
            with open(self.access_log_path, "ab") as out, open(self.log_path, "ab") as err:
                self.process = subprocess.Popen(
                    [binary, "serve", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=self.workdir,
                    # distribution reads REGISTRY_<SECTION>_<KEY> as config overrides: the
                    # podman/skopeo REGISTRY_AUTH_FILE would become "auth: file: ...".
                    env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
                    start_new_session=True,
                )
            try:
                self._wait_ready()
                return self
            except RegistryStartError as exc:
                self.stop()
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RegistryStartError(
                    f"docker-registry exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                self._probe("/v2/", timeout=1.0)
                return
            # A slow first answer on a loaded machine (ReadTimeout) is "not ready yet" too,
            # not a failed start: keep polling until START_TIMEOUT.
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(_POLL)  # bounded readiness poll, not synchronisation
        raise RegistryStartError(
            f"docker-registry did not answer within {START_TIMEOUT}s:\n{self.log_tail()}"
        )

    def _probe(self, path: str, timeout: float = 5.0) -> int:
        with _loopback_session() as s:
            resp = s.get(
                self.url + path,
                headers={"User-Agent": PROBE_USER_AGENT, "Connection": "close"},
                verify=self.verify,
                timeout=timeout,
            )
            resp.close()
        return resp.status_code

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL; only this registry's own pid is signalled."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- storage -------------------------------------------------------------------------
    def blob_stored(self, digest: str) -> bool:
        """Whether ``digest`` is in this registry's own storage (filesystem driver)."""
        alg, _, hexpart = digest.partition(":")
        data = self.storage_dir / "docker/registry/v2/blobs" / alg / hexpart[:2] / hexpart / "data"
        return data.is_file()

    def wait_blobs_stored(self, digests: Iterator[str] | list[str]) -> None:
        """Bounded poll until every digest is stored: a pull-through cache stores a
        missed blob in the background after it has answered the client."""
        pending = list(digests)
        deadline = time.monotonic() + BARRIER_TIMEOUT
        while pending and time.monotonic() < deadline:
            pending = [d for d in pending if not self.blob_stored(d)]
            if pending:
                time.sleep(_POLL)  # bounded poll for a condition, not synchronisation
        if pending:
            raise AssertionError(f"registry never stored {pending}")

    # -- access log --------------------------------------------------------------------
    def access_log_mark(self) -> int:
        """Flush pending lines (barrier) and return the log offset: pass it as ``since``."""
        self._barrier()
        return self.access_log_path.stat().st_size

    def access_log_requests(self, since: int = 0) -> list[AccessLogEntry]:
        """Requests the registry logged after byte offset ``since``, oldest first.

        Sends a barrier request first so that every request the caller has
        completed is in the log (see the module docstring). Probe and barrier
        requests are left out.
        """
        self._barrier()
        return [
            AccessLogEntry(m["method"], m["target"], int(m["status"]))
            for m in self._access_lines(since)
            if m["agent"] != PROBE_USER_AGENT
        ]

    def count_requests(self, method: str, path_regex: str, since: int = 0) -> int:
        """How many logged requests match ``method`` and fully match ``path_regex``."""
        rx = re.compile(path_regex)
        return sum(
            1
            for e in self.access_log_requests(since)
            if e.method == method and rx.fullmatch(e.path)
        )

    def _access_lines(self, since: int) -> Iterator[re.Match[str]]:
        with open(self.access_log_path, "rb") as f:
            f.seek(since)
            data = f.read()
        for raw in data.decode("utf-8", "replace").splitlines():
            m = _COMBINED.match(raw)
            if m is not None:
                yield m

    def _barrier(self) -> None:
        if not self.running:
            return  # a stopped registry writes nothing more; the log is complete
        marker = uuid.uuid4().hex
        start = self.access_log_path.stat().st_size
        self._probe(f"/v2/?hybridstore-barrier={marker}")
        needle = f"hybridstore-barrier={marker}".encode()
        deadline = time.monotonic() + BARRIER_TIMEOUT
        while time.monotonic() < deadline:
            with open(self.access_log_path, "rb") as f:
                f.seek(start)
                if needle in f.read():
                    return
            time.sleep(_POLL)  # bounded poll for the barrier's own log line
        raise AssertionError(f"registry access log never showed barrier {marker}")


class RegistryFactory:
    """Start registry variants on demand and stop them all in ``close()``.

    One CA (``ca``) signs the TLS certificates and the token-signing
    certificate, so a client needs exactly one CA file (``registry.ca_path``).
    For ``auth="token"`` a ``TokenServer`` is started first (HTTPS when the
    registry is TLS, so the realm never downgrades) and hung on
    ``registry.token_server``; ``registry.credentials`` is its first user.
    """

    def __init__(self, workdir: Path, ca: CertificateAuthority | None = None) -> None:
        self.workdir = workdir
        self.ca = ca or CertificateAuthority()
        self._started: list[Registry | TokenServer] = []
        self._count = 0

    def __call__(
        self,
        *,
        auth: Literal["none", "basic", "token"] = "none",
        tls: bool = False,
        basic: BasicAuth | None = None,
        token: TokenServerConfig | None = None,
        **config: Any,
    ) -> Registry:
        self._count += 1
        workdir = self.workdir / f"registry-{self._count}-{auth}{'-tls' if tls else ''}"
        workdir.mkdir(parents=True)
        tls_files = self._tls_files(workdir) if tls else None
        token_server = None
        if auth == "basic":
            config["basic_auth"] = basic or BasicAuth()
        elif auth == "token":
            ssl_context = None
            if tls_files is not None:
                ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ssl_context.load_cert_chain(tls_files.cert, tls_files.key)
            token_server = TokenServer(workdir, token, ca=self.ca, ssl_context=ssl_context)
            token_server.start()
            self._started.append(token_server)
            config["token_auth"] = TokenAuth(
                realm=token_server.realm,
                service=token_server.config.service,
                issuer=token_server.config.issuer,
                rootcertbundle=token_server.rootcertbundle,
            )
        reg = Registry(workdir, RegistryConfig(tls=tls_files, **config))
        if token_server is not None:
            reg.token_server = token_server
            reg.credentials = next(iter(token_server.config.users.items()), None)
        reg.start()
        self._started.append(reg)
        return reg

    def _tls_files(self, workdir: Path) -> TLSFiles:
        cert, key = self.ca.issue_server().write(workdir, "server")
        return TLSFiles(cert=cert, key=key, ca=self.ca.write_cert(workdir / "ca.crt"))

    def close(self) -> None:
        """Stop everything started, newest first (registries before their token servers)."""
        while self._started:
            self._started.pop().stop()

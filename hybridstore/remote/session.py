"""The requests layer: one ``requests.Session`` per ``HTTPClient``, sent through
directly to its adapter, with errors mapped to ``TransportError``.

Only ``http.HTTPClient`` imports this module, on a command's first request, so
commands that never talk to a registry never load requests (issue 16).

What is taken from requests: connection pooling (``HTTPAdapter``, sized by the
caller to the transfer's parallel streams), TLS, proxies (``NO_PROXY`` with
CIDR and port entries; ``https://`` proxies get TLS to the proxy), chunked
bodies. What is not, on purpose:

- ``Session.send`` is bypassed: it follows redirects (and, even when told not
  to, reads a redirect's whole body and parses its ``Location``), stores
  cookies and consults ``.netrc``. Redirects, retries and auth are ours
  (``transport.py``, ``auth.py``); only the credentials we resolve go out.
- Trust is the platform's: an ``ssl.SSLContext`` from
  ``ssl.create_default_context`` (the system store, ``SSL_CERT_FILE`` and
  ``SSL_CERT_DIR`` honoured; ``--ca-file`` trusts only its CA), mounted on the
  adapter, instead of requests' certifi bundle, which ignores a CA an admin
  installed. The adapter never loads a bundle on top of it.
- Bodies are read raw (``decode_content=False``) with ``Accept-Encoding:
  identity``: a digest names the bytes on the wire.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import warnings
from collections.abc import Mapping
from typing import Any, Final

import requests
import requests.adapters
import requests.utils
import urllib3
import urllib3.exceptions

from hybridstore.remote.neterrors import TLSError, TransportError

__all__ = ["Refused", "new_session", "read_some", "send"]

_BLOCK: Final = 1 << 20  # socket writes of streamed request bodies
# OpenSSL's reasons when the peer answered a ClientHello in plain text (3.0; 3.2+).
_PLAIN_PEER: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)


class Refused(Exception):
    """requests would not send this (an invalid URL or header): retrying cannot help."""


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


class _TrustAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose pools use our TLS context (pip's pattern), with
    1 MiB socket writes for request bodies. The context is made on the first https
    request: loading a trust store costs milliseconds a plain-HTTP pull need not pay."""

    def __init__(self, verify: bool | str, pool_size: int) -> None:
        self._verify = verify
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        super().__init__(pool_connections=8, pool_maxsize=pool_size, max_retries=0)

    def _tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = _tls_context(self._verify)
                self.poolmanager.connection_pool_kw["ssl_context"] = self._context
            return self._context

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(blocksize=_BLOCK)
        super().init_poolmanager(*args, **kwargs)

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        if (request.url or "").lower().startswith("https:"):
            self._tls()
        return super().get_connection_with_tls_context(request, verify, proxies, cert)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs.update(ssl_context=self._tls(), blocksize=_BLOCK)
        if proxy.lower().startswith("https:"):  # TLS to the proxy: the system's trust
            proxy_kwargs["proxy_ssl_context"] = ssl.create_default_context()
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would load certifi's bundle into our context here; the context
        # already holds the trust we want, so only say whether to check.
        conn.cert_reqs = "CERT_REQUIRED" if verify else "CERT_NONE"


def new_session(verify: bool | str, pool_size: int, user_agent: str) -> requests.Session:
    """A session for one command: no environment (no ``.netrc``, no ``REQUESTS_CA_BUNDLE``;
    proxies are looked up per request), our headers, our adapter for both schemes."""
    session = requests.Session()
    session.trust_env = False
    session.headers.clear()
    session.headers.update({"User-Agent": user_agent, "Accept-Encoding": "identity"})
    adapter = _TrustAdapter(verify, pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if verify is False:  # asked for with --insecure: not worth a warning per connection
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    return session


def _proxies(url: str) -> dict[str, str]:
    """``<scheme>_proxy`` from the environment unless ``no_proxy`` covers the URL."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return {}
    return dict(requests.utils.get_environ_proxies(url))


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Any,
    timeout: float,
    verify: bool,
) -> requests.Response:
    """One request, status and headers read, body left on the wire."""
    try:
        prepared = session.prepare_request(
            requests.Request(method, url, headers=dict(headers), data=body)
        )
    except (requests.exceptions.RequestException, ValueError) as e:
        raise Refused(str(e)) from None
    adapter, proxies = session.get_adapter(url), _proxies(url)
    replayable = body is None or isinstance(body, bytes)
    for attempt in (1, 2):
        try:
            return adapter.send(
                prepared, stream=True, timeout=(timeout, timeout), verify=verify, proxies=proxies
            )
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader) as e:
            raise Refused(str(e)) from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            if attempt == 1 and replayable and _stale(e):
                continue  # a kept-alive connection the server had just closed: once more
            raise reason(e) from None
        except (http.client.HTTPException, ValueError) as e:
            raise Refused(str(e)) from None
    raise AssertionError("unreachable")


def _stale(e: BaseException) -> bool:
    """What sending on a pooled connection the server closed a moment ago raises (the
    pool's check before reuse can race with the server's FIN)."""
    stale = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
    return any(isinstance(c, stale) for c in _chain(e))


def read_some(raw: urllib3.BaseHTTPResponse, n: int) -> bytes:
    """At most ``n`` bytes of the body as sent, after at most one socket read: a slow
    body is seen as slow, not waited on until ``n`` bytes came."""
    try:
        return raw.read1(n, decode_content=False)
    except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as e:
        raise reason(e) from None


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and what it wraps (requests and urllib3 nest the socket error two deep)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [e]
    while todo:
        cur = todo.pop(0)
        if cur is None or any(cur is s for s in seen) or len(seen) > 10:
            continue
        seen.append(cur)
        todo.extend(a for a in cur.args if isinstance(a, BaseException))
        wrapped = getattr(cur, "reason", None)  # MaxRetryError's; ssl.SSLError's is a str
        todo.extend([wrapped if isinstance(wrapped, BaseException) else None])
        todo.extend([cur.__cause__, cur.__context__])
    return seen


def reason(e: BaseException) -> TransportError:
    """One ``TransportError`` for whatever requests, urllib3, TLS or the socket raised."""
    chain = _chain(e)
    for c in chain:
        if isinstance(c, ssl.SSLError):
            code = getattr(c, "reason", None)
            detail = getattr(c, "verify_message", None) or code or c
            return TLSError(f"TLS failed: {detail}", plain_http_peer=code in _PLAIN_PEER)
    kinds = tuple(type(c) for c in chain)

    def has(*types: type[BaseException]) -> bool:
        return any(issubclass(k, types) for k in kinds)

    if has(urllib3.exceptions.ProxyError, requests.exceptions.ProxyError):
        return TransportError(f"cannot use the proxy ({_leaf(chain)})")
    if has(urllib3.exceptions.NameResolutionError):
        return TransportError("cannot resolve the host name")
    if has(urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError, for history
        return TransportError(_leaf(chain))
    if has(TimeoutError, urllib3.exceptions.TimeoutError, requests.exceptions.Timeout):
        return TransportError("timed out")
    if has(http.client.IncompleteRead, urllib3.exceptions.IncompleteRead):
        return TransportError("the connection closed in the middle of the body")
    if has(http.client.RemoteDisconnected):
        return TransportError("the server closed the connection without answering")
    if has(urllib3.exceptions.InvalidChunkLength, requests.exceptions.ChunkedEncodingError):
        return TransportError("invalid chunked body")
    if has(http.client.HTTPException, urllib3.exceptions.ProtocolError):
        return TransportError(f"invalid HTTP answer ({_leaf(chain)})")
    return TransportError(_leaf(chain))


def _leaf(chain: list[BaseException]) -> str:
    """The innermost OS reason (``connection refused``), else the innermost type name."""
    for c in reversed(chain):
        if isinstance(c, OSError) and c.strerror:
            return c.strerror.lower()
    return type(chain[-1]).__name__

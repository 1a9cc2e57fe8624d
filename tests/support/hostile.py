"""A hostile registry for the remote commands: one small ORAS artifact served right,
or wrong in one chosen way (``HostileRegistry.mode``).

The misbehaviours are those a registry, a proxy in between or an attacker can
produce (issue 21): bodies that never end or end early, lengths that lie,
malformed headers and URLs, deeply nested JSON, redirect and realm tricks, and
trickling bodies. Endless bodies are long enough (``FLOOD`` bytes) that a client
reading them whole would blow any memory bound a test asserts, and end there,
so a misbehaving client cannot hang a test. Everything else is served as
distribution does, so a command that survives a fault can be shown to have
left a cache and layout that verify.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Final

from . import LoopbackServer, QuietHandler
from .oci_builder import Blob, canonical_json

__all__ = ["FLOOD", "MODES", "HostileRegistry"]

FLOOD: Final = 256 << 20
REPO: Final = "evil/app"
_ARTIFACT = "application/vnd.example.hostile"

MODES: Final = (
    "none",  # a well-behaved registry
    "endless-error",  # 404 whose body never ends (chunked); HEAD refused
    "truncated-error",  # 500 whose body stops short of its Content-Length; HEAD refused
    "endless-tags",  # a tag list that never ends
    "truncated-tags",  # a tag list cut short
    "endless-manifest",  # a manifest by tag without Content-Length, never ending
    "long-blob",  # the blob, then garbage without end (no Content-Length)
    "short-blob-length",  # Content-Length smaller than the blob
    "truncated-blob",  # the connection drops mid-blob, every time
    "garbage-status",  # not HTTP at all
    "bad-content-length",  # Content-Length: abc
    "location-bad-ipv6",  # 307 to http://[::1/...
    "location-bad-port",  # 307 to http://127.0.0.1:99999/...
    "redirect-loop",  # 307 to itself, forever
    "realm-bad-url",  # 401 with a realm that is no URL
    "endless-token",  # a token server whose answer never ends
    "deep-json-tags",  # a tag list nested 100 000 deep
    "trickle-blob",  # the blob at a few bytes per tick
    "deep-json-manifest",  # a manifest nested 100 000 deep
)


class HostileRegistry:
    """``/v2/evil/app``: tag ``v1``, an artifact of one 64 KiB layer and an empty config."""

    def __init__(self) -> None:
        self.mode = "none"
        self.layer = Blob("application/octet-stream", hashlib.sha256(b"seed").digest() * 2048)
        self.config = Blob("application/vnd.oci.empty.v1+json", b"{}")
        self.manifest = Blob(
            "application/vnd.oci.image.manifest.v1+json",
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": _ARTIFACT,
                    "config": self.config.descriptor(),
                    "layers": [self.layer.descriptor()],
                }
            ),
        )
        self.stop = threading.Event()  # ends trickles when the test is over
        self._server = LoopbackServer(_Handler, self)

    @property
    def host_port(self) -> str:
        return self._server.host_port

    @property
    def ref(self) -> str:
        return f"{self.host_port}/{REPO}:v1"

    @property
    def digest_ref(self) -> str:
        return f"{self.host_port}/{REPO}@{self.manifest.digest}"

    def __enter__(self) -> HostileRegistry:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._server.stop()


class _Handler(QuietHandler):
    app: HostileRegistry

    # -- helpers ------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str = "application/json", **hdr: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for k, v in hdr.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.close_connection = True

    def _flood(self, status: int, first: bytes, filler: bytes, chunked: bool = True) -> None:
        """``first`` then ``filler`` until ``FLOOD`` bytes or the client hangs up."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        block = filler * max(1, (64 << 10) // len(filler))
        write: Callable[[bytes], None] = (
            (lambda b: self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b)))
            if chunked
            else self.wfile.write
        )
        write(first)
        sent = len(first)
        while sent < FLOOD:
            write(block)
            sent += len(block)

    def _cut(self, status: int, body: bytes, keep: int, **hdr: str) -> None:
        """Headers promising ``body``, then ``keep`` bytes of it, then a hang-up."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in hdr.items():
            self.send_header(k, v)
        self.end_headers()
        self._raw(body[:keep])

    # -- routes -------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        app, mode, path = self.app, self.app.mode, self.path.split("?", 1)[0]
        if path.startswith("/token"):
            if mode == "endless-token":
                return self._flood(200, b'{"token":"', b"x")
            return self._send(200, b'{"token":"t"}')
        if mode in ("endless-error", "truncated-error") and path.startswith("/v2/evil"):
            if self.command == "HEAD":
                return self._send(405, b"")  # make the client GET, and read the body
            if mode == "endless-error":
                return self._flood(404, b'{"errors":[{"code":"NOT_FOUND","message":"', b"x")
            return self._cut(500, b'{"errors":[{"code":"UNKNOWN","message":"' + b"x" * 999, 10)
        if mode == "garbage-status":
            return self._raw(b"SPDY/9 what\r\n\r\n")
        if mode == "bad-content-length":
            return self._raw(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}")
        if mode == "realm-bad-url" and "Authorization" not in self.headers:
            return self._send(401, b"", WWW_Authenticate='Bearer realm="http://[::1:5000/token"')
        if mode == "endless-token" and "Authorization" not in self.headers:
            realm = f"http://{app.host_port}/token"
            return self._send(401, b"", WWW_Authenticate=f'Bearer realm="{realm}",service="x"')
        if mode.startswith("location-") or mode == "redirect-loop":
            where = {
                "location-bad-ipv6": "http://[::1/v2/x",
                "location-bad-port": "http://127.0.0.1:99999/v2/x",
                "redirect-loop": self.path,
            }[mode]
            return self._send(307, b"", Location=where)
        if path == "/v2/":
            return self._send(200, b"{}")
        prefix = f"/v2/{REPO}/"
        if not path.startswith(prefix):
            return self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}')
        kind, _, name = path[len(prefix) :].partition("/")
        if kind == "tags":
            return self._tags(mode)
        if kind == "manifests" and name in ("v1", app.manifest.digest):
            return self._manifest(mode, name)
        if kind == "blobs" and name in (app.layer.digest, app.config.digest):
            blob = app.layer if name == app.layer.digest else app.config
            return self._blob(mode, blob)
        return self._send(404, b'{"errors":[{"code":"NOT_FOUND","message":"no"}]}')

    def _tags(self, mode: str) -> None:
        body = b'{"name":"evil/app","tags":["v1"]}'
        if mode == "endless-tags":
            return self._flood(200, b'{"name":"evil/app","tags":["v1"', b',"v1"')
        if mode == "truncated-tags":
            return self._cut(200, body, 10)
        if mode == "deep-json-tags":
            deep = b"[" * 100_000 + b"]" * 100_000
            return self._send(200, b'{"tags":' + deep + b"}")
        return self._send(200, body)

    def _manifest(self, mode: str, name: str) -> None:
        m = self.app.manifest
        if mode == "endless-manifest" and name == "v1" and self.command == "GET":
            return self._flood(200, m.data, b" ", chunked=False)
        if mode == "endless-manifest" and self.command == "HEAD":
            return self._send(405, b"")  # make the client GET by tag
        if mode == "deep-json-manifest":
            if self.command == "HEAD":
                return self._send(405, b"")  # make the client GET by tag
            m = Blob(m.media_type, b'{"config":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        return self._send(200, m.data, m.media_type, Docker_Content_Digest=m.digest)

    def _blob(self, mode: str, blob: Blob) -> None:
        if blob is not self.app.layer or mode == "none":
            return self._send(200, blob.data, "application/octet-stream")
        if mode == "long-blob":
            return self._flood(200, blob.data, b"\0", chunked=False)
        if mode == "short-blob-length":
            self.send_response(200)
            self.send_header("Content-Length", str(blob.size - 100))
            self.end_headers()
            return self._raw(blob.data)
        if mode == "truncated-blob":
            return self._cut(200, blob.data, blob.size // 2)
        if mode == "trickle-blob":
            self.send_response(200)
            self.send_header("Content-Length", str(blob.size))
            self.end_headers()
            for i in range(blob.size):
                if self.app.stop.wait(0.05):
                    break
                self.wfile.write(blob.data[i : i + 1])
                self.wfile.flush()
            self.close_connection = True
            return None
        return self._send(200, blob.data, "application/octet-stream")

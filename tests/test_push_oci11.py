"""Push and referrers against an OCI 1.1 registry: ``OCI-Subject``, the referrers API with
``artifactType`` filtering, and ``OCI-Chunk-Min-Length``.

Debian's distribution 2.8 has none of these, and ``hybridstore serve`` is
read-only, so this file carries a small loopback stub (``Oci11Facade``, below)
in front of the real registry that adds exactly those three behaviours and
forwards everything else. The tag-schema fallback (the 2.8 path) is tested in
``test_push.py`` and ``test_referrers.py``; the API read path against the
project's own ``serve`` is in ``test_referrers.py``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from support import LoopbackServer, QuietHandler
from support.oci_builder import LayoutBuilder
from support.registry import Registry

from hybridstore.pull import pull
from hybridstore.push import push
from hybridstore.referrers import list_referrers
from hybridstore.remote.transport import TransportOptions
from hybridstore.remote.upload import UploadOptions

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]
SBOM = "application/vnd.hybridstore.test.sbom"
SIG = "application/vnd.hybridstore.test.signature"
_REFERRERS = re.compile(r"/v2/(?P<repo>.+)/referrers/(?P<digest>[a-z0-9]+:[a-f0-9]+)")
_MANIFEST = re.compile(r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)")


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]


class Oci11Facade:
    """Test stub: distribution 2.8 plus ``OCI-Subject``, the referrers API and a chunk minimum."""

    def __init__(
        self, upstream: str, min_chunk: int | None = None, single_post: bool = False
    ) -> None:
        self.upstream = upstream
        self.min_chunk = min_chunk
        self.single_post = single_post
        self.referrers: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.server = LoopbackServer(_FacadeHandler, self)

    def __enter__(self) -> Oci11Facade:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def host_port(self) -> str:
        return self.server.host_port

    def requests(self, method: str, needle: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and needle in s.target]


class _FacadeHandler(QuietHandler):
    def _dispatch(self) -> None:
        app: Oci11Facade = self.app
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with app.lock:
            app.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
        url = urlsplit(self.path)
        m = _REFERRERS.fullmatch(url.path)
        if self.command == "GET" and m:
            return self._referrers(m["repo"], m["digest"], parse_qs(url.query))
        digest = parse_qs(url.query).get("digest", [""])[0]
        if self.command == "POST" and app.single_post and digest and body:
            return self._single_post(url.path, digest, body)
        conn = http.client.HTTPConnection(*app.upstream.split(":"), timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            extra = self._extra(url.path, resp.status, body)
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            for k, v in extra.items():
                self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _extra(self, path: str, status: int, body: bytes) -> dict[str, str]:
        app: Oci11Facade = self.app
        if self.command == "POST" and path.endswith("/blobs/uploads/") and status == 202:
            return {"OCI-Chunk-Min-Length": str(app.min_chunk)} if app.min_chunk else {}
        m = _MANIFEST.fullmatch(path)
        if self.command != "PUT" or not m or status != 201:
            return {}
        doc = json.loads(body)
        subject = doc.get("subject")
        if not subject:
            return {}
        desc = {
            "mediaType": self.headers["Content-Type"],
            "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "size": len(body),
            "artifactType": doc.get("artifactType") or doc["config"]["mediaType"],
        }
        if doc.get("annotations"):
            desc["annotations"] = doc["annotations"]
        with app.lock:
            app.referrers.setdefault((m["repo"], subject["digest"]), {})[desc["digest"]] = desc
        return {"OCI-Subject": subject["digest"]}

    def _single_post(self, path: str, digest: str, body: bytes) -> None:
        """``POST ?digest=`` with the body, done upstream as POST + PUT; answers 201."""
        app: Oci11Facade = self.app
        conn = http.client.HTTPConnection(*app.upstream.split(":"), timeout=30)
        try:
            conn.request("POST", path, headers={"Host": self.headers["Host"]})
            started = conn.getresponse()
            started.read()
            location = urlsplit(started.getheader("Location", ""))
            target = f"{location.path}?{location.query}&digest={digest}"
            conn.request("PUT", target, body=body, headers={"Host": self.headers["Host"]})
            done = conn.getresponse()
            done.read()
        finally:
            conn.close()
        self.send_response_only(done.status)
        self.send_header("Docker-Content-Digest", digest)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _referrers(self, repo: str, digest: str, query: dict[str, list[str]]) -> None:
        app: Oci11Facade = self.app
        with app.lock:
            found = list(app.referrers.get((repo, digest), {}).values())
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        if "artifactType" in query:
            found = [d for d in found if d["artifactType"] in query["artifactType"]]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": found,
            }
        ).encode()
        self.send_response_only(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def facade(registry: Registry) -> Iterator[Oci11Facade]:
    with Oci11Facade(registry.host_port, min_chunk=2 << 20, single_post=True) as f:
        yield f


@pytest.fixture
def signed_layout(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path, tmp_cache: Path
) -> tuple[Path, str, str, str, str]:
    """A builder layout: image ``v1`` with an SBOM and a signature attached.

    Returns (layout dir, image digest, sbom digest, signature digest, ref name).
    """
    b = oci_builder()
    image = b.image("v1", layers=1, raw_layer_size=(4 << 20) + 3)
    sbom = b.referrer(image, "sbom")
    sig = b.referrer(image, "sig", artifact_type=SIG)
    b.referrers_index(image, [sbom, sig])
    return b.path, image.digest, sbom.digest, sig.digest, "v1"


def test_oci_subject_answer_means_no_fallback_tag(
    facade: Oci11Facade,
    registry: Registry,
    signed_layout: tuple[Path, str, str, str, str],
    repo_name: str,
) -> None:
    path, image, sbom, sig, name = signed_layout
    result = push(
        path, name, f"{facade.host_port}/{repo_name}:v1", transport=PLAIN, include_referrers=True
    )
    assert sorted(result.referrers) == sorted([sbom, sig])
    tag = image.replace(":", "-")
    assert facade.requests("GET", f"/manifests/{tag}") == []
    assert facade.requests("PUT", f"/manifests/{tag}") == []
    with registry.session() as s:
        direct = s.get(f"{registry.url}/v2/{repo_name}/manifests/{tag}", timeout=10)
    assert direct.status_code == 404


def test_referrers_api_with_artifact_type_filter(
    facade: Oci11Facade,
    signed_layout: tuple[Path, str, str, str, str],
    repo_name: str,
    tmp_path: Path,
) -> None:
    path, image, sbom, sig, name = signed_layout
    ref = f"{facade.host_port}/{repo_name}:v1"
    push(path, name, ref, transport=PLAIN, include_referrers=True)

    subject, everything = list_referrers(ref, transport=PLAIN)
    assert str(subject.digest) == image
    assert sorted(str(d.digest) for d in everything) == sorted([sbom, sig])
    done = subprocess.run(
        [*HYBRIDSTORE, "referrers", "--plain-http", "--json", "--artifact-type", SIG, ref],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["referrers"]
    assert [(d["digest"], d["artifactType"]) for d in listed] == [(sig, SIG)]
    asked = facade.requests("GET", "/referrers/")
    assert any("artifactType=" in s.target for s in asked)
    assert facade.requests("GET", f"/manifests/{image.replace(':', '-')}") == []

    # pull with referrers of one type: only the signature comes along, through the API
    got = pull(
        ref,
        layout=tmp_path / "l",
        transport=PLAIN,
        include_referrers=True,
        referrer_types=[SIG],
    )
    assert got.referrers == [sig]


def test_chunks_honour_the_registry_minimum(
    facade: Oci11Facade,
    signed_layout: tuple[Path, str, str, str, str],
    repo_name: str,
) -> None:
    path, _, _, _, name = signed_layout
    push(
        path,
        name,
        f"{facade.host_port}/{repo_name}:v1",
        transport=PLAIN,
        upload=UploadOptions(chunk_size=1 << 20, chunked_above=1 << 20, single_post_max=0),
    )
    sizes = [int(s.headers["Content-Length"]) for s in facade.requests("PATCH", "/uploads/")]
    assert sizes == [2 << 20, 2 << 20, 3]  # 4 MiB + 3 bytes in chunks of at least 2 MiB


def test_single_post_upload_where_the_registry_takes_it(
    facade: Oci11Facade,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_path: Path,
) -> None:
    b = oci_builder()
    built = b.image("v1", layers=2)  # small blobs: all within the single-POST size
    target = f"{facade.host_port}/{repo_name}:v1"
    result = push(
        b.path, "v1", target, transport=PLAIN, upload=UploadOptions(single_post_max=64 << 10)
    )
    assert result.uploaded == 3 + 1  # config, two layers, the manifest
    posts = facade.requests("POST", "/blobs/uploads/")
    assert sorted(s.target.rsplit("digest=", 1)[1] for s in posts) == sorted(
        [built.config.digest, *(layer.digest for layer in built.layers)]
    )
    assert facade.requests("PUT", "/blobs/uploads/") == []  # one request per blob
    assert pull(target, layout=tmp_path / "back", transport=PLAIN).digest == built.digest

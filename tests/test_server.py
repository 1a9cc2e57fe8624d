"""``hybridstore serve``: the read-only OCI endpoint, checked with requests, curl, skopeo and
hybridstore's own pull."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from support import require_binary
from support.oci_builder import (
    DEFAULT_REFERRER_TYPE,
    BuiltArtifact,
    BuiltImage,
    BuiltIndex,
    LayoutBuilder,
)
from support.tls import CertificateAuthority

from hybridstore.pull import pull
from hybridstore.remote.transport import TransportOptions
from hybridstore.server.catalog import Catalog, repository_for
from hybridstore.server.http import RegistryServer, parse_listen
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import verify_layout

HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature"
APP_TAGS = ["1.0", "sbom", "sig", "t0", "t1", "t2", "t3", "t4"]


@dataclass
class Site:
    a: LayoutBuilder
    b: LayoutBuilder
    image: BuiltImage
    index: BuiltIndex
    chart: BuiltArtifact
    sbom: BuiltArtifact
    sig: BuiltArtifact
    bare: BuiltImage
    hidden: BuiltImage


def build_site(root: Path) -> Site:
    a = LayoutBuilder(root / "site-a", seed="a")
    image = a.image("registry.example.com/team/app:1.0", layers=2)
    sbom = a.referrer(image, "registry.example.com/team/app:sbom")
    sig = a.referrer(image, "registry.example.com/team/app:sig", artifact_type=SIGNATURE_TYPE)
    for i in range(5):
        a.tag(image, f"registry.example.com/team/app:t{i}")
    index = a.index("registry.example.com/team/multi:2.0")
    chart = a.helm_chart("registry.example.com/charts/demo:0.1.0")
    b = LayoutBuilder(root / "Site_B", seed="b")
    bare = b.image("v1", layers=1)  # a bare tag, as skopeo writes: served as site-b:v1
    hidden = b.image("registry.other.io/team/app:1.0", layers=1)  # collides with site-a's
    return Site(a, b, image, index, chart, sbom, sig, bare, hidden)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return build_site(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[RegistryServer]:
    with RegistryServer([site.a.path, site.b.path], port=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: RegistryServer) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False
        yield s


def get(
    http: requests.Session, server: RegistryServer, path: str, **kw: object
) -> requests.Response:
    return http.get(server.url + path, timeout=30, **kw)  # type: ignore[arg-type]


def error_code(resp: requests.Response) -> str:
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert set(body) == {"errors"} and body["errors"][0]["message"]
    code: str = body["errors"][0]["code"]
    return code


# --- the API ----------------------------------------------------------------------------------


def test_ping(http: requests.Session, server: RegistryServer) -> None:
    resp = get(http, server, "/v2/")
    assert resp.status_code == 200 and resp.json() == {}
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_manifests_by_tag_and_digest(
    http: requests.Session, server: RegistryServer, site: Site
) -> None:
    for built, repo, tag, media_type in (
        (site.image, "team/app", "1.0", OCI_MANIFEST),
        (site.index, "team/multi", "2.0", OCI_INDEX),
        (site.chart, "charts/demo", "0.1.0", OCI_MANIFEST),
    ):
        for reference in (tag, built.digest):
            url = f"{server.url}/v2/{repo}/manifests/{reference}"
            head = http.head(url, timeout=30)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["Content-Type"] == media_type
            assert head.headers["Docker-Content-Digest"] == built.digest
            assert head.headers["Content-Length"] == str(len(built.manifest.data))
            body = http.get(url, timeout=30)
            assert body.content == built.manifest.data
            assert body.headers["Docker-Content-Digest"] == built.digest
    child = site.index.images[1]  # an index child is served by digest in the index's repository
    resp = get(http, server, f"/v2/team/multi/manifests/{child.digest}")
    assert resp.status_code == 200 and resp.content == child.manifest.data


def test_errors_carry_oci_error_bodies(
    http: requests.Session, server: RegistryServer, site: Site
) -> None:
    layer = site.chart.layers[0].digest
    cases = [
        ("/v2/nope/manifests/1.0", 404, "NAME_UNKNOWN"),
        ("/v2/team/app/manifests/9.9", 404, "MANIFEST_UNKNOWN"),
        (f"/v2/team/app/manifests/{site.image.config.digest}", 404, "MANIFEST_UNKNOWN"),
        ("/v2/team/app/manifests/sha256:zz", 400, "DIGEST_INVALID"),
        (f"/v2/team/app/blobs/{layer}", 404, "BLOB_UNKNOWN"),  # the chart's, not this repo's
        ("/v2/team/app/blobs/sha256:1234", 400, "DIGEST_INVALID"),
        ("/v2/team/app/referrers/nope", 400, "DIGEST_INVALID"),
        ("/v2/team/app/tags/list?n=x", 400, "PAGINATION_NUMBER_INVALID"),
        ("/elsewhere", 404, "NOT_FOUND"),
    ]
    for path, status, code in cases:
        resp = get(http, server, path)
        assert (resp.status_code, error_code(resp)) == (status, code), path
    head = http.head(f"{server.url}/v2/team/app/manifests/9.9", timeout=30)
    assert head.status_code == 404 and head.content == b""


def test_writes_get_405_with_an_oci_error(
    http: requests.Session, server: RegistryServer, site: Site
) -> None:
    for method, path in (
        ("POST", "/v2/team/app/blobs/uploads/"),
        ("PUT", "/v2/team/app/manifests/2.0"),
        ("PATCH", "/v2/team/app/blobs/uploads/x"),
        ("DELETE", f"/v2/team/app/manifests/{site.image.digest}"),
    ):
        resp = http.request(method, server.url + path, data=b"{}", timeout=30)
        assert resp.status_code == 405, method
        assert error_code(resp) == "UNSUPPORTED" and "read-only" in resp.text
        assert resp.headers["Allow"] == "GET, HEAD"
    assert get(http, server, "/v2/team/app/tags/list").json()["tags"] == APP_TAGS


def test_blob_ranges(http: requests.Session, server: RegistryServer, site: Site) -> None:
    blob = site.image.layers[0]
    url = f"{server.url}/v2/team/app/blobs/{blob.digest}"
    size = blob.size
    full = http.get(url, timeout=30)
    assert full.status_code == 200 and full.content == blob.data
    assert full.headers["Accept-Ranges"] == "bytes"
    assert full.headers["Docker-Content-Digest"] == blob.digest
    for header, first, last in (
        ("bytes=10-19", 10, 19),
        ("bytes=100-", 100, size - 1),
        ("bytes=-7", size - 7, size - 1),
        ("bytes=5-99999999", 5, size - 1),
        (f"bytes={size - 1}-{size - 1}", size - 1, size - 1),
    ):
        resp = http.get(url, headers={"Range": header}, timeout=30)
        assert resp.status_code == 206, header
        assert resp.content == blob.data[first : last + 1]
        assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert resp.headers["Content-Length"] == str(last - first + 1)
    for header in (f"bytes={size}-", "bytes=20-10", "bytes=-0"):
        resp = http.get(url, headers={"Range": header}, timeout=30)
        assert resp.status_code == 416, header
        assert resp.headers["Content-Range"] == f"bytes */{size}"
        assert error_code(resp)
    several = http.get(url, headers={"Range": "bytes=0-1,5-6"}, timeout=30)
    assert several.status_code == 200 and several.content == blob.data  # allowed: ignore it
    head = http.head(url, headers={"Range": "bytes=0-9"}, timeout=30)
    assert head.status_code == 206 and head.headers["Content-Length"] == "10"


def test_curl_range_request(server: RegistryServer, site: Site) -> None:
    curl = require_binary("curl")
    blob = site.image.config
    proc = subprocess.run(
        [curl, "-sS", "--fail", "-D", "-", "-r", "3-12", "-o", "-",
         f"{server.url}/v2/team/app/blobs/{blob.digest}"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    head, _, body = proc.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert f"Content-Range: bytes 3-12/{blob.size}".encode() in head
    assert body == blob.data[3:13]


def test_tags_pagination_follows_link_headers(
    http: requests.Session, server: RegistryServer
) -> None:
    path, pages, seen = "/v2/team/app/tags/list?n=3", [], []
    while path:
        resp = get(http, server, path)
        assert resp.status_code == 200 and resp.json()["name"] == "team/app"
        pages.append(resp.json()["tags"])
        seen += pages[-1]
        link = resp.headers.get("Link")
        path = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else ""  # type: ignore[union-attr]
    assert pages == [APP_TAGS[0:3], APP_TAGS[3:6], APP_TAGS[6:8]]
    assert get(http, server, "/v2/team/app/tags/list?last=t2").json()["tags"] == ["t3", "t4"]
    assert get(http, server, "/v2/team/app/tags/list?n=0").json()["tags"] == []
    catalog = get(http, server, "/v2/_catalog").json()["repositories"]
    assert catalog == ["charts/demo", "site-b", "team/app", "team/multi"]
    first = get(http, server, "/v2/_catalog?n=2")
    assert first.json()["repositories"] == ["charts/demo", "site-b"]
    assert first.headers["Link"] == '</v2/_catalog?n=2&last=site-b>; rel="next"'


def test_referrers_api(http: requests.Session, server: RegistryServer, site: Site) -> None:
    path = f"/v2/team/app/referrers/{site.image.digest}"
    resp = get(http, server, path)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in resp.headers
    found = {m["digest"]: m for m in resp.json()["manifests"]}
    assert set(found) == {site.sbom.digest, site.sig.digest}
    assert found[site.sig.digest]["artifactType"] == SIGNATURE_TYPE
    assert found[site.sbom.digest]["artifactType"] == DEFAULT_REFERRER_TYPE
    assert found[site.sbom.digest]["size"] == site.sbom.manifest.size

    filtered = get(http, server, path, params={"artifactType": SIGNATURE_TYPE})
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [site.sig.digest]
    none = get(http, server, f"/v2/team/app/referrers/{site.chart.digest}")
    assert none.status_code == 200 and none.json()["manifests"] == []


def test_repository_mapping_and_collisions(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    assert repository_for("registry.example.com/charts/app:1.2.3", Path("x")) == (
        "charts/app",
        "1.2.3",
    )
    assert repository_for("nginx:1", Path("x")) == ("library/nginx", "1")
    assert repository_for("1.2.3", Path("/srv/My Layout")) == ("my-layout", "1.2.3")
    assert parse_listen("[::1]:0") == ("::1", 0) and parse_listen("8080") == ("127.0.0.1", 8080)
    with caplog.at_level(logging.WARNING, logger="hybridstore.server.catalog"):
        layouts = [OCILayout.open(site.a.path), OCILayout.open(site.b.path)]
        repos = Catalog(layouts).repositories()
    assert repos["team/app"].tags["1.0"].digest.encoded == site.image.digest.split(":")[1]
    assert repos["site-b"].tags["v1"].digest.encoded == site.bare.digest.split(":")[1]
    assert site.hidden.config.digest not in {str(d) for d in repos["team/app"].content}
    assert any("registry.other.io/team/app:1.0" in r.getMessage() for r in caplog.records)


def test_concurrent_clients(http: requests.Session, server: RegistryServer, site: Site) -> None:
    blobs = [*site.image.layers, site.image.config] * 8

    def fetch(i: int) -> bool:
        blob = blobs[i]
        with requests.Session() as s:
            r = s.get(
                f"{server.url}/v2/team/app/blobs/{blob.digest}",
                headers={"Range": f"bytes={i}-"},
                timeout=30,
            )
        return r.status_code == 206 and r.content == blob.data[i:]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(fetch, range(len(blobs))))


def test_a_change_to_index_json_is_served_without_restart(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "live")
    b.image("registry.example.com/live/app:1")
    with RegistryServer([b.path], port=0) as srv, requests.Session() as http:
        http.trust_env = False
        url = f"{srv.url}/v2/live/app/tags/list"
        assert http.get(url, timeout=30).json()["tags"] == ["1"]
        newer = b.image("registry.example.com/live/app:2", seed="two")
        assert http.get(url, timeout=30).json()["tags"] == ["1", "2"]
        resp = http.get(f"{srv.url}/v2/live/app/manifests/2", timeout=30)
        assert resp.content == newer.manifest.data


def test_https_with_tls_cert(tmp_path: Path, test_ca: CertificateAuthority) -> None:
    b = LayoutBuilder(tmp_path / "tls")
    image = b.image("registry.example.com/secure/app:1")
    cert, key = test_ca.issue_server().write(tmp_path, "server")
    ca = test_ca.write_cert(tmp_path / "ca.pem")
    with RegistryServer([b.path], port=0, tls_cert=cert, tls_key=key) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with requests.Session() as http:
            http.trust_env = False
            resp = http.get(f"{srv.url}/v2/secure/app/manifests/1", verify=str(ca), timeout=30)
        assert resp.status_code == 200 and resp.content == image.manifest.data
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{srv.url}/v2/", timeout=30)  # not trusted without the CA


# --- real clients -----------------------------------------------------------------------------


@pytest.mark.skopeo
def test_skopeo_copies_from_serve(server: RegistryServer, site: Site, tmp_path: Path) -> None:
    out = tmp_path / "skopeo"
    for repo_ref, name in (
        ("team/app:1.0", "image"),
        ("team/multi:2.0", "multi"),
        ("charts/demo:0.1.0", "chart"),
    ):
        proc = subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests",
             "--src-tls-verify=false", "--retry-times=0",
             f"docker://{server.host_port}/{repo_ref}", f"oci:{out}:{name}"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    index = json.loads((out / "index.json").read_bytes())
    got = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }  # noqa: E501
    assert got == {
        "image": site.image.digest,
        "multi": site.index.digest,
        "chart": site.chart.digest,
    }
    assert verify_layout(OCILayout.open(out)).ok


def test_hybridstore_pulls_from_serve(
    server: RegistryServer, site: Site, tmp_path: Path, tmp_cache: Path
) -> None:
    hp = server.host_port
    refs = [f"{hp}/team/app:1.0", f"{hp}/team/multi:2.0", f"oci://{hp}/charts/demo:0.1.0"]
    proc = subprocess.run(
        [*HYBRIDSTORE, "pull", "--plain-http", "--all-platforms", "--json",
         "--layout", str(tmp_path / "cli"), *refs],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    digests = [r["digest"] for r in json.loads(proc.stdout)]
    assert digests == [site.image.digest, site.index.digest, site.chart.digest]
    assert verify_layout(OCILayout.open(tmp_path / "cli")).ok

    again = pull(
        f"{hp}/team/multi:2.0",
        layout=tmp_path / "lib",
        cache=tmp_cache,
        platforms=["linux/arm64/v8"],
        transport=TransportOptions(plain_http=True),
    )
    assert again.bytes_transferred == 0  # cache hit
    # one platform: its manifest is the ref, and the result names the index it came from
    arm = site.index.child("linux/arm64/v8")
    assert (again.digest, again.index) == (arm.digest, site.index.digest)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_its_url_and_stops_cleanly(site: Site, signum: int) -> None:
    proc = subprocess.Popen(
        [*HYBRIDSTORE, "serve", str(site.a.path), str(site.b.path), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        m = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", first)
        assert m is not None, first
        resp = requests.get(f"{m.group(1)}/v2/charts/demo/tags/list", timeout=30)
        assert resp.json() == {"name": "charts/demo", "tags": ["0.1.0"]}
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
        out, err = proc.stdout.read(), proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "team/app: 1.0, sbom, sig" in out and out.rstrip().endswith("stopped")
    assert "registry.other.io/team/app:1.0" in err  # the collision warning

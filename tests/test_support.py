"""Proof that the test infrastructure in ``tests/support`` does what it claims.

Everything else builds on these helpers, so each claim is checked against the
real peers: docker-registry, skopeo, umoci.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import ssl
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from support.faultproxy import FaultProxy
from support.oci_builder import (
    EMPTY_CONFIG,
    HELM_CHART,
    HELM_CONFIG,
    LayoutBuilder,
    Pushed,
    SampleContent,
    push_built,
    push_layout,
    skopeo_can_push,
)
from support.registry import AccessLogEntry, Registry, RegistryFactory
from support.tokenserver import Access, TokenServerConfig, decode_jwt

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
Builder = Callable[..., LayoutBuilder]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo_raw(ref: str, *extra: str) -> bytes:
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", *extra, f"docker://{ref}"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return proc.stdout


# -- registry variants -----------------------------------------------------------------


def test_session_registry_answers_v2(registry: Registry) -> None:
    resp = requests.get(registry.url + "/v2/", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert registry.running


@pytest.mark.parametrize(
    ("auth", "tls", "scheme"),
    [
        ("basic", False, "basic"),
        ("token", False, "bearer"),
        ("none", True, None),
        ("basic", True, "basic"),
        ("token", True, "bearer"),
    ],
)
def test_registry_variants_start_and_challenge(
    registry_factory: RegistryFactory, auth: str, tls: bool, scheme: str | None
) -> None:
    reg = registry_factory(auth=auth, tls=tls)  # type: ignore[arg-type]
    assert reg.url.startswith("https://" if tls else "http://")
    anonymous = requests.get(reg.url + "/v2/", verify=reg.verify, timeout=10)
    if scheme is None:
        assert anonymous.status_code == 200
    else:
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].lower().startswith(scheme)
        assert reg.credentials is not None
        assert reg.session().get(reg.url + "/v2/", timeout=10).status_code == 200
    if tls:
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(reg.url + "/v2/", timeout=10)  # system CAs do not know the test CA
        if auth == "token":
            assert reg.token_server.realm.startswith("https://")


def test_basic_auth_rejects_wrong_password(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(auth="basic")
    bad = reg.session(credentials=("alice", "wrong")).get(reg.url + "/v2/", timeout=10)
    assert bad.status_code == 401


def test_stop_ends_the_process(registry_factory: RegistryFactory) -> None:
    reg = registry_factory()
    assert reg.process is not None
    pid = reg.process.pid
    reg.stop()
    assert not reg.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_missing_binary_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="docker-registry is not installed"):
        Registry(tmp_path / "reg").start()


def test_pull_through_variant_serves_upstream_content(
    registry_factory: RegistryFactory, registry: Registry, registry_content: SampleContent
) -> None:
    cache = registry_factory(proxy_remote_url=registry.url)
    image = registry_content.image
    resp = requests.get(
        f"{cache.url}/v2/{image.repo}/manifests/{image.tag}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=30,
    )
    assert resp.status_code == 200
    assert sha256(resp.content) == image.digest


def test_read_only_variant_refuses_uploads(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(read_only=True)
    assert requests.post(f"{reg.url}/v2/a/blobs/uploads/", timeout=10).status_code == 405


# -- pushing and reading back ----------------------------------------------------------


@pytest.mark.skopeo
@pytest.mark.parametrize("kind", ["image", "index", "chart", "artifact", "referrer"])
def test_pushed_content_is_byte_exact(registry_content: SampleContent, kind: str) -> None:
    pushed: Pushed = getattr(registry_content, kind)
    raw = skopeo_raw(pushed.ref)
    assert raw == pushed.built.manifest.data
    assert sha256(raw) == pushed.digest


def test_referrers_fallback_index_is_tagged_by_subject_digest(
    registry: Registry, registry_content: SampleContent
) -> None:
    fallback = registry_content.referrers_index
    assert fallback.tag == registry_content.image.digest.replace(":", "-")
    resp = requests.get(
        f"{registry.url}/v2/{fallback.repo}/manifests/{fallback.tag}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=10,
    )
    entries = resp.json()["manifests"]
    assert [e["digest"] for e in entries] == [registry_content.referrer.digest]
    assert entries[0]["artifactType"] == "application/vnd.hybridstore.test.sbom"


@pytest.mark.skopeo
def test_docker_flavor_index_pushes_over_http(
    registry: Registry, oci_builder: Builder, repo_name: str
) -> None:
    b = oci_builder()
    built = b.index("dock", flavor="docker")
    assert not skopeo_can_push(b.path, "dock")
    digest = push_layout(b.path, "dock", registry, f"{repo_name}:v1")
    assert digest == built.digest
    raw = skopeo_raw(registry.ref(repo_name, "v1"))
    assert raw == built.manifest.data
    assert (
        json.loads(raw)["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    )


@pytest.mark.skopeo
@pytest.mark.parametrize("auth", ["basic", "token"])
def test_push_layout_with_auth(
    registry_factory: RegistryFactory, oci_builder: Builder, auth: str
) -> None:
    reg = registry_factory(auth=auth)  # type: ignore[arg-type]
    b = oci_builder()
    image = b.image("v1")
    push_layout(b.path, "v1", reg, "private/app:v1", method="skopeo")
    chart = b.helm_chart()
    push_layout(b.path, "0.1.0", reg, "private/chart:0.1.0", method="http")
    assert reg.credentials is not None
    user, password = reg.credentials
    creds = f"--creds={user}:{password}"
    assert sha256(skopeo_raw(reg.ref("private/app", "v1"), creds)) == image.digest
    assert sha256(skopeo_raw(reg.ref("private/chart", "0.1.0"), creds)) == chart.digest


# -- access log ------------------------------------------------------------------------


def test_access_log_counts_requests(
    registry: Registry, oci_builder: Builder, repo_name: str
) -> None:
    image = oci_builder().image(None, layers=1)
    push_built(image, registry, f"{repo_name}:v1")
    mark = registry.access_log_mark()
    layer = image.layers[0]
    blob_path = f"/v2/{repo_name}/blobs/{layer.digest}"
    for _ in range(2):
        assert requests.get(registry.url + blob_path, timeout=10).content == layer.data
    requests.head(registry.url + blob_path, timeout=10)
    requests.get(f"{registry.url}/v2/{repo_name}/blobs/{sha256(b'missing')}", timeout=10)

    entries = registry.access_log_requests(since=mark)
    assert entries.count(AccessLogEntry("GET", blob_path, 200)) == 2
    assert ("GET", blob_path, 200) in entries  # plain tuples compare equal too
    assert AccessLogEntry("HEAD", blob_path, 200) in entries
    assert registry.count_requests("GET", rf"/v2/{repo_name}/blobs/sha256:[0-9a-f]+", mark) == 3
    assert len(entries) == 4  # the barrier and probes are not counted


# -- token server ----------------------------------------------------------------------


def test_token_auth_end_to_end(registry_factory: RegistryFactory, repo_name: str) -> None:
    reg = registry_factory(auth="token", token=TokenServerConfig(anonymous_pull=True))
    ts = reg.token_server
    user, password = reg.credentials  # type: ignore[misc]
    scope = f"repository:{repo_name}:pull,push"

    resp = requests.get(
        ts.realm,
        params={"service": ts.config.service, "scope": scope},
        auth=(user, password),
        timeout=10,
    )
    token = resp.json()["token"]
    header, claims = decode_jwt(token)
    assert header["alg"] == "ES256" and len(header["x5c"]) == 1
    assert claims["aud"] == ts.config.service and claims["iss"] == ts.config.issuer
    assert claims["access"] == [
        {"type": "repository", "name": repo_name, "actions": ["pull", "push"]}
    ]

    bearer = {"Authorization": f"Bearer {token}"}
    start = requests.post(f"{reg.url}/v2/{repo_name}/blobs/uploads/", headers=bearer, timeout=10)
    assert start.status_code == 202
    data = b"token-authorised blob"
    done = requests.put(
        f"{start.headers['Location']}&digest={sha256(data)}", data=data, headers=bearer, timeout=10
    )
    assert done.status_code == 201
    blob_url = f"{reg.url}/v2/{repo_name}/blobs/{sha256(data)}"
    assert requests.get(blob_url, headers=bearer, timeout=10).content == data

    # Anonymous pull is granted here, push is not.
    anon = requests.get(
        ts.realm, params={"service": ts.config.service, "scope": scope}, timeout=10
    ).json()["token"]
    assert decode_jwt(anon)[1]["access"][0]["actions"] == ["pull"]
    anon_hdr = {"Authorization": f"Bearer {anon}"}
    assert requests.get(blob_url, headers=anon_hdr, timeout=10).status_code == 200
    denied = requests.post(f"{reg.url}/v2/{repo_name}/blobs/uploads/", headers=anon_hdr, timeout=10)
    assert denied.status_code == 401
    assert 'scope="repository:' in denied.headers["WWW-Authenticate"]

    # The registry really verifies: expiry, audience, issuer.
    granted = [Access("repository", repo_name, ("pull",))]
    for bad in (
        ts.issue(granted, lifetime=-60, not_before=0),
        ts.issue(granted, audience="some-other-service"),
        ts.issue(granted, issuer="someone-else"),
    ):
        r = requests.get(blob_url, headers={"Authorization": f"Bearer {bad}"}, timeout=10)
        assert r.status_code == 401

    # Secrets stay where they belong: the registry never saw the password.
    assert password not in reg.log_path.read_text() + reg.access_log_path.read_text()
    assert any(r.username == user for r in ts.requests)


def test_token_server_oauth_post_and_refresh(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(auth="token", token=TokenServerConfig(token_field="access_token"))
    ts = reg.token_server
    user, password = reg.credentials  # type: ignore[misc]
    form = {
        "grant_type": "password",
        "username": user,
        "password": password,
        "service": ts.config.service,
        "client_id": "hybridstore-tests",
        "access_type": "offline",
        "scope": "repository:a/b:pull",
    }
    first = requests.post(ts.realm, data=form, timeout=10).json()
    assert set(first) >= {"access_token", "refresh_token", "expires_in"} and "token" not in first
    refreshed = requests.post(
        ts.realm,
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "service": ts.config.service,
            "client_id": "hybridstore-tests",
            "scope": "repository:a/b:pull",
        },
        timeout=10,
    )
    assert refreshed.status_code == 200
    assert decode_jwt(refreshed.json()["access_token"])[1]["sub"] == user
    bad = requests.post(ts.realm, data={**form, "password": "nope"}, timeout=10)
    assert bad.status_code == 401
    get = requests.get(ts.realm, params={"service": ts.config.service}, timeout=10).json()
    assert "access_token" in get and "token" not in get
    # The password travelled only in the password-grant bodies.
    carriers = [r for r in ts.requests if password in r.text()]
    assert carriers and all(r.method == "POST" for r in carriers)


def test_token_server_can_refuse_post(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(auth="token", token=TokenServerConfig(oauth_post=False))
    resp = requests.post(reg.token_server.realm, data={"grant_type": "password"}, timeout=10)
    assert resp.status_code == 405


# -- fault proxy -----------------------------------------------------------------------


@pytest.fixture
def big_blob(registry: Registry, oci_builder: Builder, repo_name: str) -> tuple[str, bytes]:
    """(blob URL path, bytes) of a 256 KiB blob in the session registry."""
    image = oci_builder().image(None, layers=1, raw_layer_size=256 * 1024)
    push_built(image, registry, f"{repo_name}:v1")
    layer = image.layers[0]
    return f"/v2/{repo_name}/blobs/{layer.digest}", layer.data


def test_fault_proxy_passes_through(fault_proxy: FaultProxy, big_blob: tuple[str, bytes]) -> None:
    path, data = big_blob
    resp = requests.get(fault_proxy.url + path, timeout=10)
    assert resp.status_code == 200 and resp.content == data
    assert [r.path for r in fault_proxy.requests] == [path]


def test_fault_proxy_truncates(fault_proxy: FaultProxy, big_blob: tuple[str, bytes]) -> None:
    path, data = big_blob
    fault = fault_proxy.truncate("/blobs/", after_bytes=1000)
    with requests.get(fault_proxy.url + path, stream=True, timeout=10) as resp:
        assert resp.headers["Content-Length"] == str(len(data))
        received = bytearray()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in resp.iter_content(100):
                received += chunk
    assert bytes(received) == data[:1000]
    assert fault.hits == 1 and fault.exhausted
    assert requests.get(fault_proxy.url + path, timeout=10).content == data  # one-shot


def test_fault_proxy_resets(fault_proxy: FaultProxy, big_blob: tuple[str, bytes]) -> None:
    path, _data = big_blob
    fault_proxy.reset("/blobs/")
    with pytest.raises(requests.exceptions.ConnectionError) as before:
        requests.get(fault_proxy.url + path, timeout=10)
    assert isinstance(before.value.args[0].args[1], ConnectionResetError)
    fault_proxy.reset("/blobs/", after_bytes=5000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="reset"):
        requests.get(fault_proxy.url + path, timeout=10)


def test_fault_proxy_status_sequence_and_429(
    fault_proxy: FaultProxy, big_blob: tuple[str, bytes]
) -> None:
    path, data = big_blob
    fault_proxy.fail_sequence("/blobs/", [500, 503])
    statuses = [requests.get(fault_proxy.url + path, timeout=10).status_code for _ in range(3)]
    assert statuses == [500, 503, 200]
    fault_proxy.too_many_requests("/blobs/", retry_after="7", times=2)
    for _ in range(2):
        resp = requests.get(fault_proxy.url + path, timeout=10)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert requests.get(fault_proxy.url + path, timeout=10).content == data


def test_fault_proxy_matches_method_and_path(
    fault_proxy: FaultProxy, big_blob: tuple[str, bytes]
) -> None:
    path, _data = big_blob
    fault_proxy.fail("/blobs/", 500, method="HEAD", times=None)
    assert requests.get(fault_proxy.url + path, timeout=10).status_code == 200
    assert requests.get(fault_proxy.url + "/v2/", timeout=10).status_code == 200
    assert requests.head(fault_proxy.url + path, timeout=10).status_code == 500
    assert requests.head(fault_proxy.url + path, timeout=10).status_code == 500


def test_fault_proxy_ignores_range(fault_proxy: FaultProxy, big_blob: tuple[str, bytes]) -> None:
    path, data = big_blob
    ranged = {"Range": "bytes=100-199"}
    honoured = requests.get(fault_proxy.url + path, headers=ranged, timeout=10)
    assert honoured.status_code == 206 and honoured.content == data[100:200]
    fault_proxy.ignore_range("/blobs/")
    ignored = requests.get(fault_proxy.url + path, headers=ranged, timeout=10)
    assert ignored.status_code == 200 and ignored.content == data


def test_fault_proxy_stall_then_completes(
    fault_proxy: FaultProxy, big_blob: tuple[str, bytes]
) -> None:
    path, data = big_blob
    fault = fault_proxy.stall("/blobs/", seconds=0.2, after_bytes=4096)
    assert requests.get(fault_proxy.url + path, timeout=10).content == data
    assert fault.hits == 1


def test_fault_proxy_stall_trips_client_timeout(
    fault_proxy: FaultProxy, big_blob: tuple[str, bytes]
) -> None:
    path, _data = big_blob
    fault_proxy.stall("/blobs/", seconds=5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(fault_proxy.url + path, timeout=(5, 0.2))
    # stop() (fixture teardown) releases the stalled handler at once.


def test_fault_proxy_redirects_to_cdn_without_credentials(
    registry_factory: RegistryFactory, oci_builder: Builder
) -> None:
    reg = registry_factory(auth="basic")
    image = oci_builder().image(None, layers=1)
    push_built(image, reg, "cdn/test:v1")
    layer = image.layers[0]
    with FaultProxy(reg.host_port) as proxy:
        proxy.redirect_to_cdn()
        session = requests.Session()
        session.auth = reg.credentials
        resp = session.get(f"{proxy.url}/v2/cdn/test/blobs/{layer.digest}", timeout=10)
        assert resp.status_code == 200 and resp.content == layer.data
        assert [h.status_code for h in resp.history] == [307]
        assert resp.url.startswith(proxy.cdn.url)
        ranged = session.get(
            f"{proxy.url}/v2/cdn/test/blobs/{layer.digest}",
            headers={"Range": "bytes=10-19"},
            timeout=10,
        )
        assert ranged.status_code == 206 and ranged.content == layer.data[10:20]
        assert proxy.requests[0].header("Authorization") is not None  # the registry got creds
        assert len(proxy.cdn.requests) == 2 and not proxy.cdn.saw_authorization


def test_uploads_through_the_proxy_come_back_to_it(
    fault_proxy: FaultProxy, registry: Registry, repo_name: str
) -> None:
    start = requests.post(f"{fault_proxy.url}/v2/{repo_name}/blobs/uploads/", timeout=10)
    location = start.headers["Location"]
    assert location.startswith(fault_proxy.url)
    data = b"x" * 10_000
    patch = requests.patch(location, data=iter([data[:4000], data[4000:]]), timeout=10)
    assert patch.status_code == 202 and patch.headers["Range"] == "0-9999"
    done = requests.put(f"{patch.headers['Location']}&digest={sha256(data)}", timeout=10)
    assert done.status_code == 201
    direct = requests.get(f"{registry.url}/v2/{repo_name}/blobs/{sha256(data)}", timeout=10)
    assert direct.content == data


def test_fault_proxy_fronts_a_tls_registry(
    registry_factory: RegistryFactory, repo_name: str
) -> None:
    reg = registry_factory(tls=True)
    assert reg.ca_path is not None
    context = ssl.create_default_context(cafile=str(reg.ca_path))
    with FaultProxy(reg.host_port, upstream_tls=context) as proxy:
        assert requests.get(proxy.url + "/v2/", timeout=10).status_code == 200
        start = requests.post(f"{proxy.url}/v2/{repo_name}/blobs/uploads/", timeout=10)
        assert start.status_code == 202
        assert start.headers["Location"].startswith(proxy.url + "/")  # not https://


# -- the builder -----------------------------------------------------------------------


def _build_everything(b: LayoutBuilder) -> list[str]:
    image = b.image("img", layers=3)
    return [
        image.digest,
        b.index("multi").digest,
        b.helm_chart(payload_size=2048).digest,
        b.artifact("art").digest,
        b.referrer(image, "sbom").digest,
        b.image("raw", raw_layer_size=10_000, layers=1).digest,
    ]


def test_builder_is_deterministic(oci_builder: Builder) -> None:
    one, two = oci_builder("one", seed=7), oci_builder("two", seed=7)
    assert _build_everything(one) == _build_everything(two)
    assert (one.path / "index.json").read_bytes() == (two.path / "index.json").read_bytes()
    blobs_one = sorted(p.name for p in (one.path / "blobs" / "sha256").iterdir())
    assert blobs_one == sorted(p.name for p in (two.path / "blobs" / "sha256").iterdir())
    other = oci_builder("three", seed=8)
    assert set(_build_everything(other)).isdisjoint(_build_everything(one))


def test_builder_layout_is_consistent(oci_builder: Builder) -> None:
    b = oci_builder()
    digests = _build_everything(b)
    assert json.loads((b.path / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = b.index_json()
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    assert set(refs) == {"img", "multi", "0.1.0", "art", "sbom", "raw"}
    assert [refs[n]["digest"] for n in ("img", "multi", "0.1.0", "art", "sbom", "raw")] == digests
    for built in b.refs.values():
        for digest, blob in built.blobs.items():
            on_disk = b.blob_path(digest).read_bytes()
            assert sha256(on_disk) == digest and len(on_disk) == blob.size


def test_image_config_matches_layers(oci_builder: Builder) -> None:
    b = oci_builder()
    base = b.image("base", layers=1)
    image = b.image("app", layers=2, base_layers=base.layers)
    assert image.layers[0] == base.layers[0]
    config = image.config.json()
    assert config["rootfs"]["diff_ids"] == [
        sha256(gzip.decompress(layer.data)) for layer in image.layers
    ]
    manifest = image.manifest.json()
    assert manifest["config"]["digest"] == image.config.digest
    assert [d["size"] for d in manifest["layers"]] == [layer.size for layer in image.layers]
    raw = b.image("raw", layers=1, raw_layer_size=12_345)
    assert raw.layers[0].size == 12_345


@pytest.mark.umoci
def test_umoci_unpacks_built_image(oci_builder: Builder, tmp_path: Path) -> None:
    b = oci_builder()
    image = b.image("v1", layers=2, files_per_layer=2, file_size=1000)
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{b.path}:v1", str(bundle)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert image.files
    for rel, data in image.files.items():
        assert (bundle / "rootfs" / rel).read_bytes() == data


def test_index_has_both_platforms(oci_builder: Builder) -> None:
    index = oci_builder().index("multi")
    doc = index.manifest.json()
    platforms = [(m["platform"]["os"], m["platform"]["architecture"]) for m in doc["manifests"]]
    assert platforms == [("linux", "amd64"), ("linux", "arm64")]
    arm = index.child("linux/arm64/v8")
    assert arm.config.json()["architecture"] == "arm64"
    assert index.child("linux/amd64").layers[0] != arm.layers[0]


def test_helm_chart_is_a_real_chart(oci_builder: Builder) -> None:
    chart = oci_builder().helm_chart(name="web", version="1.2.3")
    assert chart.ref_name == "1.2.3"
    assert chart.config.media_type == HELM_CONFIG
    config = chart.config.json()
    assert (config["name"], config["version"], config["apiVersion"]) == ("web", "1.2.3", "v2")
    (layer,) = chart.layers
    assert layer.media_type == HELM_CHART
    with tarfile.open(fileobj=io.BytesIO(layer.data), mode="r:gz") as tar:
        names = tar.getnames()
        chart_yaml = tar.extractfile("web/Chart.yaml").read().decode()  # type: ignore[union-attr]
    assert "web/values.yaml" in names and "web/templates/configmap.yaml" in names
    assert "name: web\n" in chart_yaml and "version: 1.2.3\n" in chart_yaml


def test_oras_artifact_and_referrer_shape(oci_builder: Builder) -> None:
    b = oci_builder()
    art = b.artifact("art", files={"a.txt": b"alpha", "b.json": b"{}"})
    doc = art.manifest.json()
    assert doc["artifactType"] == "application/vnd.hybridstore.test.artifact"
    assert doc["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    assert art.config == EMPTY_CONFIG
    titles = [layer["annotations"]["org.opencontainers.image.title"] for layer in doc["layers"]]
    assert titles == ["a.txt", "b.json"]
    empty = b.artifact("empty", files={})
    assert empty.manifest.json()["layers"] == [EMPTY_CONFIG.descriptor()]
    ref = b.referrer(art, "ref")
    assert ref.manifest.json()["subject"] == art.manifest.descriptor()
    assert ref.subject == art.manifest.descriptor()

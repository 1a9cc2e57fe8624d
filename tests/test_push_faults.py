"""Upload faults through the fault proxy in front of the real registry: 416 recovery,
replayed chunks, lost sessions, 413 and non-retryable errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.faultproxy import FaultProxy
from support.oci_builder import Built, LayoutBuilder

from hybridstore.errors import RegistryError
from hybridstore.pull import pull
from hybridstore.push import push
from hybridstore.remote.transport import TransportOptions
from hybridstore.remote.upload import UploadOptions

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
CHUNKED = UploadOptions(chunk_size=1 << 20, chunked_above=0, single_post_max=0)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]


@pytest.fixture
def layout(oci_builder: Callable[..., LayoutBuilder]) -> tuple[Path, Built]:
    """A builder layout with one image (a 2 MiB + 7 byte layer) tagged ``v1``."""
    b = oci_builder()
    return b.path, b.image("v1", layers=1, raw_layer_size=(2 << 20) + 7)


def _patches(proxy: FaultProxy) -> list[tuple[str | None, str | None]]:
    return [
        (r.header("Content-Range"), r.fault)
        for r in proxy.requests
        if r.method == "PATCH" and "/blobs/uploads/" in r.path
    ]


def _pull_back(proxy: FaultProxy, target: str, tmp_path: Path) -> str:
    return pull(f"{proxy.host_port}/{target}", layout=tmp_path / "back", transport=PLAIN).digest


def test_416_is_recovered_through_the_upload_status(
    fault_proxy: FaultProxy, layout: tuple[Path, Built], repo_name: str, tmp_path: Path
) -> None:
    path, built = layout
    fault = fault_proxy.fail("/blobs/uploads/", 416, method="PATCH", times=1)
    push(path, "v1", f"{fault_proxy.host_port}/{repo_name}:v1", transport=PLAIN, upload=CHUNKED)
    assert fault.hits == 1
    status = [r for r in fault_proxy.requests if r.method == "GET" and "/uploads/" in r.path]
    assert len(status) == 1  # asked where the upload stands, then went on from there
    assert _pull_back(fault_proxy, f"{repo_name}:v1", tmp_path) == built.digest


def test_a_failed_chunk_is_replayed_with_the_same_bytes(
    fault_proxy: FaultProxy, layout: tuple[Path, Built], repo_name: str, tmp_path: Path
) -> None:
    path, built = layout
    fault = fault_proxy.fail("/blobs/uploads/", 503, method="PATCH", times=1)
    push(path, "v1", f"{fault_proxy.host_port}/{repo_name}:v1", transport=PLAIN, upload=CHUNKED)
    assert fault.hits == 1
    seen = _patches(fault_proxy)
    failed = next(rng for rng, f in seen if f == "status")
    assert (failed, None) in seen  # the same range again, this time forwarded
    assert _pull_back(fault_proxy, f"{repo_name}:v1", tmp_path) == built.digest


def test_a_lost_session_starts_over_in_a_new_one(
    fault_proxy: FaultProxy, layout: tuple[Path, Built], repo_name: str, tmp_path: Path
) -> None:
    path, built = layout
    layer = built.layers[0].digest
    fault_proxy.fail("/blobs/uploads/.+", 404, method="PATCH", times=1)
    push(
        path,
        "v1",
        f"{fault_proxy.host_port}/{repo_name}:v1",
        transport=PLAIN,
        upload=CHUNKED,
        concurrency=1,
    )
    posts = [r for r in fault_proxy.requests if r.method == "POST"]
    assert len(posts) == 3  # config, layer, and the layer's second session
    done = [r for r in fault_proxy.requests if r.method == "PUT" and layer in r.target]
    assert len(done) == 1
    assert _pull_back(fault_proxy, f"{repo_name}:v1", tmp_path) == built.digest


def test_monolithic_put_is_retried_with_the_whole_body(
    fault_proxy: FaultProxy, layout: tuple[Path, Built], repo_name: str, tmp_path: Path
) -> None:
    path, built = layout
    fault = fault_proxy.fail("/blobs/uploads/.+", 500, method="PUT", times=1)
    push(path, "v1", f"{fault_proxy.host_port}/{repo_name}:v1", transport=PLAIN)
    assert fault.hits == 1
    puts = [r for r in fault_proxy.requests if r.method == "PUT" and "/uploads/" in r.path]
    failed = next(r for r in puts if r.fault == "status")
    digest = failed.target.rsplit("digest=", 1)[1]
    again = [r for r in puts if r.fault is None and r.target.endswith(digest)]
    assert len(again) == 1
    assert again[0].header("Content-Length") == failed.header("Content-Length")
    assert failed.header("Content-Length") == str(built.blobs[digest].size)
    assert _pull_back(fault_proxy, f"{repo_name}:v1", tmp_path) == built.digest


def test_413_is_one_clear_error_and_not_retried(
    fault_proxy: FaultProxy, layout: tuple[Path, Built], repo_name: str, tmp_path: Path
) -> None:
    path, _ = layout
    fault = fault_proxy.fail("/manifests/", 413, method="PUT", times=None)
    target = f"{fault_proxy.host_port}/{repo_name}:v1"
    with pytest.raises(RegistryError, match=r"too large \(413\)"):
        push(path, "v1", target, transport=PLAIN)
    assert fault.hits == 1
    done = subprocess.run(
        [*HYBRIDSTORE, "push", "--plain-http", "--layout", str(path), "v1", target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 6
    assert done.stderr.count("\n") == 1 and "413" in done.stderr


def test_a_rejected_upload_is_reported_with_the_registry_message(
    fault_proxy: FaultProxy, layout: tuple[Path, Built], repo_name: str
) -> None:
    path, _ = layout
    body = b'{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"quota exceeded"}]}'
    fault_proxy.fail("/blobs/uploads/$", 400, method="POST", times=None, body=body)
    with pytest.raises(RegistryError, match="BLOB_UPLOAD_INVALID: quota exceeded"):
        push(path, "v1", f"{fault_proxy.host_port}/{repo_name}:v1", transport=PLAIN)
    posts = [r for r in fault_proxy.requests if r.method == "POST"]
    assert 1 <= len(posts) <= 2  # one per blob at most: a 4xx is never retried

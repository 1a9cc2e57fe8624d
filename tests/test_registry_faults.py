"""Registry answers that lie or page, met through the fault proxy in front of the real
registry (only for the lie itself): a manifest stored as other bytes, a Content-Type that
disagrees with the body, tag-list pagination, a killed pull resumed with Range; and foreign
layer URLs that must never be contacted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.faultproxy import FaultProxy
from support.oci_builder import Blob, LayoutBuilder, canonical_json, push_built
from support.registry import Registry

from hybridstore.copy import copy
from hybridstore.errors import DigestMismatchError, InvalidDocumentError, RegistryError
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.oci.reference import Reference
from hybridstore.pull import pull
from hybridstore.push import push
from hybridstore.remote.clients import RegistryClients
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import BlobCache
from hybridstore.store.layout import OCILayout

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]


def test_a_registry_that_stores_other_manifest_bytes_fails_the_push(
    fault_proxy: FaultProxy, oci_builder: Callable[..., LayoutBuilder], repo_name: str
) -> None:
    b = oci_builder()
    b.image("v1", layers=1)
    other = "sha256:" + "e" * 64
    fault = fault_proxy.fail(
        "/manifests/", 201, method="PUT", headers={"Docker-Content-Digest": other}, body=b""
    )
    with pytest.raises(DigestMismatchError, match=f"as {other}: it changed the bytes"):
        push(b.path, "v1", f"{fault_proxy.host_port}/{repo_name}:v1", transport=PLAIN)
    assert fault.hits == 1


def test_content_type_disagreeing_with_the_body_is_refused(
    fault_proxy: FaultProxy,
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_path: Path,
) -> None:
    """CVE-2021-41190: a manifest served as an index (by tag) is not taken as either."""
    built = oci_builder().image("v1", layers=1)
    push_built(built, registry, f"{repo_name}:v1")
    fault_proxy.fail(
        f"/{repo_name}/manifests/v1", 200, method="GET|HEAD", times=None,
        headers={"Content-Type": mt.OCI_INDEX}, body=built.manifest.data,
    )  # fmt: skip
    with pytest.raises(InvalidDocumentError, match="Content-Type"):
        pull(f"{fault_proxy.host_port}/{repo_name}:v1", layout=tmp_path / "l", transport=PLAIN)
    assert not (tmp_path / "l").exists()


def test_tag_listing_follows_link_pagination(
    fault_proxy: FaultProxy,
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
) -> None:
    """The proxy answers page one with a ``Link`` to page two, which the real registry
    answers (this distribution ignores ``n`` and sends one page); an endless chain of
    pages stops at the page cap."""
    built = oci_builder().image("v1", layers=1)
    names = [f"t{i}" for i in range(3)]
    for name in names:
        push_built(built, registry, f"{repo_name}:{name}")
    page_one = json.dumps({"name": repo_name, "tags": ["a0", "a1"]}).encode()
    link = {"Link": f'</v2/{repo_name}/tags/list?n=2&last=a1>; rel="next"'}
    fault = fault_proxy.fail("/tags/list", 200, method="GET", headers=link, body=page_one)
    ref = Reference.parse(f"{fault_proxy.host_port}/{repo_name}:t0")
    with RegistryClients(PLAIN) as clients:
        assert sorted(clients.repository(ref).tags(page_size=2)) == ["a0", "a1", *names]
        assert fault.hits == 1
        fault_proxy.fail("/tags/list", 200, method="GET", headers=link, body=page_one, times=None)
        with pytest.raises(RegistryError, match="did not end after 3 pages"):
            clients.repository(ref).tags(page_size=2, max_pages=3)
    fault_proxy.clear()
    done = subprocess.run(
        [*HYBRIDSTORE, "tags", "--plain-http", "--json", str(ref)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)) == names


def test_a_killed_pull_is_resumed_with_a_range_request(
    fault_proxy: FaultProxy,
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_path: Path,
    tmp_cache: Path,
) -> None:
    """kill -9 of the CLI mid-blob; the next run asks the real registry for the rest only."""
    built = oci_builder().image("v1", layers=1, raw_layer_size=4 << 20)
    push_built(built, registry, f"{repo_name}:v1")
    layer = built.layers[0]
    fault_proxy.stall(f"/blobs/{layer.digest}", seconds=30, after_bytes=1 << 20, method="GET")
    ref = f"{fault_proxy.host_port}/{repo_name}:v1"
    args = [*HYBRIDSTORE, "pull", "--plain-http", "--layout", str(tmp_path / "l"), ref]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = tmp_cache / "ingest" / f"sha256-{layer.digest.split(':')[1]}.partial"
    deadline = time.monotonic() + 60
    try:  # the stalled download has its first MiB on disk: kill it there
        while not (partial.exists() and partial.stat().st_size >= 1 << 20):
            assert first.poll() is None and time.monotonic() < deadline, "no partial appeared"
            time.sleep(0.05)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        fault_proxy.clear()
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    ranged = [r.header("Range") for r in fault_proxy.requests if layer.digest in r.path]
    assert any(r and r.startswith("bytes=") and r != "bytes=0-" for r in ranged), ranged
    assert OCILayout.open(tmp_path / "l").resolve(ref).digest == Digest.parse(built.manifest.digest)


def test_foreign_layer_urls_are_never_fetched_by_default(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path, tmp_cache: Path
) -> None:
    """Fault case 30 (CVE-2020-15157): a non-distributable layer whose ``urls`` point at
    another host is not fetched (so no credential can be sent there): the copy skips it,
    and the host never sees a connection."""
    evil = socket.socket()
    evil.bind(("127.0.0.1", 0))
    evil.listen(8)
    evil.setblocking(False)
    b = oci_builder("src")
    base = b.image("base", layers=1)
    layer = Blob(mt.OCI_LAYER_NONDIST_TAR_GZIP, b"foreign layer bytes")
    manifest = Blob(mt.OCI_MANIFEST, canonical_json({
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": base.config.descriptor(),
        "layers": [layer.descriptor(urls=[f"http://127.0.0.1:{evil.getsockname()[1]}/x"])],
    }))  # fmt: skip
    src = OCILayout.open(b.path, cache=BlobCache(tmp_cache))
    desc = Descriptor.from_json(manifest.descriptor(), "manifest")
    src.push_bytes(desc, manifest.data)
    src.tag(desc, "foreign")
    result = copy(f"oci:{b.path}:foreign", f"oci:{tmp_path / 'dst'}:foreign", cache=tmp_cache)
    assert str(result.digest) == manifest.digest
    dst = OCILayout.open(tmp_path / "dst")
    assert not dst.exists(Descriptor.from_json(layer.descriptor(), "layer"))
    with pytest.raises(BlockingIOError):
        evil.accept()  # nobody connected
    evil.close()

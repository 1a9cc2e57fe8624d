"""``hybridstore referrers`` and ``--include-referrers``: the tag-schema fallback against
distribution 2.8 (which has no referrers API), layouts, and the referrers API against the
project's own ``hybridstore serve``. (OCI-Subject on push: ``test_push_oci11.py``.)"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from support.oci_builder import SampleContent
from support.registry import Registry

from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.oci.referrers import fallback_tag, is_fallback_tag, merge_fallback_index
from hybridstore.pull import pull
from hybridstore.referrers import list_referrers
from hybridstore.remote.transport import TransportOptions
from hybridstore.server.http import RegistryServer
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import gc_layout, verify_layout

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]
SBOM = "application/vnd.hybridstore.test.sbom"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HYBRIDSTORE, *args], capture_output=True, text=True, timeout=60)


def test_referrers_from_the_tag_schema_fallback(
    registry: Registry, registry_content: SampleContent
) -> None:
    image = registry_content.image
    done = run("referrers", "--plain-http", "--json", image.ref)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["subject"]["digest"] == image.digest
    assert [(d["digest"], d["artifactType"]) for d in out["referrers"]] == [
        (registry_content.referrer.digest, SBOM)
    ]
    # a filter that matches nothing, and content without referrers: empty, not an error
    _, none = list_referrers(image.ref, artifact_types=["x/y"], transport=PLAIN)
    assert none == []
    _, also_none = list_referrers(registry_content.chart.ref, transport=PLAIN)
    assert also_none == []


def test_pulled_referrers_are_recorded_in_the_layout(
    registry: Registry, registry_content: SampleContent, tmp_cache: Path, tmp_path: Path
) -> None:
    image, sbom = registry_content.image, registry_content.referrer
    layout = tmp_path / "l"
    plain = pull(image.ref, layout=tmp_path / "plain", transport=PLAIN)
    assert plain.referrers == []
    result = pull(image.ref, layout=layout, transport=PLAIN, include_referrers=True)
    assert result.referrers == [sbom.digest]
    refs = OCILayout.open(layout).refs()
    fallback = f"{registry.host_port}/{image.repo}:{fallback_tag(Digest.parse(image.digest))}"
    assert set(refs) == {image.ref, fallback}
    done = run("referrers", "--json", "--layout", str(layout), image.ref)
    assert done.returncode == 0, done.stderr
    assert [d["digest"] for d in json.loads(done.stdout)["referrers"]] == [sbom.digest]
    # the referrer is reachable, so layout gc keeps it and verify checks it
    gc = gc_layout(OCILayout.open(layout), grace=0)
    assert gc.removed == []
    assert (layout / "blobs" / "sha256" / sbom.digest.split(":")[1]).exists()
    assert verify_layout(OCILayout.open(layout)).ok


def test_referrers_api_of_hybridstore_serve(
    registry_content: SampleContent,
    tmp_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    image, sbom = registry_content.image, registry_content.referrer
    served = tmp_path / "served"
    pull(image.ref, layout=served, transport=PLAIN, include_referrers=True)
    with RegistryServer([served], port=0) as server:
        ref = f"{server.host_port}/{image.repo}:v1"
        with caplog.at_level(logging.DEBUG, logger="hybridstore.server.http"):
            got = pull(
                ref,
                layout=tmp_path / "l",
                transport=PLAIN,
                include_referrers=True,
                referrer_types=[SBOM],
            )
            subject, found = list_referrers(ref, artifact_types=["x/none"], transport=PLAIN)
    assert got.digest == image.digest and got.referrers == [sbom.digest]
    assert str(subject.digest) == image.digest and found == []
    lines = [r.getMessage() for r in caplog.records]
    assert any("/referrers/" in m and "artifactType=" in m for m in lines)
    assert not any("/manifests/sha256-" in m for m in lines)  # the API, not the fallback


def test_fallback_index_helpers() -> None:
    subject = Digest.parse("sha256:" + "ab" * 32)
    assert fallback_tag(subject) == "sha256-" + "ab" * 32
    assert is_fallback_tag(fallback_tag(subject)) and not is_fallback_tag("v1.0")
    ref = Descriptor(
        "application/vnd.oci.image.manifest.v1+json",
        Digest.parse("sha256:" + "cd" * 32),
        10,
        artifact_type=SBOM,
    )
    first = merge_fallback_index(None, ref)
    assert first is not None
    assert json.loads(first)["manifests"][0]["artifactType"] == SBOM
    assert merge_fallback_index(first, ref) is None  # already listed: nothing to write

"""``hybridstore inspect`` on registries and layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.oci_builder import SampleContent

from hybridstore.inspect import inspect
from hybridstore.pull import pull
from hybridstore.remote.transport import TransportOptions

pytestmark = pytest.mark.registry

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*HYBRIDSTORE, *args], capture_output=True, timeout=60)


def test_inspect_image_raw_is_the_exact_bytes(registry_content: SampleContent) -> None:
    image = registry_content.image
    raw = run("inspect", "--plain-http", "--raw", image.ref)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == image.built.manifest.data
    as_json = json.loads(run("inspect", "--plain-http", "--json", image.ref).stdout)
    assert as_json["descriptor"]["digest"] == image.digest
    assert as_json["manifest"] == json.loads(image.built.manifest.data)
    config = run("inspect", "--plain-http", "--config", "--raw", image.digest_ref)
    assert config.stdout == image.built.config.data


def test_inspect_index_lists_platforms_and_descends(registry_content: SampleContent) -> None:
    index = registry_content.index
    result = inspect(index.ref, transport=PLAIN)
    assert result.platforms == ["linux/amd64", "linux/arm64/v8"]
    arm = inspect(index.ref, platform="linux/arm64", with_config=True, transport=PLAIN)
    assert str(arm.descriptor.digest) == index.built.child("linux/arm64/v8").digest
    assert arm.config is not None and json.loads(arm.config)["architecture"] == "arm64"
    bad = run("inspect", "--plain-http", "--config", index.ref)
    assert bad.returncode == 10 and b"--platform" in bad.stderr


def test_inspect_helm_chart_from_registry_and_layout(
    registry_content: SampleContent, tmp_cache: Path, tmp_path: Path
) -> None:
    chart = registry_content.chart
    text = run("inspect", "--plain-http", f"oci://{chart.ref}")
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    assert "Helm chart:" in out and "demo-chart 0.1.0" in out
    assert "application/vnd.cncf.helm.config.v1+json" in out

    pull(chart.ref, layout=tmp_path / "charts", transport=PLAIN)
    done = run("inspect", "--json", "--layout", str(tmp_path / "charts"), "0.1.0")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["chart"]["name"] == "demo-chart" and info["chart"]["version"] == "0.1.0"
    assert info["descriptor"]["digest"] == chart.digest
    missing = run("inspect", "--layout", str(tmp_path / "charts"), "nope")
    assert missing.returncode == 4 and missing.stderr.count(b"\n") == 1

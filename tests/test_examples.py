"""Every script in examples/ runs from a clone after the README's first command (which makes
.venv), with a plain PATH: no activated venv, no hybridstore on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.oci_builder import SampleContent

ROOT = Path(__file__).resolve().parent.parent
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"


def plain_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HYBRIDSTORE", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(PATH=PLAIN_PATH, TMPDIR=str(tmp_path), HOME=str(tmp_path))
    return env


def test_examples_are_all_covered() -> None:
    """A new example gets a run here (or in test_server_examples, test_public_api,
    test_sync; local_registry.sh is sourced by the shell ones)."""
    assert sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_file()) == [
        "demo.py",
        "helm_chart_cache.sh",
        "library_tour.py",
        "local_registry.sh",
        "make_demo_content.py",
        "make_project_content.py",
        "offline_transfer.sh",
        "pull_library.py",
        "sync_project.sh",
    ]


@pytest.mark.registry
def test_helm_chart_cache_runs_with_a_plain_path(tmp_path: Path) -> None:
    if Path(sys.executable).parent != ROOT / ".venv" / "bin":
        pytest.skip("the example looks for this clone's .venv; tests run from another env")
    done = subprocess.run(
        ["bash", str(ROOT / "examples/helm_chart_cache.sh")],
        capture_output=True, text=True, timeout=300, env=plain_env(tmp_path), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "re-pull transferred 0 bytes" in done.stdout
    assert "vendor/app-1.2.3.tgz" in done.stdout


@pytest.mark.registry
def test_pull_library_example(registry_content: SampleContent, tmp_path: Path) -> None:
    env = plain_env(tmp_path)
    env["HYBRIDSTORE_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/pull_library.py"), registry_content.chart.ref,
         str(tmp_path / "charts"), "--plain-http"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"-> {registry_content.chart.digest}" in done.stdout

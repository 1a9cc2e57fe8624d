"""CLI conventions a skopeo, oras or crane user expects: global options anywhere, one shape
per command family, one missing-layout error, shell completion. Real processes throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.oci_builder import LayoutBuilder, SampleContent

SCRIPT = Path(sys.executable).with_name("hybridstore")


def hs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDSTORE_")}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env or base
    )


def hs_json(*args: str) -> Any:
    done = hs(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.registry
def test_global_options_are_taken_after_the_subcommand(
    registry_content: SampleContent, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    done = hs(
        "pull", "-q", "--debug", "--cache", str(cache), "--plain-http",
        "--layout", str(tmp_path / "l"), registry_content.image.ref,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # -q after the subcommand
    assert "DEBUG" in done.stderr  # --debug after the subcommand
    assert any((cache / "blobs" / "sha256").iterdir())  # --cache after the subcommand
    for argv in (
        ["cache", "info", "--cache", str(cache)],
        ["cache", "--cache", str(cache), "info"],
    ):
        assert hs_json(*argv, "--json")["root"] == str(cache)
    # a later position wins over an earlier one, and over the environment
    env = dict(os.environ, HYBRIDSTORE_CACHE_DIR=str(tmp_path / "env"))
    late = hs("--cache", str(tmp_path / "early"), "cache", "info", "--cache", str(cache), "--json",
              env=env)  # fmt: skip
    assert json.loads(late.stdout)["root"] == str(cache)


def test_layout_verify_and_gc_take_layout_and_durations_like_the_rest(tmp_path: Path) -> None:
    LayoutBuilder(tmp_path / "l").image("latest", layers=1)
    layout = str(tmp_path / "l")
    assert hs_json("layout", "verify", "--layout", layout, "--json")["ok"] is True
    report = hs_json("layout", "gc", "--layout", layout, "--grace", "1h", "--json")
    assert report["reachable"] > 0
    assert hs("layout", "gc", layout, "--grace", "90m", "--dry-run").returncode == 0
    both = hs("layout", "verify", layout, "--layout", layout)
    assert both.returncode == 2 and "--layout" in both.stderr
    bad = hs("layout", "gc", "--layout", layout, "--grace", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_a_missing_layout_is_one_message_and_exit_code_everywhere(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    commands = [
        ["refs", "--layout", missing],
        ["tag", "--layout", missing, "a", "b"],
        ["untag", "--layout", missing, "a"],
        ["push", "--layout", missing, "a", "localhost:1/x:y"],
        ["export", "--layout", missing, "-o", str(tmp_path / "x.tar")],
        ["extract", "--layout", missing, "-o", str(tmp_path / "out")],
        ["inspect", "--layout", missing],
        ["referrers", "--layout", missing],
        ["layout", "verify", "--layout", missing],
        ["layout", "gc", missing],
        ["copy", f"oci:{missing}:a", f"oci:{tmp_path / 'dst'}"],
    ]
    for argv in commands:
        done = hs(*argv)
        assert done.returncode == 4, (argv, done.stderr)
        assert done.stderr == (
            f"hybridstore: error: {missing} is not an OCI layout (no oci-layout file): "
            "check the path, or pull, copy or import into it first\n"
        ), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_completion_scripts_complete_commands(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{SCRIPT.parent}:/usr/bin:/bin")
    script = (
        'eval "$(hybridstore completion bash)"; COMP_WORDS=(hybridstore pu); COMP_CWORD=1; '
        '_hybridstore_completion hybridstore; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pull", "push"]
    for shell in ("zsh", "fish"):
        text = hs("completion", shell).stdout
        assert "_HYBRIDSTORE_COMPLETE" in text and f"{shell}_complete" in text
    assert hs("completion", "tcsh").returncode == 2

"""Commands that need no network never load requests (issue 16): each runs in a fresh
interpreter that reports, at exit, whether ``requests`` was imported. The control case,
a pull that does reach the registry, proves the probe can see it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.registry import Registry

from hybridstore.pull import pull
from hybridstore.remote.transport import TransportOptions

PLAIN = TransportOptions(plain_http=True)
# Runs the CLI in-process and says on stderr, last, whether requests was loaded.
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write("
    "'\\nrequests-loaded=%s\\n' % ('requests' in sys.modules)))\n"
    "from hybridstore.cli import main\n"
    "main(sys.argv[1:])\n"
)

pytestmark = pytest.mark.registry


def probe(*args: str, cwd: Path) -> tuple[bool, subprocess.CompletedProcess[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": ""},
    )
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("requests-loaded="), done.stderr
    return last == "requests-loaded=True", done


def test_local_commands_and_a_fully_cached_digest_pull_never_load_requests(
    registry: Registry,
    registry_content,  # type: ignore[no-untyped-def]
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    image, chart = registry_content.image, registry_content.chart
    layout = tmp_path / "layout"
    for item in (image, chart):
        pull(item.ref, layout=layout, transport=PLAIN)
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes((layout / "blobs" / "sha256" / image.digest.split(":")[1]).read_bytes())
    by_digest = f"{image.host_port}/{image.repo}@{image.digest}"
    L = ["--layout", str(layout)]
    commands = [
        ["refs", *L],
        ["tag", *L, image.ref, "copy-of-image"],
        ["untag", *L, "copy-of-image"],
        ["layout", "verify", str(layout)],
        ["cache", "info"],
        ["export", *L, "-o", str(tmp_path / "out.tar")],
        ["import", str(tmp_path / "out.tar"), "--layout", str(tmp_path / "imported")],
        ["validate", str(manifest)],
        ["inspect", *L, image.ref],
        ["extract", *L, chart.ref, "-o", str(tmp_path / "chart-out")],
        # Every blob is cached: the digest names the content, nothing to ask a registry.
        ["pull", "--plain-http", "--layout", str(tmp_path / "again"), by_digest],
    ]
    for args in commands:
        loaded, done = probe(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert not loaded, f"{args[0]} imported requests"
    assert json.loads((tmp_path / "again" / "index.json").read_text())["manifests"]

    # The control: a tag must be resolved at the registry, so requests is loaded.
    loaded, done = probe(
        "pull", "--plain-http", "--layout", str(tmp_path / "tagged"), image.ref, cwd=tmp_path
    )
    assert done.returncode == 0 and loaded, done.stderr


def test_serve_never_loads_requests(
    registry: Registry,
    registry_content,  # type: ignore[no-untyped-def]
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    layout = tmp_path / "layout"
    pull(registry_content.chart.ref, layout=layout, transport=PLAIN)
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, "serve", str(layout), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("listening on "), first
        for line in proc.stdout:  # the listing is printed before it starts serving
            if line.startswith("read-only"):
                break
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.strip().splitlines()[-1] == "requests-loaded=False"


def test_the_cli_transport_defaults_are_transport_options_defaults() -> None:
    """cli/options spells the defaults out (it may not import the client)."""
    from hybridstore.cli.pull import pull as pull_command

    params = {p.name: p for p in pull_command.params}
    defaults = TransportOptions()
    assert params["retry_times"].default == defaults.max_retries
    assert params["timeout"].default == defaults.timeout
    assert defaults.retry_delay is None  # --retry-delay has no default: backoff
    assert f"{defaults.retry_base} s" in (params["retry_delay"].help or "")

"""The remote commands against a hostile registry (``support/hostile.py``), through the
CLI in a subprocess: each fault ends in its documented exit code with one line on
stderr, no traceback, bounded memory (the child's peak RSS, from ``wait4``), and a
cache and layout that still verify."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostile import FLOOD, HostileRegistry

from hybridstore.pull import pull as pull_ref
from hybridstore.remote.transport import TransportOptions

HYBRIDSTORE = [sys.executable, "-m", "hybridstore"]
GNU_TIME = shutil.which("time") or "time"  # Debian package "time" (the Makefile's APT_PKGS)
pytestmark = pytest.mark.skipif(
    shutil.which("time") is None, reason="needs GNU time (Debian package time)"
)
# A command's own peak is ~45 MiB; any body read whole would be FLOOD (256 MiB) more.
MAX_RSS_KIB = 128 << 10
assert FLOOD >= 2 * (MAX_RSS_KIB << 10)
FAST = ["--plain-http", "--retry-times", "1", "--retry-delay", "0"]
PLAIN = TransportOptions(plain_http=True)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as reg:
        yield reg


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    docker = tmp_path / "docker"
    docker.mkdir()
    return {
        **os.environ,
        "DOCKER_CONFIG": str(docker),
        "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "HYBRIDSTORE_CACHE_DIR": str(tmp_path / "cache"),
    }


def run(args: list[str], env: dict[str, str], tmp: Path, stdin: str = "") -> tuple[int, str, int]:
    """Exit code, stderr and peak RSS (KiB, GNU time's ``%M``: the command's own, not
    the forked test process's) of one CLI run."""
    rss = tmp / "rss"
    done = subprocess.run(
        [GNU_TIME, "-f", "%M", "-o", str(rss), *HYBRIDSTORE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return done.returncode, done.stderr, int(rss.read_text().split()[-1])


def pull(h: HostileRegistry, tmp: Path) -> list[str]:
    return ["pull", *FAST, "--layout", str(tmp / "layout"), h.ref]


def tags(h: HostileRegistry, tmp: Path) -> list[str]:
    return ["tags", *FAST, f"{h.host_port}/evil/app"]


def inspect(h: HostileRegistry, tmp: Path) -> list[str]:
    return ["inspect", *FAST, h.ref]


def copy(h: HostileRegistry, tmp: Path) -> list[str]:
    return ["copy", *FAST, f"docker://{h.ref}", f"oci:{tmp / 'layout'}:v1"]


def login(h: HostileRegistry, tmp: Path) -> list[str]:
    return ["login", *FAST, "-u", "alice", "--password-stdin", h.host_port]


def referrers(h: HostileRegistry, tmp: Path) -> list[str]:
    return ["referrers", *FAST, h.ref]


def sync(h: HostileRegistry, tmp: Path) -> list[str]:
    project = tmp / "hybridstore.yaml"
    project.write_text(f"layout: layout\nrefs:\n  - {h.ref}\n")
    return ["sync", *FAST, "-f", str(project)]


def push(h: HostileRegistry, tmp: Path) -> list[str]:
    """Push a layout pulled while the registry behaved back into it (as ``copy``)."""
    source = tmp / "source"
    mode, h.mode = h.mode, "none"
    try:
        pull_ref(h.ref, layout=source, cache=tmp / "cache", transport=PLAIN)
    finally:
        h.mode = mode
    return ["push", *FAST, "--layout", str(source), h.ref, f"{h.host_port}/evil/copy:v1"]


CASES = [
    # mode, command, exit code, words the one stderr line must hold
    ("endless-error", pull, 4, "not found"),
    ("endless-error", tags, 4, "not found"),
    ("truncated-error", inspect, 6, "500"),
    ("endless-tags", tags, 6, "larger than"),
    ("truncated-tags", tags, 6, "middle of the body"),
    ("deep-json-tags", tags, 10, "too deeply nested"),
    ("endless-manifest", pull, 10, "limit"),
    ("endless-manifest", inspect, 10, "limit"),
    ("long-blob", pull, 3, ""),
    ("short-blob-length", pull, 3, "Content-Length"),
    ("truncated-blob", copy, 6, "giving up"),
    ("trickle-blob", pull, 6, "slower than"),
    ("garbage-status", pull, 6, "cannot reach"),
    ("garbage-status", login, 6, "cannot reach"),
    ("bad-content-length", inspect, 10, "media type"),  # read to EOF: "{}", no mediaType
    ("location-bad-ipv6", pull, 6, "invalid URL"),
    ("location-bad-port", tags, 6, "invalid URL"),
    ("redirect-loop", inspect, 6, "redirects"),
    ("realm-bad-url", pull, 6, "token realm"),
    ("realm-bad-url", login, 6, "token realm"),
    ("endless-token", pull, 6, "token server"),
    ("deep-json-manifest", pull, 10, "too deeply nested"),
    ("deep-json-manifest", inspect, 10, "too deeply nested"),
    ("endless-error", referrers, 4, "not found"),
    ("garbage-status", sync, 6, "cannot reach"),
    ("endless-manifest", sync, 10, "limit"),
    ("truncated-blob", sync, 6, "giving up"),
    ("garbage-status", push, 6, "cannot reach"),
    ("location-bad-port", push, 6, "invalid URL"),
    ("realm-bad-url", push, 6, "token realm"),
]


@pytest.mark.parametrize(
    ("mode", "command", "code", "words"),
    CASES,
    ids=[f"{mode}-{command.__name__}" for mode, command, _, _ in CASES],
)
def test_hostile_registry(
    hostile: HostileRegistry,
    env: dict[str, str],
    tmp_path: Path,
    mode: str,
    command: object,
    code: int,
    words: str,
) -> None:
    hostile.mode = mode
    args = command(hostile, tmp_path)  # type: ignore[operator]
    if mode == "trickle-blob":
        args = [*args[:1], "--timeout", "0.5", *args[1:]]
    got, err, rss = run(args, env, tmp_path, stdin="pw")
    lines = err.strip().splitlines()
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0], lines[0]
    assert rss < MAX_RSS_KIB, f"peak RSS {rss} KiB"
    cache = tmp_path / "cache"
    if cache.exists():
        verified, verr, _ = run(["cache", "verify"], env, tmp_path)
        assert verified == 0, verr
    layout = tmp_path / "layout"
    if layout.exists():
        verified, verr, _ = run(["layout", "verify", str(layout)], env, tmp_path)
        assert verified == 0, verr


def test_a_well_behaved_hostile_registry_pulls(
    hostile: HostileRegistry, env: dict[str, str], tmp_path: Path
) -> None:
    """The control: the same server, no fault, works for every command used above."""
    hostile.mode = "none"
    for command in (pull, tags, inspect):
        got, err, _ = run(command(hostile, tmp_path), env, tmp_path)
        assert got == 0, err

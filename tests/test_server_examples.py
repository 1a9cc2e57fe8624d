"""The README demo and the offline-transfer example run end to end (they use ``serve``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_make_demo_content_is_deterministic(tmp_path: Path) -> None:
    for name in ("one", "two"):
        subprocess.run(
            [sys.executable, str(ROOT / "examples/make_demo_content.py"), str(tmp_path / name)],
            check=True,
            capture_output=True,
        )
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*"))
    assert len([f for f in files if f.parts[0] == "blobs" and len(f.parts) == 3]) == 6
    for rel in files:
        a, b = tmp_path / "one" / rel, tmp_path / "two" / rel
        assert a.is_dir() == b.is_dir() and (a.is_dir() or a.read_bytes() == b.read_bytes())
    total = sum(p.stat().st_size for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert total < 8 * 1024  # "a few KiB"


def test_demo(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples/demo.py")],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(
        r"the first pull transferred [1-9]\d* bytes; the second transferred 0 bytes", proc.stdout
    )
    assert "shared with layouts:      6" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # its temporary directory is gone


@pytest.mark.registry
def test_offline_transfer_script(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "examples/offline_transfer.sh")],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "transfer.tar.zst: OK" in proc.stdout
    assert proc.stdout.count(": ok; 2 ref(s), 6 blob(s) verified") == 2
    assert proc.stdout.rstrip().endswith("at site B")
    assert list(tmp_path.iterdir()) == []

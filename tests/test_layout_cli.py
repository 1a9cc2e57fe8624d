"""``hybridstore refs|tag|untag --layout`` and ``hybridstore layout verify|gc``, as a user runs
them: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.oci_builder import LayoutBuilder

SCRIPT = Path(sys.executable).with_name("hybridstore")
NAME = "registry.example.com/charts/app:1.2.3"


def hs(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDSTORE_")}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env
    )


def hs_json(*args: str) -> Any:
    done = hs(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_refs_tag_untag(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    img = b.image("latest", layers=1)
    assert hs_json("refs", "--layout", str(tmp_path)) == [
        {
            "name": "latest",
            "digest": img.digest,
            "mediaType": img.manifest.media_type,
            "size": img.manifest.size,
            "platform": "linux/amd64",
        }
    ]
    tagged = hs_json("tag", "--layout", str(tmp_path), "latest", NAME)
    assert (tagged["name"], tagged["digest"]) == (NAME, img.digest)
    listing = hs("refs", "--layout", str(tmp_path))
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == ["latest", NAME]

    assert hs_json("untag", "--layout", str(tmp_path), "latest")["digest"] == img.digest
    assert [r["name"] for r in hs_json("refs", "--layout", str(tmp_path))] == [NAME]
    # by digest, and by a short tag that is unambiguous
    assert hs_json("tag", "--layout", str(tmp_path), img.digest, "again")["digest"] == img.digest
    assert hs("untag", "--layout", str(tmp_path), "1.2.3").returncode == 0
    assert [r["name"] for r in hs_json("refs", "--layout", str(tmp_path))] == ["again"]


def test_errors_are_one_line_with_the_documented_exit_codes(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    b.image("latest", layers=1)
    missing = hs("untag", "--layout", str(tmp_path / "l"), "nope")
    assert missing.returncode == 4
    assert missing.stderr.count("\n") == 1 and "nope" in missing.stderr
    not_layout = hs("refs", "--layout", str(tmp_path))
    assert not_layout.returncode == 4 and "not an OCI layout" in not_layout.stderr

    victim = tmp_path / "victim"
    victim.write_text("{}")
    (tmp_path / "l" / "index.json").unlink()
    (tmp_path / "l" / "index.json").symlink_to(victim)
    planted = hs("tag", "--layout", str(tmp_path / "l"), "latest", "x")
    assert planted.returncode == 11
    assert "symlink" in planted.stderr and "Traceback" not in planted.stderr
    assert victim.read_text() == "{}"


def test_layout_verify_exit_codes_and_json(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    img = b.image("app", layers=2)
    ok = hs("layout", "verify", str(tmp_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok" in ok.stdout
    report = hs_json("layout", "verify", str(tmp_path))
    assert report["ok"] is True and report["blobsChecked"] == 4

    b.blob_path(img.layers[0].digest).write_bytes(b"x" * img.layers[0].size)
    bad = hs("layout", "verify", str(tmp_path))
    assert bad.returncode == 1
    assert "corrupt" in bad.stdout
    bad_json = hs("layout", "verify", str(tmp_path), "--json")
    assert bad_json.returncode == 1
    assert json.loads(bad_json.stdout)["ok"] is False


def test_layout_gc_dry_run_and_grace(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    b.image("keep", layers=1, seed="keep")
    drop = b.image("drop", layers=1, seed="drop")
    assert hs("untag", "--layout", str(tmp_path), "drop").returncode == 0
    before = sorted((tmp_path / "blobs" / "sha256").iterdir())

    recent = hs_json("layout", "gc", str(tmp_path))  # just written: inside the grace period
    assert recent["removed"] == [] and len(recent["keptRecent"]) == 3
    dry = hs_json("layout", "gc", str(tmp_path), "--dry-run", "--grace", "0")
    assert {r["digest"] for r in dry["removed"]} == set(drop.blobs)
    assert dry["dryRun"] is True
    assert sorted((tmp_path / "blobs" / "sha256").iterdir()) == before

    done = hs("layout", "gc", str(tmp_path), "--grace", "0")
    assert done.returncode == 0
    assert "removed 3 blob(s)" in done.stdout
    left = {p.name for p in (tmp_path / "blobs" / "sha256").iterdir()}
    assert left == {p.name for p in before} - {blob.hex for blob in drop.blobs.values()}
    assert hs("layout", "verify", str(tmp_path)).returncode == 0

"""The benchmark harness (benchmarks/run.py) works end to end, at a tiny scale.

Only that it runs, reports every row, and that the concurrency benchmark's
request count holds: timing is never asserted (issue 8).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support import require_binary

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]

REPO = Path(__file__).resolve().parents[1]
PULL_ROWS = (
    "hybridstore-cold",
    "hybridstore-warm",
    "skopeo",
    "skopeo-shared-cold",
    "skopeo-shared-warm",
    "*limit: requests-4*",
    "*limit: curl-files*",
    "*limit: curl-Z4-files*",
    "*limit: curl-files+fsync*",
)
CONCURRENCY_ROWS = ("hybridstore-x1-cold", "hybridstore-x8-cold", "hybridstore-x8-warm")


def test_harness_writes_the_report_and_counts_one_get_per_blob(tmp_path: Path) -> None:
    require_binary("curl")
    require_binary("/usr/bin/time")
    out = tmp_path / "results" / "latest.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run.py"),
            "--scale=0.0005",
            "--runs=1",
            "--warmup=0",
            "--max-repeats=0",  # no timing is asserted, so a busy machine need not wait
            "--workloads=chart,concurrent,sync-concurrent",
            f"--out={out}",
            f"--workdir={tmp_path}",
            "--allow-page-reporting",  # a test does not retune the machine's kernel
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    assert text.strip() == proc.stdout.strip()  # the same table is printed
    for row in PULL_ROWS:
        assert f"| chart | {row} | " in text, row
    for row in CONCURRENCY_ROWS:
        assert f"| {row} | " in text, row
    assert "## Goals of issue 8" in text
    assert "FAILED" not in text
    assert_tables_are_rectangular(text)

    data = json.loads(out.with_suffix(".json").read_text())
    concurrent = next(w for w in data["workloads"] if w["name"] == "concurrent")
    assert concurrent["blob_endpoints"] == 33  # 32 layers + config, behind /blobs/
    rows = {(r["workload"], r["tool"]): r for r in data["rows"]}
    for tool in ("hybridstore-x1-cold", "hybridstore-x8-cold"):
        row = rows[("concurrent", tool)]
        assert row["error"] is None, row["error"]
        assert [r["blob_gets"] for r in row["requests"]] == [33], tool
    for tool in ("hybridstore-sync-x1-cold", "hybridstore-sync-x8-cold"):
        row = rows[("sync-concurrent", tool)]
        assert row["error"] is None, row["error"]
        assert [r["blob_gets"] for r in row["requests"]] == [33], tool
    assert "## Goals of issue 18 (sync)" in text
    warm = rows[("concurrent", "hybridstore-x8-warm")]
    assert [r["blob_gets"] for r in warm["requests"]] == [0]
    assert not list(tmp_path.glob("hybridstore-bench-*")), "work directory left behind"


def _bench_module(name: str) -> ModuleType:
    """A module of benchmarks/, which is not a package."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_freed_memory_is_held_for_the_run_and_the_setting_restored(tmp_path: Path) -> None:
    vmmemory = _bench_module("vmmemory")
    knob = tmp_path / "min_free_ms"
    knob.write_text("0\n")
    with vmmemory.freed_memory_kept(True, knob) as note:
        assert knob.read_text() == str(vmmemory.HOLD_MS)
        assert "0 -> " in note
    assert knob.read_text() == "0"
    with vmmemory.freed_memory_kept(False, knob) as note:
        assert knob.read_text() == "0" and "left as it is" in note
    with vmmemory.freed_memory_kept(True, tmp_path / "absent") as note:
        assert "no free page reporting" in note


def assert_tables_are_rectangular(markdown: str) -> None:
    """Every row of every Markdown table has as many cells as its header."""
    width = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        cells = line.count(" | ") + 1
        if width is None:
            width = cells
        assert cells == width, line


def test_an_ext4_without_a_journal_is_named_in_the_report(tmp_path: Path) -> None:
    """The work dir's filesystem line says so: there file creation after deletions is slow."""
    measure = _bench_module("measure")
    sysfs = tmp_path / "ext4"
    (sysfs / "vda").mkdir(parents=True)
    (sysfs / "vda" / "journal_task").write_text("<none>\n")
    (sysfs / "loop0").mkdir()
    (sysfs / "loop0" / "journal_task").write_text("5529\n")
    assert measure.ext4_journal("/dev/vda", sysfs) is False
    assert measure.ext4_journal("/dev/loop0", sysfs) is True
    assert measure.ext4_journal("/dev/sdz", sysfs) is None  # not an ext4 sysfs knows
    assert measure.EXT4_WITHOUT_JOURNAL not in measure.filesystem(tmp_path, tmp_path / "none")


def test_mirror_benchmark_runs_and_the_second_wave_costs_the_upstream_nothing(
    tmp_path: Path,
) -> None:
    """benchmarks/mirror.py end to end at a tiny scale. With one machine first, the
    other three add no upstream GET: 2 per blob is distribution 2.8's proxy itself
    (one stream for the client, one for its store)."""
    require_binary("/usr/bin/time")
    out = tmp_path / "mirror.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "mirror.py"), "--scale=0.0005", "--runs=1",
         f"--out={out}"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    assert "| ratio mirror / direct |" in text
    assert "| 1 cache, then 3 at once, cold mirror: upstream blob GETs | 66 (blobs: 33) |" in text
    assert_tables_are_rectangular(text)


def test_cache_admin_scale_runs_every_command(tmp_path: Path) -> None:
    """At a tiny scale: every row is measured and every command succeeds on the tree."""
    require_binary("/usr/bin/time")
    out = tmp_path / "scale.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cache_admin_scale.py"), "--blobs", "60",
         "--layouts", "5", "--dir", str(tmp_path), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| `cache")]
    assert len(rows) == 7 and all(row.endswith("| 0 |") for row in rows), rows
    assert_tables_are_rectangular(out.read_text())

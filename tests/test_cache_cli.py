"""``hybridstore cache info|du|path|verify|prune``, human and ``--json`` output, errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_cache_support import seeded_bytes, tree_snapshot

from hybridstore.cli import cli, main
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache
from hybridstore.units import parse_duration, parse_size

DAY = 86400.0


@pytest.fixture
def populated(tmp_path: Path) -> tuple[Path, list[Digest]]:
    """A cache with an old blob, a recent one, and one a layout hard-links."""
    root = tmp_path / "cache"
    cache = BlobCache(root)
    ds = []
    for seed, days in (("old", 10), ("recent", 0), ("linked", 10)):
        data = seeded_bytes(seed, 4096)
        d = cache.ingest_bytes(Digest.of_bytes(data), data).digest
        when = time.time() - days * DAY
        os.utime(cache.path(d), (when, when))
        ds.append(d)
    os.link(cache.path(ds[2]), tmp_path / "layout-blob")
    return root, ds


def run(root: Path, *args: str) -> Result:
    result = CliRunner().invoke(cli, ["--cache", str(root), "cache", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Through ``main`` (as the console script runs), so library errors map to exit codes."""
    with pytest.raises(SystemExit) as e:
        main(list(argv))
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def test_info(populated: tuple[Path, list[Digest]]) -> None:
    root, _ = populated
    r = run(root, "info", "--json")
    assert r.exit_code == 0
    info = json.loads(r.output)
    assert info["root"] == str(root) and info["blob_count"] == 3
    assert info["blob_bytes"] == 3 * 4096 and info["shared_count"] == 1
    assert info["shared_bytes"] == 4096 and info["partial_count"] == 0
    human = run(root, "info").output
    assert str(root) in human and "3 (12.0 KiB)" in human and "shared with layouts:" in human


def test_info_uses_env_when_no_option(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli, ["cache", "info", "--json"], env={"HYBRIDSTORE_CACHE_DIR": str(tmp_path)}
    )
    assert r.exit_code == 0 and json.loads(r.output)["root"] == str(tmp_path)
    assert json.loads(r.output)["exists"] is True and json.loads(r.output)["blob_count"] == 0


def test_du(populated: tuple[Path, list[Digest]]) -> None:
    root, _ = populated
    usage = json.loads(run(root, "du", "--json").output)
    areas = {a["name"]: a for a in usage["areas"]}
    assert areas["blobs"]["files"] == 3 and areas["blobs"]["bytes"] == 3 * 4096
    assert usage["cache_only_bytes"] == 2 * 4096
    human = run(root, "du").output
    assert "blobs (3 files)" in human and "total" in human


def test_path(populated: tuple[Path, list[Digest]], capsys: pytest.CaptureFixture[str]) -> None:
    root, ds = populated
    assert run(root, "path").output.strip() == str(root)
    assert json.loads(run(root, "path", "--json").output) == {"path": str(root)}
    blob = json.loads(run(root, "path", str(ds[0]), "--json").output)
    assert blob == {"digest": str(ds[0]), "path": str(root / "blobs" / "sha256" / ds[0].encoded)}
    code, _, err = run_main(capsys, "--cache", str(root), "cache", "path", "sha256:../../etc")
    assert code == 10 and err.count("\n") == 1 and "invalid digest" in err
    absent = str(Digest.of_bytes(b"absent"))
    code, _, err = run_main(capsys, "--cache", str(root), "cache", "path", absent)
    assert code == 4 and "not in the cache" in err and "Traceback" not in err


def test_verify_and_repair(populated: tuple[Path, list[Digest]]) -> None:
    root, ds = populated
    r = run(root, "verify", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True
    bad = root / "blobs" / "sha256" / ds[1].encoded
    bad.chmod(0o644)
    bad.write_bytes(b"\0" * 4096)
    r = run(root, "verify")
    assert r.exit_code == 1 and f"corrupt: {bad}" in r.output
    r = run(root, "verify", "--repair", "--json")
    report = json.loads(r.output)
    assert r.exit_code == 0 and report["ok"] and report["corrupt"][0]["quarantined_to"]
    assert not bad.exists()


def test_prune_dry_run_then_real(populated: tuple[Path, list[Digest]]) -> None:
    root, ds = populated
    before = tree_snapshot(root)
    r = run(root, "prune", "--older-than", "7d", "--dry-run", "--json")
    plan = json.loads(r.output)
    assert r.exit_code == 0 and plan["dry_run"] is True
    assert {e["digest"] for e in plan["removed"]} == {str(ds[0]), str(ds[2])}
    assert plan["freed_bytes"] == 4096  # the linked blob's space stays with the layout
    assert tree_snapshot(root) == before
    human = run(root, "prune", "--older-than", "7d", "--unlinked", "--dry-run").output
    assert f"would remove {ds[0]}" in human and str(ds[2]) not in human
    assert tree_snapshot(root) == before
    r = run(root, "prune", "--older-than", "7d", "--unlinked")
    assert r.exit_code == 0 and "removed 1 blob(s)" in r.output
    assert {d for d, _ in BlobCache(root).blobs()} == {ds[1], ds[2]}


def test_prune_max_size_and_grace(populated: tuple[Path, list[Digest]]) -> None:
    root, ds = populated
    r = run(root, "prune", "--max-size", "0", "--json")
    report = json.loads(r.output)
    assert report["kept_in_grace"] == 1 and report["budget_met"] is False
    assert {d for d, _ in BlobCache(root).blobs()} == {ds[1]}
    r = run(root, "prune", "--max-size", "0", "--grace", "0s")
    assert "removed 1 blob(s)" in r.output


def test_prune_rejects_bad_values(populated: tuple[Path, list[Digest]]) -> None:
    root, _ = populated
    r = CliRunner().invoke(cli, ["--cache", str(root), "cache", "prune", "--older-than", "soon"])
    assert r.exit_code == 2 and "not a duration" in r.output
    r = CliRunner().invoke(
        cli, ["--cache", str(root), "cache", "prune", "--max-size", "10 parsecs"]
    )
    assert r.exit_code == 2 and "not a size" in r.output


def test_prune_help_defines_used() -> None:
    r = CliRunner().invoke(cli, ["cache", "prune", "--help"])
    assert '"Used" means' in r.output and "--grace" in r.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800),
                          ("2w", 1209600), ("1.5h", 5400)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("100", 100), ("100b", 100), ("1k", 1024), ("512M", 512 << 20),
                       ("10G", 10 << 30), ("1.5GiB", 3 << 29), ("2TB", 2 << 40)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "d", "-1d", "1y", "1 2"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)

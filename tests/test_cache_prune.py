"""Pruning policies, the grace period, sweeping stale files, verify and the inventory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_cache_support import (
    blob_files,
    expect_line,
    reap,
    seeded_bytes,
    spawn,
    tell,
    tree_snapshot,
)

from hybridstore.errors import InvalidInputError
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import cache_info, disk_usage, prune_cache, verify_cache

DAY = 86400.0


def add(cache: BlobCache, seed: str, size: int = 10_000, age_days: float = 0.0) -> Digest:
    data = seeded_bytes(seed, size)
    d = cache.ingest_bytes(Digest.of_bytes(data), data).digest
    if age_days:
        when = time.time() - age_days * DAY
        os.utime(cache.path(d), (when, when))
    return d


def age(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


def present(cache: BlobCache) -> set[Digest]:
    return {d for d, _ in cache.blobs()}


def test_older_than_removes_only_old_blobs(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    old = add(cache, "old", age_days=10)
    recent = add(cache, "recent", age_days=2)
    new = add(cache, "new")
    report = prune_cache(cache, older_than=7 * DAY)
    assert [e.digest for e in report.removed] == [old]
    assert present(cache) == {recent, new}
    assert report.removed_bytes == report.freed_bytes == 10_000
    assert report.remaining_bytes == 20_000 and report.budget_met is None


def test_no_policy_removes_no_blob(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    old = add(cache, "old", age_days=100)
    assert prune_cache(cache, grace=0).removed == () and present(cache) == {old}


def test_grace_period_protects_recent_use_even_from_max_size(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    old = add(cache, "old", age_days=3)
    fresh = add(cache, "fresh")
    report = prune_cache(cache, max_size=0, grace=3600)
    assert [e.digest for e in report.removed] == [old]
    assert present(cache) == {fresh}
    assert report.kept_in_grace == 1 and report.budget_met is False
    cache.touch(fresh)
    assert prune_cache(cache, older_than=0, grace=3600).removed == ()


def test_max_size_evicts_least_recently_used_first(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    ds = [add(cache, f"b{i}", size=1000, age_days=10 - i) for i in range(5)]  # b0 oldest
    cache.touch(ds[0])  # now the most recently used
    age(cache.path(ds[0]), 0.5)
    report = prune_cache(cache, max_size=2500, grace=0)
    assert [e.digest for e in report.removed] == [ds[1], ds[2], ds[3]]
    assert present(cache) == {ds[0], ds[4]} and report.budget_met is True
    assert report.remaining_bytes == 2000


def test_unlinked_keeps_blobs_a_layout_links(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    linked = add(cache, "linked", age_days=10)
    loose = add(cache, "loose", age_days=10)
    os.link(cache.path(linked), tmp_path / "layout-blob")
    report = prune_cache(cache, unlinked=True, grace=0)
    assert [e.digest for e in report.removed] == [loose]
    assert present(cache) == {linked}
    # Without --unlinked the linked blob goes too, but that frees nothing: the layout keeps it.
    report = prune_cache(cache, older_than=DAY, grace=0)
    assert [e.digest for e in report.removed] == [linked] and report.freed_bytes == 0
    assert (tmp_path / "layout-blob").read_bytes() == seeded_bytes("linked", 10_000)


def test_blob_used_after_planning_is_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hybridstore.store.cache_admin as admin

    cache = BlobCache(tmp_path)
    d = add(cache, "raced", age_days=10)
    real = admin._Policy.still_removable

    def used_meanwhile(policy: admin._Policy, entry: admin.PruneEntry) -> bool:
        cache.touch(d)  # a pull reuses the blob between the plan and the unlink
        return real(policy, entry)

    monkeypatch.setattr(admin._Policy, "still_removable", used_meanwhile)
    assert prune_cache(cache, older_than=DAY, grace=0).removed == ()
    assert present(cache) == {d}


def _stale_files(cache: BlobCache) -> dict[str, Path]:
    """One of each kind of leftover, all older than an hour."""
    cache._prepare()
    dead = Digest.of_bytes(b"dead writer")
    files = {
        "partial": cache.partial_path(dead),
        "temp": cache.ingest_dir / f"sha256-{dead.encoded}.abc123.tmp",
        "foreign": cache.ingest_dir / "oras-ingest-123",
        "lock": cache.lock_path(Digest.of_bytes(b"killed holder")),
        "quarantined": cache.quarantine_dir / f"sha256-{dead.encoded}.1",
    }
    cache.quarantine_dir.mkdir(exist_ok=True)
    for path in files.values():
        path.write_bytes(b"x" * 100)
        age(path, 1)
    return files


def test_stale_ingest_lock_and_quarantine_files_are_swept(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    files = _stale_files(cache)
    young = cache.ingest_dir / "sha256-young.tmp"
    young.write_bytes(b"in progress")
    report = prune_cache(cache, grace=3600)
    assert set(report.swept) == set(files.values()) and report.swept_bytes == 500
    assert not any(p.exists() for p in files.values())
    assert young.exists()


def test_a_partial_whose_lock_is_held_is_not_swept(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    d = Digest.of_bytes(b"slow download")
    cache._prepare()
    partial = cache.partial_path(d)
    partial.write_bytes(b"prefix")
    age(partial, 1)
    holder = spawn("hold-lock", str(tmp_path), str(d))
    try:
        expect_line(holder, "locked")
        assert prune_cache(cache, grace=60, dry_run=True).swept == ()
        assert prune_cache(cache, grace=60).swept == ()
        assert partial.exists()
    finally:
        tell(holder, "release")
        expect_line(holder, "released")
        reap([holder])
    assert prune_cache(cache, grace=60).swept == (partial,)


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    ds = [add(cache, f"d{i}", age_days=10) for i in range(3)]
    os.link(cache.path(ds[0]), tmp_path / "outside-link")
    _stale_files(cache)
    before = tree_snapshot(tmp_path)
    plans = [
        prune_cache(cache, older_than=DAY, grace=0, dry_run=True),
        prune_cache(cache, max_size=0, grace=0, dry_run=True),
        prune_cache(cache, unlinked=True, grace=0, dry_run=True),
    ]
    assert tree_snapshot(tmp_path) == before
    assert [len(p.removed) for p in plans] == [3, 3, 2] and all(len(p.swept) == 5 for p in plans)
    assert plans[0].removed_bytes == 30_000 and plans[0].freed_bytes == 20_000
    real = prune_cache(cache, older_than=DAY, grace=0)
    assert {e.digest for e in real.removed} == set(ds) and set(real.swept) == set(plans[0].swept)


def test_negative_policy_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="grace"):
        prune_cache(BlobCache(tmp_path), grace=-1)


def test_verify_finds_and_repairs_corrupt_blobs(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    good = add(cache, "good", size=300_000)
    bad = add(cache, "bad", size=300_000)
    os.link(cache.path(bad), tmp_path / "layout-copy")
    path = cache.path(bad)
    path.chmod(0o644)
    with open(path, "r+b") as f:  # same size, flipped byte: only a re-hash finds it
        f.seek(1234)
        f.write(b"\xff")
    (cache.blobs_dir / "sha256" / "junk").write_bytes(b"?")
    cache.partial_path(good).write_bytes(b"abc")
    age(cache.partial_path(good), 1)
    assert cache.exists(bad, 300_000)  # the cheap check cannot see it
    report = verify_cache(cache)
    assert not report.ok and report.checked == 2 and report.checked_bytes == 600_000
    [corrupt] = report.corrupt
    assert corrupt.digest == bad and corrupt.links == 1 and "hashes to sha256:" in corrupt.reason
    assert report.unknown == (cache.blobs_dir / "sha256" / "junk",)
    assert [e.kind for e in report.stale_ingests] == ["partial"]
    assert path.exists()  # reporting changes nothing
    repaired = verify_cache(cache, repair=True)
    assert repaired.ok and repaired.corrupt[0].quarantined_to is not None
    assert not path.exists() and present(cache) == {good}
    assert (
        repaired.corrupt[0].quarantined_to.read_bytes() == (tmp_path / "layout-copy").read_bytes()
    )
    assert verify_cache(cache).ok


def test_info_and_disk_usage(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    empty = cache_info(BlobCache(tmp_path / "never"))
    assert (empty.exists, empty.blob_count, empty.layout_version) == (False, 0, None)
    shared = add(cache, "shared", size=5000)
    add(cache, "alone", size=7000)
    os.link(cache.path(shared), tmp_path / "layout-blob")
    cache.partial_path(Digest.of_bytes(b"p")).write_bytes(b"x" * 300)
    info = cache_info(cache)
    assert (info.blob_count, info.blob_bytes) == (2, 12_000)
    assert (info.shared_count, info.shared_bytes) == (1, 5000)
    assert (info.partial_count, info.partial_bytes) == (1, 300)
    assert info.layout_version == 1 and info.locks_trusted and info.exists
    du = disk_usage(cache)
    areas = {a.name: a for a in du.areas}
    assert (areas["blobs"].files, areas["blobs"].bytes) == (2, 12_000)
    assert (areas["ingest"].files, areas["ingest"].bytes) == (1, 300)
    assert areas["other"].files == 3  # layout file, CACHEDIR.TAG, .gitignore
    assert du.cache_only_bytes == 7000
    assert du.total_bytes == sum(a.bytes for a in du.areas)
    assert len(blob_files(tmp_path / "cache")) == 2

"""The cache never leaves its root: every directory it reads or writes below the root is a
real directory there. Planted symlinks are refused (or replaced when that loses nothing)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybridstore.errors import StorageError
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import prune_cache

DATA = b"confined blob\n"
DIGEST = Digest.parse("sha256:" + hashlib.sha256(DATA).hexdigest())
AREAS = ["blobs", "blobs/sha256", "ingest", "locks"]


def plant(cache: Path, area: str, target: Path) -> None:
    link = cache / area
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


@pytest.mark.parametrize("area", AREAS)
def test_a_symlinked_area_with_content_is_refused(tmp_path: Path, area: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("theirs")
    cache = tmp_path / "cache"
    plant(cache, area, outside)
    with pytest.raises(StorageError, match="is a symlink .*replace the link with a real"):
        BlobCache(cache).ingest_bytes(DIGEST, DATA)
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert (cache / area).is_symlink()  # left for the user to fix


@pytest.mark.parametrize("area", AREAS)
@pytest.mark.parametrize("target", ["empty", "dangling"])
def test_an_empty_or_dangling_symlinked_area_is_replaced(
    tmp_path: Path, area: str, target: str
) -> None:
    outside = tmp_path / "outside"
    if target == "empty":
        outside.mkdir()
    cache = tmp_path / "cache"
    plant(cache, area, outside)
    result = BlobCache(cache).ingest_bytes(DIGEST, DATA)
    assert not (cache / area).is_symlink() and (cache / area).is_dir()
    assert result.path.read_bytes() == DATA
    assert result.path.resolve().is_relative_to(cache.resolve())
    assert not outside.exists() or list(outside.iterdir()) == []


def test_a_symlinked_alg_dir_is_no_cache_hit(tmp_path: Path) -> None:
    """Reading through a planted link would hand out a file nobody verified."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / DIGEST.encoded).write_bytes(b"not the blob")
    cache = tmp_path / "cache"
    BlobCache(cache).ingest_bytes(Digest.of_bytes(b"other"), b"other")  # a real cache
    plant(cache, "blobs/sha512", outside)
    with pytest.raises(StorageError, match="blobs/sha512 is a symlink"):
        BlobCache(cache).exists(DIGEST)


def test_a_file_where_an_area_belongs_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ingest").write_text("x")
    with pytest.raises(StorageError, match="ingest is not a directory"):
        BlobCache(cache).ingest_bytes(DIGEST, DATA)


def test_the_root_itself_may_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "cache").symlink_to(real)
    BlobCache(tmp_path / "cache").ingest_bytes(DIGEST, DATA)
    assert (real / "blobs/sha256" / DIGEST.encoded).read_bytes() == DATA


def test_new_areas_come_from_the_same_helper(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_text("x")
    (tmp_path / "cache" / "layouts").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="layouts is a symlink"):
        cache.real_dir("layouts")
    assert cache.real_dir("registry/v1") == cache.root / "registry/v1"
    assert (cache.root / "registry/v1").is_dir()


def test_cli_reports_a_symlinked_area_in_one_line(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("theirs")
    cache = tmp_path / "cache"
    plant(cache, "blobs", outside)
    done = subprocess.run(
        [sys.executable, "-m", "hybridstore.cli", "--cache", str(cache), "cache", "info"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 11, done.stderr
    assert done.stderr.count("\n") == 1 and "is a symlink" in done.stderr


def test_prune_never_sweeps_through_a_symlinked_area(tmp_path: Path) -> None:
    """Prune deletes stale files in ingest/ and locks/: through a planted link those
    would be someone else's files."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "sha256-old.partial"
    victim.write_text("not the cache's")
    os.utime(victim, (0, 0))  # as stale as can be
    cache = tmp_path / "cache"
    BlobCache(cache).ingest_bytes(DIGEST, DATA)
    shutil.rmtree(cache / "ingest")
    (cache / "ingest").symlink_to(outside)
    with pytest.raises(StorageError, match="ingest is a symlink"):
        prune_cache(BlobCache(cache), older_than=0)
    assert victim.read_text() == "not the cache's"

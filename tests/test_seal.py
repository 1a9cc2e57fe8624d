"""The verification seal in a blob's mtime: set by verifiers, kept by uses, broken by writes."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridstore.fs.seal import is_sealed, seal
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import verify_cache
from hybridstore.store.layout_registry import REGISTRY_DIR, LayoutRegistry


def test_a_write_breaks_the_seal_and_a_use_keeps_it(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    d = cache.ingest_bytes(Digest.of_bytes(b"hello"), b"hello").digest
    path = cache.path(d)
    assert is_sealed(os.lstat(path))  # published = verified
    cache.touch(d)
    assert is_sealed(os.lstat(path))  # a use moves "last used" and keeps the seal
    os.chmod(path, 0o644)
    path.write_bytes(b"HELLO")  # same size, other bytes
    assert not is_sealed(os.lstat(path))
    assert cache.hit(d, 5) is None and not cache.exists(d)  # re-hashed, set aside


def test_cache_verify_seals_a_good_blob_without_making_it_recent(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    d = cache.ingest_bytes(Digest.of_bytes(b"oras wrote me"), b"oras wrote me").digest
    week_ago = time.time_ns() - 7 * 86400 * 10**9
    os.utime(cache.path(d), ns=(week_ago, week_ago))  # as another tool left it: no seal
    assert not is_sealed(os.lstat(cache.path(d)))
    assert verify_cache(cache).ok
    after = os.lstat(cache.path(d))
    second = week_ago // 10**9
    assert is_sealed(after) and after.st_mtime_ns // 10**9 in (second, second - 1)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_in_a_record_never_break_the_listing(data: bytes) -> None:
    """A record file is parsed: whatever it holds, listing the registry yields only
    well-formed records of layouts that are checked, never an exception."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = LayoutRegistry(root)
        (root / REGISTRY_DIR).mkdir()
        (root / REGISTRY_DIR / registry._record_name(Path("/nowhere/x"))).write_bytes(data)
        assert all(k.state == "missing" for k in registry)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=3000))
def test_sealing_holds_for_any_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "f"
        target.write_bytes(data)
        seal(target, os.lstat(target))
        assert is_sealed(os.lstat(target))

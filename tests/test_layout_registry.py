"""The cache's layout registry: one atomic file per layout, moved/deleted layouts detected,
concurrent recorders in separate processes never lose an entry."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder

from hybridstore.errors import StorageError
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import prune_cache
from hybridstore.store.cache_layouts import known_layouts
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_registry import REGISTRY_DIR, LayoutRegistry

Builder = Callable[..., LayoutBuilder]


def _fill(root: Path, cache: BlobCache, builder: LayoutBuilder, name: str = "app:1") -> OCILayout:
    """A layout at ``root`` with one image linked from ``cache`` and tagged ``name``."""
    layout = OCILayout.create(root, cache=cache)
    img = builder.image(None, layers=1, seed=name)
    for blob in [*img.layers, img.config, img.manifest]:
        layout.push_bytes(Descriptor.from_json(blob.descriptor()), blob.data)
    layout.tag(Descriptor.from_json(img.descriptor()), name)
    return layout


def _states(cache: BlobCache) -> dict[Path, str]:
    return {k.path: k.state for k in LayoutRegistry(cache.root)}


def test_linking_records_the_layout_once_by_absolute_path(
    tmp_path: Path, oci_builder: Builder
) -> None:
    cache = BlobCache(tmp_path / "cache")
    os.chdir(tmp_path)
    _fill(Path("rel/layout"), cache, oci_builder())
    _fill(Path("rel/layout"), cache, oci_builder(), "app:2")  # a second pull: same record
    records = list((cache.root / REGISTRY_DIR).iterdir())
    assert len(records) == 1
    record = json.loads(records[0].read_bytes())
    assert record["path"] == str(tmp_path / "rel/layout")
    assert set(record) == {"path", "device", "inode"}  # no refs, no digests: index.json has them
    [usage] = known_layouts(cache)
    assert usage.known.state == "live" and usage.refs == 2


def test_a_staging_layout_is_not_recorded(
    tmp_path: Path, oci_builder: Builder
) -> None:
    cache = BlobCache(tmp_path / "cache")
    layout = OCILayout.create(tmp_path / "staging", cache=cache, known=False)
    blob = oci_builder().image(None, layers=1).config
    layout.push_bytes(Descriptor.from_json(blob.descriptor()), blob.data)
    assert list(LayoutRegistry(cache.root)) == []


def test_deleted_moved_and_replaced_layouts_are_detected(
    tmp_path: Path, oci_builder: Builder
) -> None:
    cache = BlobCache(tmp_path / "cache")
    for name in ("gone", "moved", "replaced", "kept"):
        _fill(tmp_path / name, cache, oci_builder())
    shutil.rmtree(tmp_path / "gone")
    (tmp_path / "moved").rename(tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "replaced")
    OCILayout.create(tmp_path / "replaced")  # another layout at that path, never linked
    assert _states(cache) == {
        tmp_path / "gone": "missing",
        tmp_path / "moved": "missing",
        tmp_path / "replaced": "replaced",
        tmp_path / "kept": "live",
    }
    _fill(tmp_path / "elsewhere", cache, oci_builder(), "app:2")  # the next pull records it
    assert _states(cache)[tmp_path / "elsewhere"] == "live"

    forgotten = {u.known.path for u in known_layouts(cache, forget_missing=True) if u.forgotten}
    assert forgotten == {tmp_path / "gone", tmp_path / "moved", tmp_path / "replaced"}
    assert _states(cache) == {tmp_path / "kept": "live", tmp_path / "elsewhere": "live"}


def test_forget_keeps_a_layout_recorded_again_meanwhile(
    tmp_path: Path, oci_builder: Builder
) -> None:
    cache = BlobCache(tmp_path / "cache")
    _fill(tmp_path / "l", cache, oci_builder())
    shutil.rmtree(tmp_path / "l")
    registry = LayoutRegistry(cache.root)
    [stale] = list(registry)
    _fill(tmp_path / "l", cache, oci_builder())  # a pull re-creates it after we read the record
    assert registry.forget(stale) is False
    assert _states(cache) == {tmp_path / "l": "live"}


def test_a_symlinked_registry_directory_is_refused(
    tmp_path: Path, oci_builder: Builder, caplog: pytest.LogCaptureFixture
) -> None:
    cache = BlobCache(tmp_path / "cache")
    cache.ingest_bytes(*_one(oci_builder()))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "theirs").write_bytes(b"x")
    (cache.root / REGISTRY_DIR).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="is a symlink"):
        list(LayoutRegistry(cache.root))
    _fill(tmp_path / "l", cache, oci_builder())  # the pull itself still works, with a warning
    assert "cannot record" in caplog.text
    assert [p.name for p in (tmp_path / "elsewhere").iterdir()] == ["theirs"]


def _one(builder: LayoutBuilder) -> tuple[Digest, bytes]:
    blob = builder.image(None, layers=1).config
    return Descriptor.from_json(blob.descriptor()).digest, blob.data


def test_records_that_are_not_ours_are_skipped(
    tmp_path: Path, oci_builder: Builder
) -> None:
    cache = BlobCache(tmp_path / "cache")
    _fill(tmp_path / "l", cache, oci_builder())
    directory = cache.root / REGISTRY_DIR
    (directory / "junk.json").write_text("{not json")
    (directory / ("0" * 64 + ".json")).write_text(
        json.dumps({"path": "/x", "device": 1, "inode": 2})
    )
    assert _states(cache) == {tmp_path / "l": "live"}


def _record_many(cache_root: str, base: str, worker: int, count: int) -> None:
    registry = LayoutRegistry(Path(cache_root))
    for i in range(count):
        layout = Path(base) / f"w{worker}-{i}"
        OCILayout.create(layout)
        registry.record(layout)
        registry.record(Path(base) / "shared")  # every process also records one layout


def test_concurrent_processes_lose_no_record(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    cache._prepare()
    OCILayout.create(tmp_path / "layouts" / "shared")
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_record_many, args=(str(cache.root), str(tmp_path / "layouts"), w, 25))
        for w in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    states = _states(cache)
    assert len(states) == 6 * 25 + 1 and set(states.values()) == {"live"}
    leftovers = [p for p in (cache.root / REGISTRY_DIR).iterdir() if not p.name.endswith(".json")]
    assert leftovers == []


def test_a_recorder_killed_mid_write_leaves_only_a_temp_file_that_prune_sweeps(
    tmp_path: Path, oci_builder: Builder
) -> None:
    cache = BlobCache(tmp_path / "cache")
    _fill(tmp_path / "l", cache, oci_builder())
    temp = cache.root / REGISTRY_DIR / ".deadbeef.json.k1ll3d.tmp"
    temp.write_text('{"path": "/half')  # what atomic_write_bytes leaves at a kill -9
    old = time.time() - 7200
    os.utime(temp, (old, old))
    assert _states(cache) == {tmp_path / "l": "live"}  # never read as a record
    assert temp in prune_cache(cache).swept
    assert not temp.exists() and _states(cache) == {tmp_path / "l": "live"}

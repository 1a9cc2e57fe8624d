"""Cooperative single flight: a puller does the blobs nobody else is fetching first, waits
for the others afterwards, and stops waiting as soon as the fetcher has published."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from support.oci_builder import LayoutBuilder, push_built
from support.registry import Registry
from test_cache_support import RecordingSource, expect_line, reap, spawn, tell

from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.oci.reference import Reference
from hybridstore.pull import pull
from hybridstore.remote.clients import RegistryClients
from hybridstore.remote.transport import TransportOptions
from hybridstore.store.cache import BlobCache, IngestResult
from hybridstore.store.layout import OCILayout
from hybridstore.store.layout_check import verify_layout
from hybridstore.transfer.endpoint import BlobOutcome, Progress
from hybridstore.transfer.engine import CopyOptions, copy_graph
from hybridstore.transfer.layout_endpoint import LayoutDestination
from hybridstore.transfer.pools import BlobPools
from hybridstore.transfer.registry_endpoint import RegistrySource

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
DATA = b"a blob that two processes want at once"
DIGEST = Digest.of_bytes(DATA)


@pytest.fixture
def short_lock_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a puller wrongly queues behind the held lock, it fails after 10 s, not 300."""
    monkeypatch.setenv("HYBRIDSTORE_LOCK_TIMEOUT", "10")


def test_try_ingest_defers_a_blob_another_process_is_fetching(tmp_path: Path) -> None:
    holder = spawn("hold-lock", str(tmp_path), str(DIGEST))
    try:
        expect_line(holder, "locked")
        cache = BlobCache(tmp_path)
        source = RecordingSource(DATA)
        assert cache.try_ingest(DIGEST, len(DATA), source) is None
        assert source.calls == []  # deferred at once: no wait, no fetch
        tell(holder, "release")
        expect_line(holder, "released")
    finally:
        reap([holder])
    result = cache.try_ingest(DIGEST, len(DATA), source)
    assert result is not None and result.fetched and source.calls == [0]
    assert cache.try_ingest(DIGEST, len(DATA), source) == IngestResult(
        DIGEST, len(DATA), cache.path(DIGEST), False, 0, 0
    )  # now a plain hit


class _Flag(logging.Handler):
    """Sets ``event`` when the cache logs that it waits for another process."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "held by another process" in record.getMessage():
            self.event.set()


def test_a_waiter_stops_when_the_holder_publishes_not_when_it_lets_go(
    tmp_path: Path, short_lock_timeout: None
) -> None:
    src = tmp_path / "src"
    src.write_bytes(DATA)
    cache_root = tmp_path / "cache"
    holder = spawn("hold-lock", str(cache_root), str(DIGEST), str(src))
    waiting = threading.Event()
    flag = _Flag(waiting)
    logger = logging.getLogger("hybridstore.store.cache")
    logger.addHandler(flag)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    results: list[IngestResult] = []
    errors: list[BaseException] = []
    source = RecordingSource(DATA)

    def ingest() -> None:
        try:
            results.append(BlobCache(cache_root).ingest(DIGEST, len(DATA), source))
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    waiter = threading.Thread(target=ingest)
    try:
        expect_line(holder, "locked")
        waiter.start()
        assert waiting.wait(timeout=30), "the waiter never reached its wait loop"
        tell(holder, "publish")
        expect_line(holder, "published")  # ...and the holder publishes, but keeps the lock
        waiter.join(timeout=30)  # a waiter that needed the lock would time out here (10 s)
        assert not waiter.is_alive() and errors == []
        assert results[0].fetched is False and source.calls == []
        tell(holder, "release")
        expect_line(holder, "released")
    finally:
        logger.removeHandler(flag)
        logger.setLevel(old_level)
        reap([holder])
        waiter.join(timeout=30)


class _ReleaseAfter(Progress):
    """Lets the lock holder go once ``trigger`` is in the layout; records fetch starts."""

    def __init__(self, holder: subprocess.Popen[str], trigger: str) -> None:
        self.holder, self.trigger = holder, trigger
        self.started: list[str] = []

    def start(self, desc: Descriptor) -> None:
        self.started.append(str(desc.digest))

    def done(self, desc: Descriptor, outcome: BlobOutcome) -> None:
        if str(desc.digest) == self.trigger:
            tell(self.holder, "release")
            expect_line(self.holder, "released")


def test_a_pull_fetches_what_nobody_else_is_fetching_first(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_path: Path,
    short_lock_timeout: None,
) -> None:
    """Another process holds the first blob's lock; a one-thread pull of [config, layer]
    fetches the layer first, and the config only once the holder has let go."""
    built = oci_builder().image("v1", layers=1, raw_layer_size=4096)
    push_built(built, registry, f"{repo_name}:v1")
    config, layer = built.config.digest, built.layers[0].digest
    cache_root = tmp_path / "cache"
    holder = spawn("hold-lock", str(cache_root), config)
    progress = _ReleaseAfter(holder, layer)
    try:
        expect_line(holder, "locked")
        mark = registry.access_log_mark()
        result = pull(
            f"{registry.host_port}/{repo_name}:v1",
            layout=tmp_path / "dest",
            cache=cache_root,
            transport=PLAIN,
            concurrency=1,  # one worker: queueing on the held lock would block the layer too
            progress=progress,
        )
    finally:
        reap([holder])
    gets = [
        e.path.rsplit("/", 1)[1]
        for e in registry.access_log_requests(mark)
        if e.method == "GET" and "/blobs/" in e.path
    ]
    assert gets == [layer, config]
    assert progress.started == [layer, config]
    assert result.fetched == 3 and verify_layout(OCILayout.open(tmp_path / "dest")).ok


class _CountingPools(BlobPools):
    def __init__(self) -> None:
        super().__init__(4)
        self.submitted = 0

    def submit(self, put: Callable[..., Any], desc: Descriptor, *args: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(put, desc, *args)


def test_a_warm_pull_places_every_blob_without_worker_threads(
    registry: Registry,
    oci_builder: Callable[..., LayoutBuilder],
    repo_name: str,
    tmp_path: Path,
) -> None:
    built = oci_builder().image("v1", layers=5, raw_layer_size=1024)
    push_built(built, registry, f"{repo_name}:v1")
    ref = f"{registry.host_port}/{repo_name}:v1"
    cache = BlobCache(tmp_path / "cache")
    pull(ref, layout=tmp_path / "first", cache=cache, transport=PLAIN)
    assert cache.unsynced_dirs == frozenset()  # the pull made its cache entries durable

    clients = RegistryClients(PLAIN, None)
    pools = _CountingPools()
    try:
        parsed = Reference.parse(ref)
        layout = OCILayout.create(tmp_path / "second", cache=cache)
        result = copy_graph(
            RegistrySource(clients.repository(parsed), cache),
            parsed.reference,
            LayoutDestination(layout, str(parsed)),
            CopyOptions(),
            pools=pools,
        )
    finally:
        pools.shutdown()
        clients.close()
    assert pools.submitted == 0
    assert result.fetched == 0 and {b.action for b in result.blobs} == {"linked"}
    assert verify_layout(OCILayout.open(tmp_path / "second")).ok

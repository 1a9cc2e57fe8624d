"""Real processes sharing one cache: single flight, SIGKILL at any point, prune while pulling."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_cache_support import (
    RecordingSource,
    assert_only_verified_blobs,
    blob_files,
    expect_line,
    ingest_files,
    reap,
    seeded_bytes,
    spawn,
    tell,
    write_blob_file,
)

from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache, IngestResult
from hybridstore.store.cache_admin import prune_cache

DAY = 86400.0


def test_eight_processes_fetch_one_blob_once(tmp_path: Path) -> None:
    size = 64 << 20
    src = tmp_path / "source.bin"
    digest = write_blob_file(src, size, seed="single-flight")
    counter = tmp_path / "reads.log"
    root = tmp_path / "cache"
    procs = [
        spawn("ingest-counted", str(root), str(digest), str(size), str(src), str(counter))
        for _ in range(8)
    ]
    try:
        for p in procs:
            expect_line(p, "ready")
        for p in procs:  # all eight start together
            tell(p, "go")
        # Each says either "fetching" (it got the lock and is in the source) or "waiting".
        said = [expect_line(p, "") for p in procs]
        assert sorted(said) == ["fetching"] + ["waiting"] * 7
        tell(procs[said.index("fetching")], "continue")
        results = [json.loads(expect_line(p, "{")) for p in procs]
        assert [p.wait(timeout=60) for p in procs] == [0] * 8
    finally:
        reap(procs)
    records = [line.split() for line in counter.read_text().splitlines()]
    calls = [r for r in records if r[0] == "call"]
    reads = [r for r in records if r[0] == "read"]
    assert len(calls) == 1 and calls[0][2] == "0"  # one process asked the source, once
    assert sum(int(r[2]) for r in reads) == size  # ... and read it exactly once, in full
    assert {r[1] for r in reads} == {calls[0][1]}
    assert all(r["file_digest"] == str(digest) for r in results)  # everyone got the blob
    assert Counter(r["fetched"] for r in results) == {True: 1, False: 7}
    assert sum(r["bytes_transferred"] for r in results) == size
    files = blob_files(root)
    assert files == [root / "blobs" / "sha256" / digest.encoded]
    assert files[0].stat().st_nlink == 1
    assert ingest_files(root) == [] and os.listdir(root / "locks") == []


KILL_SIZE = 8 << 20


@pytest.fixture(scope="module")
def kill_blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Digest, bytes]:
    src = tmp_path_factory.mktemp("kill") / "blob"
    digest = write_blob_file(src, KILL_SIZE, seed="sigkill")
    return src, digest, src.read_bytes()


# Kill points spread over the whole blob (plain integers would cluster near 0, before the
# writer's first 1 MiB write), plus a jitter so they rarely fall on chunk boundaries.
_kill_point = st.builds(
    lambda sixteenth, jitter: min(KILL_SIZE, sixteenth * (KILL_SIZE // 16) + jitter),
    st.integers(0, 16),
    st.integers(0, 99_999),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kill_points=st.lists(_kill_point, min_size=1, max_size=2),
    chunk=st.sampled_from([4096, 65536, 300_000, 1 << 20, 3 << 20]),
)
@example(kill_points=[KILL_SIZE], chunk=1 << 20)  # all bytes written, killed before publishing
@example(kill_points=[KILL_SIZE // 2 + 12345], chunk=4096)  # mid-file, small chunks
@example(kill_points=[3 << 20, 6 << 20], chunk=65536)  # the resumer is killed too
@example(kill_points=[0], chunk=300_000)  # killed before the first byte
@example(kill_points=[KILL_SIZE, KILL_SIZE], chunk=1 << 20)  # the 2nd finds a complete partial
def test_sigkill_at_any_point_then_resume(
    kill_blob: tuple[Path, Digest, bytes], kill_points: list[int], chunk: int
) -> None:
    src, digest, data = kill_blob
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = BlobCache(root)
        partial = cache.partial_path(digest)
        for kill_at in sorted(kill_points):
            if partial.exists() and partial.stat().st_size == KILL_SIZE:
                # The last worker wrote every byte before it was killed: the next one would
                # publish that partial without reading the source, so there is no point in
                # it to kill at (e.g. kill_points=[KILL_SIZE, KILL_SIZE]). The resume below
                # covers that case.
                break
            p = spawn(
                "ingest-until", str(root), str(digest), str(KILL_SIZE), str(src), str(kill_at),
                str(chunk),
            )  # fmt: skip
            try:
                expect_line(p, "ready")
                p.kill()
                assert p.wait() == -9
            finally:
                reap([p])
            assert_only_verified_blobs(root)
            assert blob_files(root) == []  # killed before publishing: nothing visible
        have = partial.stat().st_size if partial.exists() else 0
        assert have <= max(kill_points)
        source = RecordingSource(data)
        r = cache.ingest(digest, KILL_SIZE, source)
        if have == KILL_SIZE:
            assert source.calls == [] and r.resumed_from == KILL_SIZE
        elif have:
            assert source.calls == [have]  # a range request for exactly the rest
            assert (r.resumed_from, r.bytes_transferred) == (have, KILL_SIZE - have)
        else:
            assert source.calls == [0] and r.bytes_transferred == KILL_SIZE
        assert r.fetched and not r.restarted
        assert_only_verified_blobs(root)
        assert blob_files(root) == [cache.path(digest)] and ingest_files(root) == []


def _make_old_blobs(cache: BlobCache, seeds: list[int]) -> dict[int, Digest]:
    out = {}
    for seed in seeds:
        data = seeded_bytes(seed, 32 << 10)
        d = cache.ingest_bytes(Digest.of_bytes(data), data).digest
        old = time.time() - 10 * DAY
        os.utime(cache.path(d), (old, old))
        out[seed] = d
    return out


def test_prune_during_an_ingest_loop(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = BlobCache(root)
    hot = [1, 2, 3]  # the loop keeps using these
    cold = list(range(10, 25))  # nobody uses these any more
    blobs = _make_old_blobs(cache, hot + cold)
    control = tmp_path / "control"
    loop = spawn("ingest-loop", str(root), str(control), ",".join(map(str, hot)))
    new: list[str] = []

    def read_until(prefix: str) -> str:
        while True:
            line = loop.stdout.readline() if loop.stdout else ""
            assert line, "the ingest loop died"
            if line.startswith("new "):
                new.append(line.split()[1])
            if line.startswith(prefix):
                return line

    def after(word: str) -> None:
        """Return once a whole loop iteration has run after this call (see ingest-loop)."""
        tmp = control.with_suffix(".tmp")
        tmp.write_text(word)
        os.replace(tmp, control)  # the loop reads the old word or the new one, never half
        while read_until("iteration ").split()[-1] != word:
            continue

    try:
        read_until("iteration 0 ")
        grace = 3600.0
        removed = []
        for step, kwargs in enumerate(
            (
                {"older_than": DAY},
                {"older_than": DAY, "unlinked": True},
                {"max_size": 0},  # evict everything it may: only the grace period holds it back
                {"max_size": 0, "dry_run": True},
            )
        ):
            started = time.time()
            report = prune_cache(cache, grace=grace, **kwargs)  # type: ignore[arg-type]
            for entry in report.removed:
                assert entry.last_used < started - grace, f"{entry.digest} was used recently"
            if not report.dry_run:
                removed.extend(report.removed)
            after(f"pruned-{step}")  # the loop uses every blob again between prunes
        after("stop")  # one full pass after the last prune...
        read_until("done")  # a whole pass of the loop ran after the last prune
        assert loop.wait(timeout=60) == 0, "a reader or writer in the loop failed"
    finally:
        reap([loop])
    for seed in cold:
        assert not cache.exists(blobs[seed]), "an unused old blob survived --older-than"
    for seed in hot:
        assert cache.exists(blobs[seed])  # ...so every blob the loop uses is present again
    assert new and all(cache.exists(Digest.parse(d)) for d in new)  # young blobs were never removed
    assert {e.digest for e in removed} >= {blobs[s] for s in cold}
    assert_only_verified_blobs(root)


def test_prune_never_breaks_an_open_reader(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = seeded_bytes("reader", 5 << 20)
    d = cache.ingest_bytes(Digest.of_bytes(data), data).digest
    os.utime(cache.path(d), (1, 1))
    with cache.open(d) as f:
        head = f.read(1000)
        assert [e.digest for e in prune_cache(cache, older_than=0, grace=0).removed] == [d]
        assert not cache.exists(d)
        assert head + f.read() == data


class _WaitingSeen(logging.Handler):
    """Sets an event when the cache logs that it is waiting for another process."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "held by another process" in record.getMessage():
            self.seen.set()


def test_a_waiter_uses_the_blob_the_lock_holder_published(tmp_path: Path) -> None:
    src = tmp_path / "src"
    digest = write_blob_file(src, 2 << 20, seed="waiter")
    root = tmp_path / "cache"
    holder = spawn("hold-lock", str(root), str(digest), str(src))
    expect_line(holder, "locked")
    handler = _WaitingSeen()
    logger = logging.getLogger("hybridstore.store.cache")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    source = RecordingSource(src.read_bytes())
    results: list[IngestResult] = []
    waiter = threading.Thread(
        target=lambda: results.append(BlobCache(root).ingest(digest, 2 << 20, source))
    )
    try:
        waiter.start()
        assert handler.seen.wait(60), "the waiter never reported waiting"
        tell(holder, "publish")
        expect_line(holder, "published")
        tell(holder, "release")
        expect_line(holder, "released")
        waiter.join(60)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        reap([holder])
    assert results and not results[0].fetched and source.calls == []
    assert_only_verified_blobs(root)

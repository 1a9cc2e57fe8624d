"""Helpers for the cache tests, and the worker processes they start.

Run as a script (``python tests/test_cache_support.py COMMAND ...``) it is a
worker: it reports readiness on stdout (one line) and takes orders from stdin,
so the tests synchronize through pipes, never sleeps. Imported, it offers the
helpers the ``test_cache_*`` modules share. It holds no tests itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hybridstore.errors import HybridstoreError, NotFoundError
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache, IngestResult

WORKER = Path(__file__).resolve()


# -- helpers for the tests -----------------------------------------------------------


def seeded_bytes(seed: int | str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_blob_file(path: Path, size: int, seed: int | str = 0) -> Digest:
    """Write ``size`` seeded random bytes to ``path``; return their digest."""
    h = hashlib.sha256()
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 8 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return Digest("sha256", h.hexdigest())


def file_digest(path: Path) -> Digest:
    with open(path, "rb") as f:
        return Digest.of_file(f)[0]


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if not p.is_dir())


def assert_only_verified_blobs(root: Path) -> None:
    """The cache invariant: every file under blobs/ hashes to its name."""
    for p in blob_files(root):
        assert str(file_digest(p)) == f"{p.parent.name}:{p.name}", f"{p} is not what it claims"


def ingest_files(root: Path) -> list[str]:
    d = root / "ingest"
    return sorted(os.listdir(d)) if d.is_dir() else []


def tree_snapshot(root: Path) -> dict[str, tuple[int, ...]]:
    """Everything about a directory tree a dry run must not change."""
    snap = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        snap[str(p.relative_to(root))] = (
            st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_nlink,
        )  # fmt: skip
    return snap


class RecordingSource:
    """A ``BlobSource`` over bytes that records every offset it is asked for (range requests)."""

    def __init__(self, data: bytes, *, honor_range: bool = True, chunk: int = 1 << 20) -> None:
        self.data, self.honor_range, self.chunk = data, honor_range, chunk
        self.calls: list[int] = []
        self.sent = 0

    def __call__(self, offset: int) -> tuple[int, Iterable[bytes]]:
        self.calls.append(offset)
        start = offset if self.honor_range else 0
        return start, self._chunks(start)

    def _chunks(self, start: int) -> Iterator[bytes]:
        for i in range(start, len(self.data), self.chunk):
            piece = self.data[i : i + self.chunk]
            self.sent += len(piece)
            yield piece


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a worker; talk to it line by line."""
    return subprocess.Popen(
        [sys.executable, "-u", str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def reap(procs: list[subprocess.Popen[str]]) -> None:
    """Kill workers still running (a failed test left them waiting for orders); close pipes."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        for pipe in (p.stdin, p.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def expect_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(prefix), f"worker said {line!r}, expected {prefix!r}"
    return line.strip()


def tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


# -- worker commands ----------------------------------------------------------------


def _say(*parts: Any) -> None:
    print(*parts, flush=True)


def _wait_for_go() -> None:
    _say("ready")
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")


def _append(counter: Path, line: str) -> None:
    # One O_APPEND write per record: records from many processes never interleave.
    fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class _SayWhenWaiting(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if "held by another process" in record.getMessage() and not getattr(self, "said", False):
            self.said = True
            _say("waiting")


def _result_json(result: IngestResult, cache: BlobCache) -> str:
    return json.dumps(
        {
            "fetched": result.fetched,
            "bytes_transferred": result.bytes_transferred,
            "resumed_from": result.resumed_from,
            "file_digest": str(file_digest(cache.path(result.digest))),
        }
    )


def cmd_ingest_counted(root: str, digest: str, size: str, src: str, counter: str) -> None:
    """Ingest from a file source that logs every call and every chunk it reads."""
    cache = BlobCache(root)
    d = Digest.parse(digest)
    logger = logging.getLogger("hybridstore.store.cache")
    logger.addHandler(_SayWhenWaiting())
    logger.setLevel(logging.INFO)

    def source(offset: int) -> tuple[int, Iterable[bytes]]:
        _append(Path(counter), f"call {os.getpid()} {offset}\n")
        _say("fetching")  # the test holds us here until everyone else is waiting
        sys.stdin.readline()

        def chunks() -> Iterator[bytes]:
            with open(src, "rb") as f:
                f.seek(offset)
                while chunk := f.read(1 << 20):
                    _append(Path(counter), f"read {os.getpid()} {len(chunk)}\n")
                    yield chunk

        return offset, chunks()

    _wait_for_go()
    _say(_result_json(cache.ingest(d, int(size), source), cache))


def cmd_ingest_until(root: str, digest: str, size: str, src: str, kill_at: str, chunk: str) -> None:
    """Ingest, but stop inside the source before byte ``kill_at`` and wait to be killed."""
    cache = BlobCache(root)
    total, stop, step = int(size), int(kill_at), int(chunk)

    def source(offset: int) -> tuple[int, Iterable[bytes]]:
        def chunks() -> Iterator[bytes]:
            with open(src, "rb") as f:
                f.seek(offset)
                pos = offset
                while pos < total:
                    n = min(step, total - pos)
                    if pos + n > stop:
                        break
                    yield f.read(n)
                    pos += n
            _say(f"ready {pos}")
            sys.stdin.readline()  # the test kills us here
            raise SystemExit("not killed")

        return offset, chunks()

    # Reached only when the source was never read (a complete partial was already there):
    # say so, rather than leave the test reading EOF.
    r = cache.ingest(Digest.parse(digest), total, source)
    _say(f"published without the source (fetched={r.fetched}, resumed_from={r.resumed_from})")


def cmd_hold_lock(root: str, digest: str, src: str = "") -> None:
    """Hold ``digest``'s single-flight lock until told to let go (first publishing ``src``)."""
    cache = BlobCache(root)
    cache._prepare()
    d = Digest.parse(digest)
    with cache._digest_lock(d):
        _say("locked")
        sys.stdin.readline()
        if src:
            with open(src, "rb") as f:
                data = f.read()
            cache._ingest_locked(d, len(data), lambda o: (o, [data[o:]]), cache.path(d))
            _say("published")
            sys.stdin.readline()
    _say("released")


def cmd_ingest_unlocked(root: str, digest: str, size: str, src: str, corrupt_at: str) -> None:
    """Ingest with a lock that silently "succeeds" for everyone (NFS/Lustre without flock)."""
    cache = BlobCache(root, trust_locks=False)
    cache._digest_lock = lambda d, **_: contextlib.nullcontext(True)  # type: ignore[method-assign]
    flip = int(corrupt_at)

    def source(offset: int) -> tuple[int, Iterable[bytes]]:
        def chunks() -> Iterator[bytes]:
            with open(src, "rb") as f:
                pos = 0
                while chunk := f.read(64 << 10):
                    if pos <= flip < pos + len(chunk):
                        b = bytearray(chunk)
                        b[flip - pos] ^= 0xFF
                        chunk = bytes(b)
                    pos += len(chunk)
                    yield chunk

        return 0, chunks()

    _wait_for_go()
    try:
        _say(_result_json(cache.ingest(Digest.parse(digest), int(size), source), cache))
    except HybridstoreError as e:
        _say(json.dumps({"error": type(e).__name__, "message": str(e)}))


def cmd_ingest_loop(root: str, control_file: str, hot: str) -> None:
    """Ingest new and re-used blobs and read each back, until ``control_file`` says ``stop``.

    Each iteration first reads ``control_file`` (the test writes a new word
    there, atomically, after each step) and ends with ``iteration N saw WORD``.
    So a line that names a word proves a whole iteration ran after the test
    wrote it; ``done`` comes only after a whole iteration that saw ``stop``.
    """
    cache = BlobCache(root)
    hot_seeds = [int(s) for s in hot.split(",")]
    refetched = iteration = 0
    while True:
        try:
            word = Path(control_file).read_text().strip() or "-"
        except FileNotFoundError:
            word = "-"
        todo = [(f"new-{os.getpid()}-{iteration}", True)] + [(s, False) for s in hot_seeds]
        for seed, is_new in todo:
            data = seeded_bytes(seed, 32 << 10)
            d = Digest.of_bytes(data)
            for _attempt in range(3):
                cache.ingest_bytes(d, data)
                try:
                    with cache.open(d) as f:  # once open, pruning cannot break this read
                        assert f.read() == data, f"{d} read back wrong"
                    break
                except NotFoundError:
                    refetched += 1  # pruned between ingest and open: fetch again
            else:
                raise AssertionError(f"{d} kept vanishing")
            if is_new:
                _say(f"new {d}")
        _say(f"iteration {iteration} saw {word}")
        iteration += 1
        if word == "stop":
            _say(f"done {refetched}")
            return


def cmd_ingest_as_nobody(root: str, src: str = "") -> None:
    """Drop from root to nobody, then ingest ``src`` (or a few bytes) into ``root``."""
    cache = BlobCache(root)
    data = Path(src).read_bytes() if src else b"hello"
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    try:
        r = cache.ingest_bytes(Digest.of_bytes(data), data)
        _say(json.dumps({"error": None, "bytes_transferred": r.bytes_transferred}))
    except HybridstoreError as e:
        errno_ = getattr(e, "errno", None)
        _say(json.dumps({"error": type(e).__name__, "message": str(e), "errno": errno_}))


COMMANDS = {
    "ingest-counted": cmd_ingest_counted,
    "ingest-until": cmd_ingest_until,
    "hold-lock": cmd_hold_lock,
    "ingest-unlocked": cmd_ingest_unlocked,
    "ingest-loop": cmd_ingest_loop,
    "ingest-as-nobody": cmd_ingest_as_nobody,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])

"""Ingest throughput of the blob cache against the raw limit of this machine.

The limit is what any verifying writer must do at least: read the source,
``hashlib.sha256`` every byte, write it, fsync once. ``BlobCache.ingest_stream``
does that plus locking, the size/digest check, chmod, link and directory fsync.
Both read the same (page-cached) source file and write into the same directory
tree; each round alternates them after an untimed ``sync``, and the best and
median of the rounds are reported (fsync time on shared disks is noisy).

    .venv/bin/python benchmarks/cache_ingest.py [--size-mib 512] [--rounds 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hybridstore.oci.digest import Digest
from hybridstore.store.cache import CHUNK_SIZE, BlobCache


def make_source(path: Path, size: int) -> Digest:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return Digest("sha256", h.hexdigest())


def raw_limit(src: Path, dst: Path) -> float:
    """Seconds for read + sha256 + write + one fsync, the way any verifying writer must."""
    start = time.perf_counter()
    h = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(src, "rb", buffering=0) as f:
            while chunk := f.read(CHUNK_SIZE):
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    h.hexdigest()
    return time.perf_counter() - start


def cache_ingest(src: Path, root: Path, digest: Digest, size: int) -> float:
    cache = BlobCache(root)
    start = time.perf_counter()
    with open(src, "rb") as f:
        result = cache.ingest_stream(digest, size, f)
    elapsed = time.perf_counter() - start
    assert result.fetched and result.bytes_transferred == size
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="hs-bench-", dir=args.dir))
    try:
        src = work / "source.bin"
        digest = make_source(src, size)
        limits, ingests = [], []
        for i in range(args.rounds):
            os.sync()  # start each run without the previous run's writeback (untimed)
            limits.append(raw_limit(src, work / f"raw-{i}"))
            os.unlink(work / f"raw-{i}")
            os.sync()
            root = work / f"cache-{i}"
            ingests.append(cache_ingest(src, root, digest, size))
            shutil.rmtree(root)
        mib = size / (1 << 20)
        print(f"blob: {mib:.0f} MiB, {args.rounds} rounds, in {work.parent}")
        for label, pick in (("best", min), ("median", statistics.median)):
            lim, ing = pick(limits), pick(ingests)
            print(
                f"{label:>6}: raw limit (read+sha256+write+fsync) {mib / lim:7.1f} MiB/s, "
                f"BlobCache.ingest_stream {mib / ing:7.1f} MiB/s, ratio {lim / ing:.3f}"
            )
        print("goal: ratio >= 0.85")
        rounds = zip(limits, ingests, strict=True)
        print("rounds (limit, ingest) s: " + ", ".join(f"({a:.3f}, {b:.3f})" for a, b in rounds))
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

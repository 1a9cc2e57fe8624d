"""How many blobs a transfer moves at once: large ones in ``concurrency`` slots,
small ones (round-trip bound) up to ``SMALL_BLOB_FANOUT`` times as many."""

from __future__ import annotations

import threading

from hybridstore import transfer
from hybridstore.digest import Digest
from hybridstore.model import Descriptor

DIGEST = Digest.of_bytes(b"x")
SMALL = Descriptor("application/octet-stream", DIGEST, transfer.SMALL_BLOB - 1)
LARGE = Descriptor("application/octet-stream", DIGEST, transfer.SMALL_BLOB)


def test_a_large_blob_takes_a_slot_and_a_small_one_does_not() -> None:
    gate = transfer._SizeGate(1)

    def slot_free(desc: object, src: object, progress: object) -> bool:
        free = gate._slots.acquire(blocking=False)
        if free:
            gate._slots.release()
        return free

    assert gate.put(slot_free, LARGE, None, None) is False  # type: ignore[arg-type]
    assert gate.put(slot_free, SMALL, None, None) is True  # type: ignore[arg-type]


def test_the_pool_runs_fanout_times_concurrency_small_blobs_at_once() -> None:
    """All of them are inside at the same time, or the barrier breaks (instead of hanging)."""
    width = 2 * transfer.SMALL_BLOB_FANOUT
    everyone_in = threading.Barrier(width, timeout=30)
    gate = transfer._SizeGate(2)

    def meet(desc: object, src: object, progress: object) -> int:
        return everyone_in.wait()

    with transfer.blob_pool(2) as pool:
        futures = [pool.submit(gate.put, meet, SMALL, None, None) for _ in range(width)]  # type: ignore[arg-type]
        assert sorted(f.result() for f in futures) == list(range(width))

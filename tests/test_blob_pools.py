"""How many blobs move at once: large ones on ``concurrency`` threads, small ones
(round-trip bound) on ``SMALL_BLOB_FANOUT`` times as many, never sharing threads."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import click
import pytest

from hybridstore.cli.options import concurrency_option
from hybridstore.oci.digest import Digest
from hybridstore.oci.model import Descriptor
from hybridstore.transfer.pools import SMALL_BLOB, SMALL_BLOB_FANOUT, BlobPools, gather

DIGEST = Digest.of_bytes(b"x")
SMALL = Descriptor("application/octet-stream", DIGEST, SMALL_BLOB - 1)
LARGE = Descriptor("application/octet-stream", DIGEST, SMALL_BLOB)


def _thread_name(desc: Descriptor) -> str:
    return threading.current_thread().name


def test_large_blobs_keep_to_concurrency_threads_of_their_own() -> None:
    with BlobPools(2) as pools:
        large = set(gather([pools.submit(_thread_name, LARGE) for _ in range(40)]))
        small = set(gather([pools.submit(_thread_name, SMALL) for _ in range(40)]))
    assert 1 <= len(large) <= 2
    assert not large & small


def test_small_blobs_run_fanout_times_concurrency_at_once() -> None:
    """All of them are inside at the same time, or the barrier breaks (instead of hanging)."""
    width = 2 * SMALL_BLOB_FANOUT
    everyone_in = threading.Barrier(width, timeout=30)
    with BlobPools(2) as pools:
        arrivals = gather([pools.submit(lambda d: everyone_in.wait(), SMALL) for _ in range(width)])
    assert sorted(arrivals) == list(range(width))


def test_gather_cancels_what_has_not_started_after_an_error() -> None:
    started = threading.Event()
    release = threading.Event()

    def fail(desc: Descriptor) -> None:
        started.wait(30)
        raise ValueError("boom")

    def block(desc: Descriptor) -> None:
        started.set()
        release.wait(30)

    with BlobPools(1) as pools:
        futures: list[Future[object]] = [
            pools.submit(f, d) for f, d in ((fail, SMALL), (block, SMALL), (block, LARGE))
        ]
        queued = pools.submit(_thread_name, LARGE)  # behind the large blob still running
        with pytest.raises(ValueError, match="boom"):
            gather([*futures, queued])
        release.set()
    assert queued.cancelled()


def test_the_concurrency_help_states_these_numbers() -> None:
    """The CLI spells them out rather than import this module (see cli/options.py)."""
    command = click.command()(concurrency_option(lambda concurrency: None))
    (option,) = command.params
    assert isinstance(option, click.Option) and option.help is not None
    assert f"{SMALL_BLOB // 1024} KiB" in option.help and f"{SMALL_BLOB_FANOUT}x" in option.help

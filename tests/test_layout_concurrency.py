"""Many processes tagging into one layout at the same moment: every tag lands, every read of
index.json is a whole, valid document."""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from support.oci_builder import LayoutBuilder

from hybridstore.oci.model import ANNOTATION_REF_NAME, Descriptor
from hybridstore.store.layout import OCILayout

WRITERS = 8
ROUNDS = 50
_BARRIER_TIMEOUT = 120.0  # a safety net against a hung peer, not synchronisation


def _names(raw: bytes) -> dict[str, str]:
    doc = json.loads(raw)
    return {e["annotations"][ANNOTATION_REF_NAME]: e["digest"] for e in doc["manifests"]}


def _writer(
    root: str, me: int, descs: list[dict[str, Any]], barrier: Barrier, errors: Any
) -> None:
    try:
        layout = OCILayout.open(root)
        wanted = [Descriptor.from_json(d) for d in descs]
        for r, desc in enumerate(wanted):
            barrier.wait(_BARRIER_TIMEOUT)  # everyone starts the round together
            layout.tag(desc, f"proc-{me}")
            barrier.wait(_BARRIER_TIMEOUT)  # every writer of this round is done
            on_disk = _names((Path(root) / "index.json").read_bytes())
            seen = {n: str(d.digest) for n, d in layout.refs().items()}
            for j in range(WRITERS):
                for names in (on_disk, seen):
                    if names.get(f"proc-{j}") != str(desc.digest):
                        raise AssertionError(f"round {r}: proc-{j} is {names.get(f'proc-{j}')}")
    except BaseException as e:  # report, and release the others from the barrier
        errors.put(f"writer {me}: {e!r}")
        barrier.abort()


def _reader(root: str, stop: Event, errors: Any, counts: Any) -> None:
    """Reads index.json without any lock for the whole run: it must always parse."""
    n = 0
    try:
        while not stop.is_set():
            _names((Path(root) / "index.json").read_bytes())
            n += 1
    except BaseException as e:
        errors.put(f"reader after {n} reads: {e!r}")
    counts.put(n)


def test_eight_processes_tag_fifty_rounds_and_every_tag_lands(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    descs = [
        b.artifact(None, files={"round.txt": str(r).encode()}, seed=f"round-{r}").descriptor()
        for r in range(ROUNDS)
    ]
    assert len({d["digest"] for d in descs}) == ROUNDS
    OCILayout.open(tmp_path)  # valid before anyone starts

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    errors = ctx.Queue()
    counts = ctx.Queue()
    stop = ctx.Event()
    reader = ctx.Process(target=_reader, args=(str(tmp_path), stop, errors, counts))
    writers = [
        ctx.Process(target=_writer, args=(str(tmp_path), i, descs, barrier, errors))
        for i in range(WRITERS)
    ]
    reader.start()
    for p in writers:
        p.start()
    for p in writers:
        p.join(600)
    stop.set()
    reader.join(60)

    problems = []
    while True:
        try:
            problems.append(errors.get_nowait())
        except queue.Empty:
            break
    assert problems == []
    assert [p.exitcode for p in writers] == [0] * WRITERS
    assert reader.exitcode == 0
    assert counts.get(timeout=10) > 0  # the reader really raced the writers

    final = _names((tmp_path / "index.json").read_bytes())
    assert final == {f"proc-{i}": descs[-1]["digest"] for i in range(WRITERS)}


def test_threads_tagging_through_separate_layout_objects_all_land(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    b = LayoutBuilder(tmp_path)
    desc = Descriptor.from_json(b.artifact(None).descriptor())

    def tag_many(i: int) -> None:
        layout = OCILayout.open(tmp_path)  # one object per thread, as separate callers would
        for r in range(10):
            layout.tag(desc, f"t{i}-{r}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(tag_many, range(8)))
    names = _names((tmp_path / "index.json").read_bytes())
    assert set(names) == {f"t{i}-{r}" for i in range(8) for r in range(10)}

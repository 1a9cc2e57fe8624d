"""Progress bars on a TTY for every long job (none with -q, --json, or when stderr is no TTY)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from hybridstore.oci.model import Descriptor
from hybridstore.transfer.engine import BlobOutcome, Progress

__all__ = ["ByteBar", "CountingReader", "RichProgress", "run_with_progress", "wants_progress"]


def _byte_bars() -> Any:
    """Transient bars (bytes, rate, ETA) on stderr, the stream ``wants_progress`` checks:
    stdout may carry an archive (``export -o -``) or the output a script reads."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import (
        Progress as Bars,
    )

    return Bars(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),
    )


class RichProgress(Progress):
    """Per-blob and total bars (bytes, rate, ETA) on a TTY."""

    def __init__(self) -> None:
        self.bars = _byte_bars()
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self, desc: Descriptor) -> None:
        with self._lock:
            self._tasks[str(desc.digest)] = self.bars.add_task(desc.digest.short, total=desc.size)

    def advance(self, desc: Descriptor, nbytes: int) -> None:
        task = self._tasks.get(str(desc.digest))
        if task is not None:
            self.bars.advance(task, nbytes)

    def done(self, desc: Descriptor, outcome: BlobOutcome) -> None:
        with self._lock:
            task = self._tasks.pop(str(desc.digest), None)
        if task is not None:
            self.bars.remove_task(task)


def wants_progress(quiet: bool, as_json: bool) -> bool:
    return sys.stderr.isatty() and not quiet and not as_json


def run_with_progress(quiet: bool, as_json: bool, call: Callable[[Any], Any]) -> Any:
    """Run ``call(progress)`` with bars on a TTY (``call(None)`` with -q or --json)."""
    if wants_progress(quiet, as_json):
        progress = RichProgress()
        with progress.bars:
            return call(progress)
    return call(None)


class ByteBar:
    """One bar (bytes, rate, ETA) for a job measured in bytes: export and import.

    ``update(done, total)`` matches the library's ``progress`` callbacks; a total of
    None (a stream of unknown length, such as stdin) shows a running count.
    """

    def __init__(self, label: str) -> None:
        self.bars = _byte_bars()
        self._task = self.bars.add_task(label, total=None)

    def update(self, done: int, total: int | None) -> None:
        self.bars.update(self._task, completed=done, total=total)


class CountingReader:
    """A binary stream that reports what has been read from it to a ``ByteBar``."""

    def __init__(self, raw: IO[bytes], bar: ByteBar, total: int | None) -> None:
        self.raw, self.bar, self.total, self.done = raw, bar, total, 0

    def read(self, size: int = -1, /) -> bytes:
        data = self.raw.read(size)
        self.done += len(data)
        self.bar.update(self.done, self.total)
        return data

"""Progress bars on a TTY for every long job (none with -q, --json, or when stderr is no TTY)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from hybridstore.oci.model import Descriptor
from hybridstore.transfer.engine import BlobOutcome, Progress

__all__ = ["RichProgress", "run_with_progress", "wants_progress"]


class RichProgress(Progress):
    """Per-blob and total bars (bytes, rate, ETA) on a TTY."""

    def __init__(self) -> None:
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

        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
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

"""Waiting for another process's file lock: visibly, and no longer than the user allows.

The cache's per-digest single-flight locks and a layout's ``index.json`` lock
both wait here, so both log who they wait for and both give up after
``HYBRIDSTORE_LOCK_TIMEOUT`` seconds with an error naming that variable.

``flock`` cannot wait with a timeout, so waiting is polling (as in ``filelock``
itself), here with a back-off: the first retries come after a millisecond or
two, when a lock held for a small blob or an ``index.json`` write is about to
be free, and later ones no more often than ``max_poll``, so eight processes
waiting on one large download do not spin.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import filelock

from .errors import InvalidInputError, LockTimeoutError

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "LOCK_TIMEOUT_ENV",
    "acquire_visibly",
    "file_lock",
    "lock_timeout",
    "try_acquire",
]

LOCK_TIMEOUT_ENV: Final = "HYBRIDSTORE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT: Final = 300.0
_WAIT_LOG_INTERVAL: Final = 10.0
_FIRST_POLL: Final = 0.001


def lock_timeout() -> float:
    """Seconds to wait for another process's lock: ``HYBRIDSTORE_LOCK_TIMEOUT``, default 300."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise InvalidInputError(
            f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds (use e.g. 300 or 0.5)"
        )
    return value


def file_lock(path: Path) -> filelock.BaseFileLock:
    """An OS lock (``flock``) on the file ``path``, not yet taken."""
    return filelock.FileLock(path)


def try_acquire(lock: filelock.BaseFileLock) -> bool:
    """Take ``lock`` if nobody holds it; never waits. ``OSError`` propagates."""
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        return False
    return True


def acquire_visibly(
    lock: filelock.BaseFileLock,
    what: str,
    path: Path,
    log: logging.Logger,
    *,
    max_poll: float = 0.05,
    until: Callable[[], bool] | None = None,
) -> bool:
    """Take ``lock`` and return ``True``. While another process holds it, log on the
    caller's ``log`` that we wait for ``what`` (at once, then every 10 s); give up after
    ``lock_timeout()``.

    ``until``: checked between tries; once it is true, stop waiting and return
    ``False`` without the lock (a waiter for a cache blob stops when the holder
    has published it, instead of taking the lock only to find the blob there).
    Retries back off from 1 ms to ``max_poll`` seconds. ``OSError`` from the
    lock file itself propagates for the caller to report.
    """
    timeout = lock_timeout()
    if try_acquire(lock):
        return True
    log.info("waiting for %s held by another process", what)
    started = time.monotonic()
    next_log = started + _WAIT_LOG_INTERVAL
    delay = min(_FIRST_POLL, max_poll)
    while True:
        now = time.monotonic()
        remaining = started + timeout - now
        if remaining <= 0:
            raise LockTimeoutError(
                f"gave up after {timeout:g}s waiting for {what} held by another process "
                f"(lock {path}); set {LOCK_TIMEOUT_ENV} to wait longer or stop that process"
            )
        if now >= next_log:
            log.warning("waiting for %s held by another process (%.0fs)", what, now - started)
            next_log = now + _WAIT_LOG_INTERVAL
        time.sleep(min(delay, remaining))
        if until is not None and until():
            return False
        if try_acquire(lock):
            return True
        delay = min(delay * 2, max_poll)

"""Waiting for another process's file lock: visibly, and no longer than the user allows.

The cache's per-digest single-flight locks and a layout's ``index.json`` lock
both wait here, so both log who they wait for and both give up after
``HYBRIDSTORE_LOCK_TIMEOUT`` seconds with an error naming that variable.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Final

import filelock

from .errors import InvalidInputError, LockTimeoutError

__all__ = ["DEFAULT_LOCK_TIMEOUT", "LOCK_TIMEOUT_ENV", "acquire_visibly", "lock_timeout"]

LOCK_TIMEOUT_ENV: Final = "HYBRIDSTORE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT: Final = 300.0
_WAIT_LOG_INTERVAL: Final = 10.0


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


def acquire_visibly(
    lock: filelock.BaseFileLock,
    what: str,
    path: Path,
    log: logging.Logger,
    *,
    poll_interval: float = 0.05,
) -> None:
    """Take ``lock``. While another process holds it, log on the caller's ``log`` that
    we wait for ``what`` (at once, then every 10 s); give up after ``lock_timeout()``.

    ``OSError`` from the lock file itself propagates for the caller to report.
    """
    timeout = lock_timeout()
    try:
        lock.acquire(blocking=False)
        return
    except filelock.Timeout:
        pass
    log.info("waiting for %s held by another process", what)
    started = time.monotonic()
    while True:
        remaining = started + timeout - time.monotonic()
        if remaining <= 0:
            raise LockTimeoutError(
                f"gave up after {timeout:g}s waiting for {what} held by another process "
                f"(lock {path}); set {LOCK_TIMEOUT_ENV} to wait longer or stop that process"
            )
        try:
            lock.acquire(timeout=min(_WAIT_LOG_INTERVAL, remaining), poll_interval=poll_interval)
            return
        except filelock.Timeout:
            waited = time.monotonic() - started
            if waited < timeout:
                log.warning("waiting for %s held by another process (%.0fs)", what, waited)

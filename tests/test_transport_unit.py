"""Pure helpers of the registry transport (no network)."""

from __future__ import annotations

import email.utils
import time

from hybridstore.remote.transport import retry_after_seconds


def test_retry_after_seconds_and_cap() -> None:
    assert retry_after_seconds("2", cap=10) == 2
    assert retry_after_seconds("120", cap=10) == 10
    assert retry_after_seconds(None, cap=10) is None
    assert retry_after_seconds("soon", cap=10) is None


def test_retry_after_http_date() -> None:
    # Bounded by clock readings around the call, not by a guess of how long it takes.
    when = int(time.time()) + 600  # whole seconds: an HTTP-date has no fraction
    start = time.time()
    got = retry_after_seconds(email.utils.formatdate(when, usegmt=True), cap=3600)
    end = time.time()
    assert got is not None and when - end <= got <= when - start
    soon = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert retry_after_seconds(soon, cap=10) == 10
    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert retry_after_seconds(past, cap=10) == 0

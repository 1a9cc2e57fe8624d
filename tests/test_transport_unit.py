"""Pure helpers of the registry transport (no network)."""

from __future__ import annotations

import email.utils
import time

import pytest

from hybridstore.remote.auth import is_local_host
from hybridstore.remote.transport import retry_after_seconds


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("169.254.169.254", True),
        ("registry.example.com", False),
        ("10.0.0.1", False),
        ("8.8.8.8", False),
    ],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local


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

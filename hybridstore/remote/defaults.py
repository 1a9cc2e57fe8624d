"""Transport defaults, in a module that imports nothing: the CLI shows them in
``--help`` without loading the registry client (``pull --offline`` never does)."""

from __future__ import annotations

from typing import Final

__all__ = ["RETRIES", "RETRY_BASE", "TIMEOUT"]

TIMEOUT: Final = 30.0
"""Seconds to connect, to wait for each read, and the window over which a body must
average ``http.MIN_BODY_RATE``."""
RETRIES: Final = 5
"""Retries of a request after a connection error, 408, 429 or 5xx."""
RETRY_BASE: Final = 0.25
"""The first backoff pause in seconds; it doubles per retry (with jitter), up to a cap."""

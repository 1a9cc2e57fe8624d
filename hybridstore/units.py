"""Sizes and durations as people type them (``500M``, ``7d``): one grammar for every command.

It sits in the lowest layer (it imports nothing of ours) so the cache, the archive limits
and the CLI parse ``--grace 1h`` or ``--max-size 10G`` the same way.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["parse_duration", "parse_size"]

_DURATION_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_duration(text: str) -> float:
    """``90``/``90s``, ``15m``, ``1h``, ``7d``, ``2w`` -> seconds; ``ValueError`` otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30m, 12h, 7d, 2w)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(text: str) -> int:
    """``512M``, ``10G``, ``1.5GiB``, ``100000`` -> bytes (K, M, G, T, P are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(?:i?b)?|b)?\s*", text.lower())
    if m is None:
        raise ValueError(f"{text!r} is not a size (use e.g. 500M, 10G, 1T)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or ""])

"""Keep a VM's freed memory in the guest while the benchmark runs.

Some VMs hand freed guest memory back to the host within seconds (virtio-balloon
free page reporting). Touching such memory again costs a host page fault per
page, which the guest sees as kernel time in whatever allocated it: a run that
writes 512 MiB through the page cache a few seconds after a previous row freed
its memory took 1.0-1.6 s instead of 0.6 s, and which row paid depended on the
order of the rows, not on the tool. Where the guest kernel exposes how long a
page must stay free before it is reported (``page_reporting`` module parameter
``min_free_ms``), the harness raises it for the run, so every row runs with
memory that behaves as on bare metal, and restores it afterwards. Elsewhere
this is a no-op; the report says which case applied.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

MIN_FREE_MS: Final = Path("/sys/module/page_reporting/parameters/min_free_ms")
#: Five minutes: far longer than any row, and the kernel refuses much more (600000 is EINVAL).
HOLD_MS: Final = 300_000


@contextmanager
def freed_memory_kept(enabled: bool, knob: Path = MIN_FREE_MS) -> Iterator[str]:
    """Hold freed memory in the guest for the ``with`` block; yields a line for the report."""
    try:
        old = knob.read_text().strip()
    except OSError:
        yield "no free page reporting delay to set (not a VM that reports free pages)"
        return
    if not enabled:
        yield f"free page reporting left as it is (min_free_ms={old}; --allow-page-reporting)"
        return
    try:
        knob.write_text(str(HOLD_MS))
    except OSError as e:
        hint = " (run as root)" if e.errno in (errno.EACCES, errno.EPERM) else ""
        yield f"free page reporting min_free_ms={old}, not raised: {e.strerror}{hint}"
        return
    try:
        yield (
            f"free page reporting delayed for the run (min_free_ms {old} -> {HOLD_MS}, "
            "restored after; see benchmarks/README.md)"
        )
    finally:
        knob.write_text(old)

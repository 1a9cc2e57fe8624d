"""What one benchmark row collected, and its JSON form (``latest.json``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from measure import Sample, Stats, summarize

__all__ = ["RequestCounts", "RowResult"]


@dataclass(frozen=True)
class RequestCounts:
    """Requests the registry logged during one run (probes and barriers left out)."""

    total: int
    blob_gets: int
    manifest_gets: int
    heads: int


@dataclass
class RowResult:
    workload: str
    tool: str
    note: str
    limit: bool = False
    pulls: int = 1  # pulls per run (shared: 10, concurrency x8: 8)
    samples: list[Sample] = field(default_factory=list)
    requests: list[RequestCounts] = field(default_factory=list)
    disk_bytes: int | None = None
    store_bytes: int | None = None  # part of disk_bytes in the cache / shared dir
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    repeats: int = 0  # runs taken again because the machine was busy elsewhere

    @property
    def stats(self) -> Stats | None:
        return summarize(self.samples) if self.samples else None

    @property
    def check(self) -> str:
        if self.error is not None:
            return "FAILED"
        if self.problems:
            return f"{len(self.problems)} problem(s)"
        return "ok" if self.samples else "-"

    def median_requests(self, what: str) -> float | None:
        if not self.requests:
            return None
        return float(statistics.median(getattr(r, what) for r in self.requests))

    def to_json(self) -> dict[str, Any]:
        st = self.stats
        return {
            "workload": self.workload,
            "tool": self.tool,
            "note": self.note,
            "limit": self.limit,
            "pulls": self.pulls,
            "wall": [s.wall for s in self.samples],
            "cpu": [s.cpu for s in self.samples],
            "max_rss_kib": [s.max_rss_kib for s in self.samples],
            "contention": [s.contention for s in self.samples],
            "repeats": self.repeats,
            "median": st.median if st else None,
            "requests": [r.__dict__ for r in self.requests],
            "disk_bytes": self.disk_bytes,
            "store_bytes": self.store_bytes,
            "problems": self.problems,
            "error": self.error,
        }

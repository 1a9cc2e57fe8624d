"""What a sync did (or, with ``--dry-run``, would do), per layout ref and chart file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SyncItem", "SyncResult"]


@dataclass
class SyncItem:
    kind: str
    """``ref`` (a layout ref) or ``chart`` (a Helm dependency archive)."""
    target: str
    """``LAYOUT NAME`` for a ref, the ``.tgz`` path for a chart."""
    ref: str
    digest: str
    action: str
    """``added``, ``updated``, ``unchanged``, ``removed``, ``kept`` (a stale ref that
    sync did not create, or that was re-tagged by hand); with ``--dry-run``:
    ``resolve``, ``locked``, ``remove``."""
    blobs_fetched: int = 0
    bytes_transferred: int = 0


@dataclass
class SyncResult:
    project: str
    lock: str
    dry_run: bool
    lock_written: bool = False
    items: list[SyncItem] = field(default_factory=list)
    left_to_helm: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_transferred(self) -> int:
        return sum(i.bytes_transferred for i in self.items)

    @property
    def blobs_fetched(self) -> int:
        return sum(i.blobs_fetched for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "lock": self.lock,
            "dry_run": self.dry_run,
            "lock_written": self.lock_written,
            "items": [asdict(i) for i in self.items],
            "left_to_helm": list(self.left_to_helm),
            "blobs_fetched": self.blobs_fetched,
            "bytes_transferred": self.bytes_transferred,
            "seconds": round(self.seconds, 3),
        }

"""``hybridstore cache info|du|path|verify|prune``: look after the shared blob cache."""

from __future__ import annotations

import re
import time
from typing import Any

import click

from hybridstore.cli.common import GlobalOptions, emit_json, pass_options
from hybridstore.errors import NotFoundError
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import cache_info, disk_usage, prune_cache, verify_cache

__all__ = ["Size", "cache", "human_size", "parse_duration", "parse_size"]

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


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


class _Duration(click.ParamType[float, Any]):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class Size(click.ParamType[int, Any]):
    """A byte count given as 123, 500M, 2G... (``parse_size``)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{max(seconds, 0):.0f}s ago"


def _open(opts: GlobalOptions) -> BlobCache:
    return BlobCache(opts.cache_dir) if opts.cache_dir else BlobCache()


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("cache")
def cache() -> None:
    """Inspect, verify and prune the shared blob cache.

    The cache is --cache DIR, else $HYBRIDSTORE_CACHE_DIR, else
    $XDG_CACHE_HOME/hybridstore, else ~/.cache/hybridstore.
    """


@cache.command("info")
@_json_option
@pass_options
def info(opts: GlobalOptions, /, as_json: bool) -> None:
    """Location, blob count and size, blobs shared with layouts, partial downloads."""
    i = cache_info(_open(opts))
    if as_json:
        emit_json(i.to_json())
        return
    rows = [
        ("location", str(i.root) + ("" if i.exists else " (not created yet)")),
        ("layout version", str(i.layout_version or "-")),
        ("blobs", f"{i.blob_count} ({human_size(i.blob_bytes)})"),
        ("shared with layouts", f"{i.shared_count} ({human_size(i.shared_bytes)}; link count > 1)"),
        ("partial ingests", f"{i.partial_count} ({human_size(i.partial_bytes)})"),
        ("quarantined", str(i.quarantined_count)),
        ("resume across processes", "yes" if i.locks_trusted else "no (locks not trusted here)"),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<26}{value}")


@cache.command("du")
@_json_option
@pass_options
def du(opts: GlobalOptions, /, as_json: bool) -> None:
    """Disk usage of the cache, by area (blobs, ingest, locks, quarantine, other)."""
    usage = disk_usage(_open(opts))
    if as_json:
        emit_json(usage.to_json())
        return
    for a in usage.areas:
        click.echo(f"{human_size(a.disk_bytes):>11}  {a.name} ({a.files} files)")
    click.echo(f"{human_size(usage.total_disk_bytes):>11}  total  {usage.root}")
    click.echo(
        f"{human_size(usage.cache_only_bytes):>11}  of blobs no layout links (pruning frees it)"
    )


@cache.command("path")
@click.argument("digest", required=False)
@_json_option
@pass_options
def path(opts: GlobalOptions, /, digest: str | None, as_json: bool) -> None:
    """Print the cache directory, or the file of DIGEST's blob (exit 4 if absent)."""
    c = _open(opts)
    found: dict[str, str] = {"path": str(c.root)}
    if digest is not None:
        d = Digest.parse(digest)
        if not c.exists(d):
            raise NotFoundError(f"{d} is not in the cache at {c.root}")
        found = {"digest": str(d), "path": str(c.path(d))}
    if as_json:
        emit_json(found)
    else:
        click.echo(found["path"])


@cache.command("verify")
@click.option("--repair", is_flag=True, help="Move corrupt blobs to quarantine/.")
@_json_option
@pass_options
def verify(opts: GlobalOptions, /, repair: bool, as_json: bool) -> None:
    """Re-hash every blob and report corrupt ones; list stale partial downloads.

    Exits 1 when a corrupt blob is left in the cache (run again with --repair).
    A repaired blob is fetched again by the next pull that needs it; layouts
    hard-linked to the bad content are listed by link count and need a re-pull.
    """
    report = verify_cache(_open(opts), repair=repair)
    if as_json:
        emit_json(report.to_json())
    else:
        for bad in report.corrupt:
            where = f"; moved to {bad.quarantined_to}" if bad.quarantined_to else ""
            shared = f"; {bad.links} layout link(s) share it" if bad.links else ""
            click.echo(f"corrupt: {bad.path}: {bad.reason}{shared}{where}")
        if not opts.quiet:
            for p in report.unknown:
                click.echo(f"unknown file: {p}")
            for e in report.stale_ingests:
                click.echo(f"stale ingest: {e.path} ({human_size(e.size)}, {_ago(e.age)})")
            state = "ok" if report.ok else f"{len(report.corrupt)} corrupt blob(s)"
            click.echo(
                f"{report.root}: {state}; {report.checked} blob(s) verified "
                f"({human_size(report.checked_bytes)})"
            )
    if not report.ok:
        raise click.exceptions.Exit(1)


@cache.command("prune")
@click.option("--older-than", type=_Duration(), metavar="DURATION",
              help="Remove blobs not used for this long (e.g. 7d, 12h, 30m).")  # fmt: skip
@click.option("--max-size", type=Size(), metavar="SIZE",
              help="Remove least recently used blobs until the blobs total at most SIZE "
              "(e.g. 10G; K/M/G/T are powers of 1024).")  # fmt: skip
@click.option("--unlinked", is_flag=True,
              help="Only blobs no layout hard-links (link count 1).")  # fmt: skip
@click.option("--grace", type=_Duration(), default="1h", metavar="DURATION", show_default=True,
              help="Never remove a blob used more recently than this.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print what would be removed; change nothing.")
@_json_option
@pass_options
def prune(
    opts: GlobalOptions,
    /,
    older_than: float | None,
    max_size: int | None,
    unlinked: bool,
    grace: float,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove blobs by policy; always sweep stale partial downloads.

    \b
    "Used" means the blob's modification time, which the cache sets when it
    publishes a blob and bumps whenever a pull finds it already cached or
    links it into a layout (the cache keeps no other per-use records, and
    hard-linked layout copies share that time). --older-than and --unlinked
    select blobs (both must match when combined); --max-size then removes the
    least recently used of them until the cache fits. Without any policy only
    stale ingest, lock and quarantine files older than the grace period go.

    \b
    Safe while pulls run: blobs used within --grace are never removed, layouts
    keep their own links or copies, and a pull whose blob vanished fetches it
    again. Removing a blob that layouts still link frees no disk space until
    those layouts drop it too ("freed" in the summary counts only unlinked ones).
    """
    report = prune_cache(_open(opts), 
        older_than=older_than, max_size=max_size, unlinked=unlinked, grace=grace, dry_run=dry_run
    )
    if as_json:
        emit_json(report.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    if not opts.quiet:
        now = time.time()
        for b in report.removed:
            click.echo(f"{verb} {b.digest} ({human_size(b.size)}, used {_ago(now - b.last_used)})")
        for p in report.swept:
            click.echo(f"{verb} {p}")
    summary = (
        f"{verb} {len(report.removed)} blob(s), {human_size(report.removed_bytes)} "
        f"(frees {human_size(report.freed_bytes)}), and {len(report.swept)} stale file(s) "
        f"({human_size(report.swept_bytes)}); {human_size(report.remaining_bytes)} of blobs remain"
    )
    if report.kept_in_grace:
        summary += f"; kept {report.kept_in_grace} blob(s) used within the grace period"
    if report.budget_met is False:
        summary += f"; still above --max-size {human_size(report.max_size or 0)}"
    click.echo(summary)

"""``hybridstore cache info|du|path|layouts|where|verify|prune``: look after the shared
blob cache and the layouts it knows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, Protocol

import click

from hybridstore.cli.format import ago, emit_json, human_size
from hybridstore.cli.options import (
    Duration,
    GlobalOptions,
    Size,
    credential_from,
    json_option,
    pass_options,
    registry_options,
    transport_from,
)
from hybridstore.errors import NotFoundError
from hybridstore.oci.digest import Digest
from hybridstore.store.cache import BlobCache
from hybridstore.store.cache_admin import (
    PruneEntry,
    cache_info,
    disk_usage,
    prune_cache,
    verify_cache,
)

__all__ = ["cache"]


class _Jsonable(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def _echo_item(item: _Jsonable, index: int) -> None:
    """Print one element of a JSON list being streamed (after the ``[``)."""
    text = json.dumps(item.to_json(), sort_keys=True)
    click.echo(("\n  " if index == 0 else ",\n  ") + text, nl=False)


def _stream_json(items: Iterable[_Jsonable]) -> int:
    """Print a JSON list one item at a time (flat memory for any count); the count."""
    n = 0
    click.echo("[", nl=False)
    for n, item in enumerate(items, 1):
        _echo_item(item, n - 1)
    click.echo("\n]" if n else "]")
    return n


def _open(opts: GlobalOptions) -> BlobCache:
    return BlobCache(opts.cache_dir) if opts.cache_dir else BlobCache()


@click.group("cache")
def cache() -> None:
    """Inspect, verify and prune the shared blob cache; see the layouts it knows.

    The cache is --cache DIR, else $HYBRIDSTORE_CACHE_DIR, else
    $XDG_CACHE_HOME/hybridstore, else ~/.cache/hybridstore.
    """


@cache.command("info")
@json_option
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
@json_option
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
@json_option
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


@cache.command("layouts")
@click.option("--forget-missing", is_flag=True,
              help="Drop the records of layouts that are gone or were replaced.")  # fmt: skip
@json_option
@pass_options
def layouts(opts: GlobalOptions, /, forget_missing: bool, as_json: bool) -> None:
    """List the layouts that link from this cache: path, refs, last use.

    \b
    Every command that links a blob from the cache into a layout records the
    layout's absolute path (one small file per layout under layouts/ in the
    cache; refs stay in the layout's own index.json). A layout deleted, or
    moved away and replaced by another directory, shows as "missing" or
    "replaced"; a moved layout is recorded again at its new path by the next
    pull into it. --forget-missing drops those records.
    """
    from hybridstore.store.cache_layouts import known_layouts

    usages = known_layouts(_open(opts), forget_missing=forget_missing)
    if as_json:
        _stream_json(usages)
        return
    now = time.time()
    for u in usages:
        state = f"{u.refs} ref(s)" if u.refs is not None else u.known.state
        forgot = ", forgotten" if u.forgotten else ""
        click.echo(f"{u.known.path}\t{state}\tused {ago(now - u.known.last_used)}{forgot}")


@cache.command("where")
@click.argument("target", metavar="DIGEST|REF")
@json_option
@pass_options
def where(opts: GlobalOptions, /, target: str, as_json: bool) -> None:
    """List every known layout and ref that holds DIGEST or REF.

    A DIGEST counts when a ref's graph contains it directly or through an
    index or manifest (a layer, a config, a platform's manifest); a REF is
    matched as pull spells it (full, short, oci://). Only layouts the cache
    knows are searched (hybridstore cache layouts). Exits 4 when none holds it.
    """
    from hybridstore.store.cache_layouts import where_used

    holders = where_used(_open(opts), target)
    if as_json:
        found = _stream_json(holders)
    else:
        found = 0
        for h in holders:
            found += 1
            via = "" if h.root == h.digest else f" (in the graph of {h.root})"
            click.echo(f"{h.layout}\t{h.ref}{via}")
    if not found:
        raise NotFoundError(f"no layout this cache knows holds {target}")


@cache.command("verify")
@click.option("--repair", is_flag=True,
              help="Move corrupt blobs to quarantine/ and mend the known layouts that "
              "shared them.")  # fmt: skip
@json_option
@registry_options
@pass_options
def verify(opts: GlobalOptions, /, repair: bool, as_json: bool, **kw: Any) -> None:
    """Re-hash every blob and report corrupt ones; list stale partial downloads.

    \b
    Exits 1 when a corrupt blob is left in the cache, or a layout still needs
    a pull. --repair moves corrupt blobs aside, then, for every layout the
    cache knows (hybridstore cache layouts) whose refs reach one: puts a
    layout's good copy (reflink and copy modes keep their own bytes) back into
    the cache, re-links good copies into the layouts that lacked one (hard
    links shared the corrupt inode), else pulls those refs again pinned to
    their digest, else prints which layout and refs still need a pull.
    """
    from hybridstore.repair import Network, repair_known_layouts

    network = Network(transport_from(kw), credential_from(kw)) if repair else None
    c = _open(opts)
    report = verify_cache(c, repair=repair)
    moved = [b.digest for b in report.corrupt if b.digest is not None and b.quarantined_to]
    mends = repair_known_layouts(c, moved, network) if repair else []
    unmended = [m for m in mends if not m.ok]
    if as_json:
        emit_json({**report.to_json(), "layouts": [m.to_json() for m in mends]})
    else:
        for bad in report.corrupt:
            where = f"; moved to {bad.quarantined_to}" if bad.quarantined_to else ""
            shared = f"; {bad.links} layout link(s) share it" if bad.links else ""
            click.echo(f"corrupt: {bad.path}: {bad.reason}{shared}{where}")
        if not opts.quiet:
            for p in report.unknown:
                click.echo(f"unknown file: {p}")
            for e in report.stale_ingests:
                click.echo(f"stale ingest: {e.path} ({human_size(e.size)}, {ago(e.age)})")
            state = "ok" if report.ok else f"{len(report.corrupt)} corrupt blob(s)"
            click.echo(
                f"{report.root}: {state}; {report.checked} blob(s) verified "
                f"({human_size(report.checked_bytes)})"
            )
        for m in mends:
            for line in m.lines():
                click.echo(line)
    if not report.ok or unmended:
        raise click.exceptions.Exit(1)


@cache.command("prune")
@click.option("--older-than", type=Duration(), metavar="DURATION",
              help="Remove blobs not used for this long (e.g. 7d, 12h, 30m).")  # fmt: skip
@click.option("--max-size", type=Size(), metavar="SIZE",
              help="Remove least recently used blobs until the blobs total at most SIZE "
              "(e.g. 10G; K/M/G/T are powers of 1024).")  # fmt: skip
@click.option("--unlinked", is_flag=True,
              help="Only blobs no layout hard-links (link count 1: hard links only).")  # fmt: skip
@click.option("--unreferenced", is_flag=True,
              help="Only blobs that no ref of any live layout the cache knows reaches "
              "(right in every link mode; see hybridstore cache layouts).")  # fmt: skip
@click.option("--grace", type=Duration(), default="1h", metavar="DURATION", show_default=True,
              help="Never remove a blob used more recently than this.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print what would be removed; change nothing.")
@json_option
@pass_options
def prune(
    opts: GlobalOptions,
    /,
    older_than: float | None,
    max_size: int | None,
    unlinked: bool,
    unreferenced: bool,
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
    select blobs (all given must match); --max-size then removes the least
    recently used of them until the cache fits. --unreferenced reads the refs of
    every live layout the cache knows, so it is right whether layouts hard-link,
    reflink or copy; a layout the cache does not know (made by another tool or
    an older hybridstore) does not count, and loses nothing: it keeps its own
    links or copies. Without any policy only
    stale ingest, lock and quarantine files older than the grace period go.

    \b
    Safe while pulls run: blobs used within --grace are never removed, layouts
    keep their own links or copies, and a pull whose blob vanished fetches it
    again. Removing a blob that layouts still link frees no disk space until
    those layouts drop it too ("freed" in the summary counts only unlinked ones).
    """
    verb = "would remove" if dry_run else "removed"
    now = time.time()
    shown = 0

    def show(b: PruneEntry) -> None:
        nonlocal shown
        if as_json:  # streamed: the list is never held in memory
            _echo_item(b, shown)
        elif not opts.quiet:
            click.echo(f"{verb} {b.digest} ({human_size(b.size)}, used {ago(now - b.last_used)})")
        shown += 1

    if as_json:
        click.echo('{"removed": [', nl=False)
    report = prune_cache(
        _open(opts),
        older_than=older_than,
        max_size=max_size,
        unlinked=unlinked,
        unreferenced=unreferenced,
        grace=grace,
        dry_run=dry_run,
        on_remove=show,
    )
    if as_json:
        rest = report.to_json()
        del rest["removed"]
        click.echo(("\n]" if shown else "]") + ", " + json.dumps(rest, sort_keys=True)[1:])
        return
    if not opts.quiet:
        for p in report.swept:
            click.echo(f"{verb} {p}")
    summary = (
        f"{verb} {report.removed_count} blob(s), {human_size(report.removed_bytes)} "
        f"(frees {human_size(report.freed_bytes)}), and {len(report.swept)} stale file(s) "
        f"({human_size(report.swept_bytes)}); {human_size(report.remaining_bytes)} of blobs remain"
    )
    if report.kept_in_grace:
        summary += f"; kept {report.kept_in_grace} blob(s) used within the grace period"
    if report.budget_met is False:
        summary += f"; still above --max-size {human_size(report.max_size or 0)}"
    click.echo(summary)

"""``hybridstore layout verify|gc``: check, repair and clean up a project's layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from hybridstore.cli.format import emit_json, human_size
from hybridstore.cli.options import (
    Duration,
    GlobalOptions,
    credential_from,
    layout_option,
    pass_options,
    registry_options,
    transport_from,
)

__all__ = ["layout"]

_F = TypeVar("_F", bound=Callable[..., Any])


@click.group()
def layout() -> None:
    """Check and clean up a project's OCI layout."""


def _layout_arg(f: _F) -> _F:
    """The layout as ``--layout DIR``, as every other command takes it, or positionally."""
    f = layout_option("The OCI layout directory.", required=False)(f)
    return click.argument("directory", required=False, type=click.Path(file_okay=False))(f)


def _directory(directory: str | None, layout_dir: str | None) -> str:
    if (directory is None) == (layout_dir is None):
        raise click.UsageError("give the layout once: --layout DIR (or DIR)")
    return directory or layout_dir or ""


@layout.command()
@_layout_arg
@click.option(
    "--repair",
    is_flag=True,
    help="Replace missing or corrupt blobs: from the cache when it holds a good copy, "
    "else by pulling the refs that reach them again (pinned to their recorded digest).",
)
@click.option("--offline", is_flag=True, help="With --repair: use the cache only.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@registry_options
@pass_options
def verify(
    opts: GlobalOptions,
    /,
    directory: str | None,
    layout_dir: str | None,
    repair: bool,
    offline: bool,
    as_json: bool,
    **kw: Any,
) -> None:
    """Check that every blob reachable from the layout's index.json is present and intact.

    Re-hashes each reachable blob and validates manifests, indexes and configs;
    lists unreferenced blobs and foreign files. Exits 1 when there are problems
    (after --repair: problems left, or refs that still need a pull).
    """
    from hybridstore.store.cache import BlobCache
    from hybridstore.store.layout import OCILayout
    from hybridstore.store.layout_check import verify_layout

    directory = _directory(directory, layout_dir)
    target = OCILayout.open(directory, cache=BlobCache(opts.cache_dir))
    mend = None
    if repair:
        from hybridstore.repair import Network, repair_layout

        network = None if offline else Network(transport_from(kw), credential_from(kw))
        mend = repair_layout(target, network)
    report = verify_layout(target)
    if as_json:
        emit_json({**report.to_json(), "repair": mend.to_json() if mend else None})
    elif not opts.quiet or not report.ok:
        for p in report.problems:
            click.echo(f"problem: {p}")
        if not opts.quiet:
            for w in report.warnings:
                click.echo(f"warning: {w}")
            for label, items in (
                ("absent (sparse, allowed)", report.absent),
                ("unreferenced blob", report.unreferenced),
                ("foreign file", report.foreign),
                ("leftover temp file", report.temp_files),
            ):
                for item in items:
                    click.echo(f"{label}: {item}")
            state = "ok" if report.ok else f"{len(report.problems)} problem(s)"
            click.echo(
                f"{directory}: {state}; {report.refs} ref(s), {report.blobs_checked} blob(s) "
                f"verified ({human_size(report.bytes_checked)})"
            )
    if mend is not None and not as_json:
        for line in mend.lines():
            click.echo(line)
    if not report.ok or (mend is not None and not mend.ok):
        raise click.exceptions.Exit(1)


@layout.command()
@_layout_arg
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option(
    "--grace",
    type=Duration(),
    default=None,
    metavar="DURATION",
    help="Keep unreachable blobs added less than this long ago (e.g. 30m, 1h, 2d), so a "
    "pull running right now loses nothing [default: 1h].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_options
def gc(
    opts: GlobalOptions,
    /,
    directory: str | None,
    layout_dir: str | None,
    dry_run: bool,
    grace: float | None,
    as_json: bool,
) -> None:
    """Remove blobs unreachable from the layout's index.json.

    Follows manifests, indexes, configs, layers, and subject/referrer manifests
    that are present. The shared cache is never touched.
    """
    from hybridstore.store.layout import OCILayout
    from hybridstore.store.layout_check import DEFAULT_GC_GRACE, gc_layout

    directory = _directory(directory, layout_dir)
    report = gc_layout(
        OCILayout.open(directory),
        dry_run=dry_run,
        grace=DEFAULT_GC_GRACE if grace is None else grace,
    )
    if as_json:
        emit_json(report.to_json())
        return
    if opts.quiet:
        return
    verb = "would remove" if dry_run else "removed"
    for digest, size in report.removed:
        click.echo(f"{verb} {digest} ({human_size(size)})")
    for name in report.temp_files_removed:
        click.echo(f"{verb} temp file {name}")
    if report.kept_recent:
        n = len(report.kept_recent)
        click.echo(f"kept {n} unreachable blob(s) younger than the grace period (--grace)")
    click.echo(
        f"{directory}: {verb} {len(report.removed)} blob(s), {human_size(report.bytes_freed)}; "
        f"{report.reachable} reachable"
    )

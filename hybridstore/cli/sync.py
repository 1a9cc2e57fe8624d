"""``hybridstore sync``."""

from __future__ import annotations

from typing import Any

import click

from hybridstore.cli.format import emit_json
from hybridstore.cli.options import (
    GlobalOptions,
    concurrency_option,
    credential_from,
    link_mode_option,
    max_manifest_size_option,
    pass_options,
    registry_options,
    transport_from,
)

__all__ = ["sync"]


@click.command()
@click.argument("refs", nargs=-1)
@click.option(
    "-f",
    "--file",
    "project_file",
    type=click.Path(dir_okay=False),
    help="Project file [default: ./hybridstore.yaml].",
)
@click.option(
    "--update",
    is_flag=True,
    help="Re-resolve tags and rewrite the lock: every entry, or only REFS (refs or ref names).",
)
@click.option(
    "--locked",
    is_flag=True,
    help="Fail (exit 8) unless hybridstore.lock covers the file; never write the lock (CI).",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Open no socket: everything from the lock and the cache, else fail listing what lacks.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; no network, nothing written.")
@concurrency_option
@link_mode_option
@max_manifest_size_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@registry_options
@pass_options
def sync(opts: GlobalOptions, /, refs: tuple[str, ...], **kw: Any) -> None:
    """Make the project's layouts and Helm dependencies match hybridstore.yaml.

    Entries in hybridstore.lock keep their locked digest; new or changed entries
    are resolved (in parallel) and the lock is rewritten. Everything is pulled
    through the shared cache; refs that sync created and the file no longer lists
    are removed (never refs tagged by hand). Oci:// dependencies of the charts under
    'helm:' are written to charts/<name>-<version>.tgz as `helm dependency build`
    writes them.
    """
    from hybridstore.cli.progress import run_with_progress
    from hybridstore.sync import sync as run_sync

    if refs and not kw["update"]:
        raise click.UsageError("REFS are only taken with --update")
    transport = transport_from(kw)
    credential = credential_from(kw)
    as_json = kw["as_json"]
    args: dict[str, Any] = dict(
        update=refs if kw["update"] else None,
        locked=kw["locked"],
        offline=kw["offline"],
        dry_run=kw["dry_run"],
        cache=opts.cache_dir,
        transport=transport,
        credential=credential,
        concurrency=kw["concurrency"],
        link_mode=kw["link_mode"],
        manifest_limit=kw["max_manifest_size"],
    )
    result = run_with_progress(
        opts.quiet,
        as_json,
        lambda progress: run_sync(kw["project_file"], progress=progress, **args),
    )
    if as_json:
        emit_json(result.to_json())
        return
    for line in result.left_to_helm:
        click.echo(f"hybridstore: left to helm (not oci://): {line}", err=True)
    if opts.quiet:
        return
    rows = [("ACTION", "TARGET", "DIGEST", "FETCHED")]
    for i in result.items:
        fetched = f"{i.blobs_fetched} ({i.bytes_transferred} B)" if i.blobs_fetched else "-"
        rows.append((i.action, i.target, i.digest[:19] or "-", fetched))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths[c]) for c in range(3)) + "  " + r[3])
    lock = "written" if result.lock_written else "unchanged"
    if result.dry_run:
        lock = "not written (dry run)"
    click.echo(
        f"{len(result.items)} item(s), {result.blobs_fetched} blob(s) fetched, "
        f"{result.bytes_transferred} bytes, lock {lock}, {result.seconds:.2f}s"
    )

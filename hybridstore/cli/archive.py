"""``hybridstore export`` and ``hybridstore import``: layouts as tar archives (air gaps)."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from typing import Any, cast

import click

from hybridstore.cli.format import emit_json, human_size
from hybridstore.cli.options import (
    GlobalOptions,
    Size,
    init_option,
    layout_option,
    link_mode_option,
    pass_options,
)
from hybridstore.errors import InvalidInputError

__all__ = ["export", "import_"]


@click.command()
@click.argument("names", nargs=-1)
@layout_option("The OCI layout to export from.")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE",
    help="Archive to write (.tar, .tar.gz, .tar.zst), or - for stdout.",
)
@click.option(
    "--compress",
    type=click.Choice(["gzip", "zstd", "none"]),
    help="Compression [default: from the file name's extension; none for stdout].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (to stderr with -o -).")
@pass_options
def export(
    opts: GlobalOptions,
    /,
    names: tuple[str, ...],
    layout_dir: str,
    output: str,
    compress: str | None,
    as_json: bool,
) -> None:
    """Write NAMES (default: every ref) of a layout to one OCI layout tar.

    The archive holds index.json with just those refs and every blob they
    reach, once. The same content always gives a byte-identical archive.
    skopeo reads it as oci-archive:FILE:NAME with NAME the full ref name
    (e.g. registry.example.com/charts/app:1.2.3).
    """
    from hybridstore.archive.export import Compression, export_layout, export_to_path
    from hybridstore.cli.progress import ByteBar, wants_progress

    chosen = cast("Compression | None", compress)
    to_stdout = output == "-"
    with ExitStack() as stack:
        bar = None
        if wants_progress(opts.quiet, as_json):
            bar = ByteBar("exporting")
            stack.enter_context(bar.bars)
        progress = bar.update if bar is not None else None
        if to_stdout:
            out = sys.stdout.buffer
            if out.isatty():
                raise InvalidInputError(
                    "refusing to write a binary archive to a terminal; use -o FILE"
                )
            result = export_layout(
                layout_dir, out, names, compression=chosen or "none", progress=progress
            )
            out.flush()
        else:
            result = export_to_path(
                layout_dir, output, names, compression=chosen, progress=progress
            )
    if as_json:
        emit_json(result.to_json(), err=to_stdout)
        return
    if opts.quiet:
        return
    where = "stdout" if to_stdout else output
    for name, desc in result.refs:
        click.echo(f"{name}: {desc.digest}", err=to_stdout)
    click.echo(
        f"exported {len(result.refs)} ref(s), {result.blobs} blob(s) "
        f"({human_size(result.blob_bytes)}) to {where} as a {human_size(result.archive_bytes)} "
        f"{'uncompressed' if result.compression == 'none' else result.compression} archive",
        err=to_stdout,
    )


@click.command("import")
@click.argument("archive", metavar="FILE|-")
@layout_option("The OCI layout to import into (created if missing).")
@click.option("--overwrite", is_flag=True, help="Replace refs that already point elsewhere.")
@click.option(
    "--ref-name", help="Name for the one entry of a single-image archive (e.g. from skopeo)."
)
@link_mode_option
@init_option
@click.option(
    "--max-entries",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Refuse archives with more tar entries than this.",
)
@click.option(
    "--max-size",
    type=Size(),
    metavar="SIZE",
    default="256G",
    show_default=True,
    help="Refuse archives larger than this, uncompressed (e.g. 500G, 2T).",
)
@click.option(
    "--max-ratio",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Refuse a compressed archive that expands more than this many times (plus 64 MiB).",
)
@click.option(
    "--max-index-size",
    type=Size(),
    metavar="SIZE",
    default="64M",
    show_default=True,
    help="Refuse an index.json larger than this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@pass_options
def import_(opts: GlobalOptions, /, archive: str, **kw: Any) -> None:
    """Import an OCI layout tar (plain, gzip or zstd; - reads stdin) into a layout.

    Every blob is verified into the shared cache and then linked into the
    layout; refs are tagged only after the whole archive checked out, all in
    one index.json update. Archives written by skopeo (oci-archive:) work too.
    Once index.json has been read, each blob is checked against the size its
    descriptor declares before it is written, and blobs no descriptor lists are
    skipped.
    """
    from hybridstore.archive.importer import ImportLimits, import_archive
    from hybridstore.cli.progress import ByteBar, CountingReader, wants_progress

    limits = ImportLimits(
        max_entries=kw["max_entries"],
        max_size=kw["max_size"],
        max_ratio=kw["max_ratio"],
        max_index_bytes=kw["max_index_size"],
    )
    as_json = kw["as_json"]
    with ExitStack() as stack:
        source: Any = sys.stdin.buffer if archive == "-" else archive
        if wants_progress(opts.quiet, as_json) and (archive == "-" or os.path.isfile(archive)):
            # the archive's own bytes: its size is known for a file, not for stdin
            bar = ByteBar("importing")
            stack.enter_context(bar.bars)
            if archive != "-":
                source = stack.enter_context(open(archive, "rb"))  # noqa: SIM115
            total = None if archive == "-" else os.path.getsize(archive)
            source = CountingReader(source, bar, total)
        result = import_archive(
            source,
            kw["layout_dir"],
            cache=opts.cache_dir,
            overwrite=kw["overwrite"],
            ref_name=kw["ref_name"],
            link_mode=kw["link_mode"],
            limits=limits,
            init=kw["init"],
        )
    if as_json:
        emit_json(result.to_json())
    if as_json or opts.quiet:
        return
    for name, desc in result.refs:
        note = " (replaced)" if name in result.replaced else ""
        click.echo(f"{name}: {desc.digest}{note}")
    links = ", ".join(f"{n} {mode}" for mode, n in sorted(result.link_modes.items()))
    click.echo(
        f"imported {len(result.refs)} ref(s) into {kw['layout_dir']}: "
        f"{result.blobs_ingested} blob(s) new in the cache ({human_size(result.bytes_ingested)}), "
        f"{result.blobs_present} already cached; linked: {links or 'nothing'}"
    )
    for digest in result.skipped:
        click.echo(f"skipped unnamed entry {digest} (use --ref-name for a one-entry archive)")

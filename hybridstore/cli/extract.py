"""``hybridstore extract``: an artifact's files (or a Helm chart's .tgz) into a directory."""

from __future__ import annotations

from typing import Any

import click

from hybridstore.cli.format import emit_json
from hybridstore.cli.options import (
    GlobalOptions,
    credential_from,
    mirror_options,
    pass_options,
    ref_or_layout,
    registry_options,
    transport_from,
)

__all__ = ["extract"]


@click.command()
@ref_or_layout("Extract the ref REF of this layout instead of pulling from a registry.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write into (created if missing).",
)
@click.option("--untar", is_flag=True, help="Unpack a Helm chart instead of writing its .tgz.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Which manifest of an index.")
@click.option(
    "--max-expanded-size",
    default=100 << 20,
    show_default=True,
    type=click.IntRange(1),
    help="Largest total size an archive may unpack to, in bytes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@registry_options
@mirror_options
@pass_options
def extract(
    opts: GlobalOptions,
    /,
    ref: str | None,
    layout_dir: str | None,
    output: str,
    untar: bool,
    platform: str | None,
    max_expanded_size: int,
    as_json: bool,
    **kw: Any,
) -> None:
    """Write REF's files into OUTPUT, as `oras pull` and `helm pull` do.

    Layers named by org.opencontainers.image.title become files of that name;
    a Helm chart becomes <name>-<version>.tgz (and .tgz.prov when signed).
    Names that would leave OUTPUT (.., absolute paths, symlinks already in
    OUTPUT) are refused and nothing is written.
    """
    from hybridstore.archive.untar import UntarLimits
    from hybridstore.extract import extract as extract_call

    result = extract_call(
        ref,
        layout=layout_dir,
        output=output,
        untar_chart=untar,
        platform=platform,
        cache=opts.cache_dir,
        transport=transport_from(kw),
        credential=credential_from(kw),
        limits=UntarLimits(max_bytes=max_expanded_size),
    )
    if as_json:
        emit_json(result.to_json())
        return
    if opts.quiet:
        return
    for f in result.files:
        click.echo(f"{output.rstrip('/')}/{f.path}")

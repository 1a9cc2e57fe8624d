"""``hybridstore refs``, ``tag`` and ``untag``: the names in a layout's index.json."""

from __future__ import annotations

from typing import Any

import click

from hybridstore.cli.format import emit_json
from hybridstore.cli.options import GlobalOptions, json_option, layout_option, pass_options
from hybridstore.oci.model import Descriptor

__all__ = ["refs", "tag", "untag"]

_layout_option = layout_option("The OCI layout directory.")


def _row(name: str, desc: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "digest": str(desc.digest),
        "mediaType": desc.media_type,
        "size": desc.size,
    }
    if desc.platform is not None:
        out["platform"] = str(desc.platform)
    if desc.artifact_type:
        out["artifactType"] = desc.artifact_type
    return out


@click.command()
@_layout_option
@json_option
def refs(layout_dir: str, as_json: bool) -> None:
    """List the refs (names) in a layout's index.json."""
    from hybridstore.store.layout import OCILayout

    rows = [_row(n, d) for n, d in sorted(OCILayout.open(layout_dir).refs().items())]
    if as_json:
        emit_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['digest']}  {r['mediaType']}")


@click.command()
@_layout_option
@click.argument("src")
@click.argument("new")
@json_option
@pass_options
def tag(opts: GlobalOptions, /, layout_dir: str, src: str, new: str, as_json: bool) -> None:
    """Give the content SRC names (a ref, an unambiguous tag or a digest) the name NEW.

    NEW replaces any entry already called NEW; SRC keeps its name.
    """
    from hybridstore.store.layout import OCILayout

    layout = OCILayout.open(layout_dir)
    desc = layout.resolve(src)
    layout.tag(desc, new)
    if as_json:
        emit_json(_row(new, desc))
    elif not opts.quiet:
        click.echo(f"{new} -> {desc.digest}")


@click.command()
@_layout_option
@click.argument("name")
@json_option
@pass_options
def untag(opts: GlobalOptions, /, layout_dir: str, name: str, as_json: bool) -> None:
    """Remove NAME from a layout's index.json (blobs stay until `layout gc`)."""
    from hybridstore.store.layout import OCILayout

    desc = OCILayout.open(layout_dir).untag(name)
    if as_json:
        emit_json(_row(name, desc))
    elif not opts.quiet:
        click.echo(f"untagged {name} ({desc.digest})")

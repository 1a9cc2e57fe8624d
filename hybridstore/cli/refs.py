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
    """List the refs (names) in a layout's index.json.

    Referrers fallback indexes (NAME:sha256-<hex>, written for registries
    without the referrers API) are shown under the ref of their subject.
    """
    from hybridstore.oci.referrers import fallback_subject
    from hybridstore.store.layout import OCILayout

    rows: list[dict[str, Any]] = []
    attached: dict[str, list[dict[str, Any]]] = {}
    for name, desc in sorted(OCILayout.open(layout_dir).refs().items()):
        subject = fallback_subject(name)
        (attached.setdefault(subject, []) if subject else rows).append(_row(name, desc))
    for row in rows:
        if row["digest"] in attached:
            row["referrers"] = attached.pop(row["digest"])
    rows += [r for orphans in attached.values() for r in orphans]  # subject not named here
    if as_json:
        emit_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['digest']}  {r['mediaType']}")
        for ref in r.get("referrers", ()):
            click.echo(f"  referrers: {ref['name']}  {ref['digest']}")


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

"""``hybridstore tags``."""

from __future__ import annotations

from typing import Any

import click

from hybridstore.cli.format import emit_json
from hybridstore.cli.options import (
    credential_from,
    mirror_options,
    registry_options,
    remember_ref,
    transport_from,
)

__all__ = ["tags"]


@click.command()
@click.argument("ref", callback=remember_ref)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@registry_options
@mirror_options
def tags(ref: str, as_json: bool, **kw: Any) -> None:
    """List the tags of REF's repository (following pagination)."""
    from hybridstore.remote.clients import list_tags

    names = list_tags(ref, transport_from(kw), credential_from(kw))
    if as_json:
        emit_json(names)
    else:
        for name in names:
            click.echo(name)

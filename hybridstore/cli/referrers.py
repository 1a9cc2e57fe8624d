"""``hybridstore referrers REF``: what is attached to REF through ``subject``."""

from __future__ import annotations

from typing import Any

import click

from hybridstore.cli.format import emit_json
from hybridstore.cli.options import (
    credential_from,
    mirror_options,
    ref_or_layout,
    registry_options,
    transport_from,
)

__all__ = ["referrers"]


@click.command()
@ref_or_layout("List referrers recorded in this layout (REF is a ref name there).")
@click.option(
    "--artifact-type",
    "artifact_types",
    multiple=True,
    help="Only referrers of this artifact type (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@registry_options
@mirror_options
def referrers(
    ref: str | None,
    layout_dir: str | None,
    artifact_types: tuple[str, ...],
    as_json: bool,
    **kw: Any,
) -> None:
    """List the referrers of REF (signatures, SBOMs, attestations).

    Uses the registry's referrers API, or the sha256-<hex> tag schema on
    registries without it.
    """
    from hybridstore.referrers import list_referrers

    subject, found = list_referrers(
        ref,
        layout=layout_dir,
        artifact_types=artifact_types,
        transport=transport_from(kw),
        credential=credential_from(kw),
    )
    if as_json:
        emit_json({"subject": subject.to_json(), "referrers": [d.to_json() for d in found]})
        return
    for d in found:
        click.echo(f"{d.digest}  {d.artifact_type or '-'}  {d.size}")

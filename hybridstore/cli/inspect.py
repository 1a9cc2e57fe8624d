"""``hybridstore inspect REF`` / ``inspect --layout DIR NAME``."""

from __future__ import annotations

import json
import sys
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
from hybridstore.errors import InvalidDocumentError
from hybridstore.oci.jsondoc import load_json
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES

__all__ = ["inspect"]


@click.command()
@ref_or_layout("Inspect the ref REF of this layout instead of a registry.")
@click.option("--raw", is_flag=True, help="Print the exact bytes (of the manifest, or --config).")
@click.option("--config", "show_config", is_flag=True, help="Print the config blob.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Descend into an index's manifest.")
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON object.")
@click.option(
    "--max-manifest-size",
    default=MAX_DOCUMENT_BYTES,
    show_default=True,
    type=click.IntRange(MAX_DOCUMENT_BYTES),
    help="Largest manifest accepted, in bytes.",
)
@registry_options
@mirror_options
def inspect(
    ref: str | None,
    layout_dir: str | None,
    raw: bool,
    show_config: bool,
    platform: str | None,
    as_json: bool,
    max_manifest_size: int,
    **kw: Any,
) -> None:
    """Show what REF names: descriptor, manifest, platforms, Helm chart name/version.

    With --layout DIR, REF is a ref name in that layout (optional when it has one).
    """
    from hybridstore.inspect import inspect as inspect_call

    if raw and as_json:
        raise click.UsageError("--raw and --json exclude each other")
    result = inspect_call(
        ref,
        layout=layout_dir,
        platform=platform,
        with_config=show_config,
        transport=transport_from(kw),
        credential=credential_from(kw),
        manifest_limit=max_manifest_size,
    )
    if raw:
        data = result.config if show_config else result.raw
        assert data is not None
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if as_json:
        emit_json(result.to_json())
        return
    if show_config:
        assert result.config is not None
        click.echo(_pretty(result.config))
        return
    d = result.descriptor
    rows = [
        ("Reference", result.reference),
        ("Digest", str(d.digest)),
        ("Media type", d.media_type),
        ("Size", str(d.size)),
    ]
    info = result.to_json()
    if "artifactType" in info:
        rows.append(("Artifact type", info["artifactType"]))
    if result.platforms:
        rows.append(("Platforms", ", ".join(result.platforms)))
    if result.chart is not None:
        c = result.chart
        rows.append(("Helm chart", f"{c.name} {c.version}"))
        if c.app_version:
            rows.append(("App version", c.app_version))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k + ':':<{width + 1}} {v}")
    click.echo(_pretty(result.raw))


def _pretty(data: bytes) -> str:
    try:
        return json.dumps(load_json(data, limit=None), indent=2, ensure_ascii=False)
    except InvalidDocumentError:
        return data.decode("utf-8", "replace")

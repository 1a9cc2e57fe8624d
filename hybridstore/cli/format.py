"""How commands print: JSON documents, one-line errors, human sizes and ages, transfer summaries."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

__all__ = ["ago", "emit_json", "fail", "human_size", "json_text", "print_transfer_results"]


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def emit_json(obj: Any, *, err: bool = False) -> None:
    click.echo(json_text(obj), err=err)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"hybridstore: error: {message}", err=True)
    sys.exit(code)


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{max(seconds, 0):.0f}s ago"


def print_transfer_results(quiet: bool, as_json: bool, results: Sequence[Any]) -> None:
    """One line per copied or pushed ref, or the JSON summary."""
    if as_json:
        emit_json([r.to_json() for r in results] if len(results) != 1 else results[0].to_json())
        return
    if quiet:
        return
    for r in results:
        moved = f"{r.uploaded} uploaded, {r.mounted} mounted, {r.present} already there"
        if r.fetched:
            moved = f"{r.fetched} fetched, " + moved
        extra = f", {len(r.referrers)} referrers" if r.referrers else ""
        click.echo(
            f"{r.ref_name}: {r.digest} ({moved}{extra}, {r.bytes_transferred} bytes, "
            f"{r.seconds:.2f}s)"
        )

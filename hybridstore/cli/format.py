"""How commands print: JSON documents, one-line errors, human sizes and ages, transfer summaries."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from hybridstore.errors import HybridstoreError

__all__ = [
    "ago",
    "emit_json",
    "error_json",
    "fail",
    "human_size",
    "json_text",
    "one_line",
    "target_note",
    "print_transfer_results",
]


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def emit_json(obj: Any, *, err: bool = False) -> None:
    click.echo(json_text(obj), err=err)


def fail(message: str, code: int = 1, *, as_json: bool = False, ref: str | None = None) -> NoReturn:
    """Print one line on stderr (and with ``--json`` the error object, naming ``ref`` when
    the command is about one, on stdout), then exit with ``code``."""
    if as_json:
        error: dict[str, Any] = {"message": message, "exit_code": code}
        if ref is not None:
            error["ref"] = ref
        emit_json({"error": error})
    click.echo(f"hybridstore: error: {message}", err=True)
    sys.exit(code)


def one_line(e: BaseException) -> str:
    """An error's message as the one line the CLI prints."""
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__


def error_json(e: HybridstoreError, ref: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}`` for one failed ref of a many-ref command."""
    error: dict[str, Any] = {"message": one_line(e), "exit_code": e.exit_code}
    if ref is not None:
        error["ref"] = ref
    return {"error": error}


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
    """One line per copied or pushed ref; with ``as_json`` a JSON list, whatever the count."""
    if as_json:
        emit_json([r.to_json() for r in results])
        return
    if quiet:
        return
    for r in results:
        extra = f", {len(r.referrers)} referrers" if r.referrers else ""
        click.echo(
            f"{r.ref_name}: {r.digest}{target_note(r)} ({_moved(r.blobs)}{extra}, {r.seconds:.2f}s)"
        )


def target_note(result: Any) -> str:
    """Says so when what was stored is not what the ref named: one platform's manifest of
    an index, or a document converted to OCI media types (``--format oci``)."""
    notes = []
    if result.index:
        notes.append(f"{result.platform} manifest of index {result.index}")
    if result.converted_from:
        notes.append(f"converted to OCI media types from {result.converted_from}")
    return f" ({'; '.join(notes)})" if notes else ""


def _moved(blobs: Sequence[Any]) -> str:
    """What happened to the blobs, in the destination's words: a layout (or an archive,
    staged as one) links them from the cache, a registry has them uploaded or mounted."""
    count = Counter(b.action for b in blobs)
    nbytes = sum(b.bytes_transferred for b in blobs)
    into_layout = any(b.link_mode for b in blobs)
    if into_layout:
        modes = "/".join(sorted({b.link_mode for b in blobs} - {"present"}))
        parts = [f"{count['fetched']} fetched", f"{count['linked']} linked from the cache"]
        if modes:
            parts.append(f"link {modes}")
    else:
        fetched = sum(1 for b in blobs if b.fetched)
        parts = [f"{fetched} fetched"] if fetched else []
        parts += [f"{count['uploaded']} uploaded", f"{count['mounted']} mounted"]
    parts += [f"{count['present']} already there", f"{nbytes} bytes"]
    return ", ".join(parts)

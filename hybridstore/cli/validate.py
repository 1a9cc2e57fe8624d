"""``hybridstore validate``: check one OCI JSON document, exactly as the library does."""

from __future__ import annotations

import sys

import click

from hybridstore.cli.format import emit_json
from hybridstore.errors import InvalidDocumentError, InvalidInputError, NotFoundError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.schema import check_document

__all__ = ["validate"]


def _read_capped(file: str, limit: int) -> bytes:
    """All of ``file`` (``-`` = stdin), refusing more than ``limit`` bytes without reading on."""
    name = "stdin" if file == "-" else file
    try:
        if file == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(file, "rb") as f:
                data = f.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{name}: no such file; pass a JSON file or - for stdin") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{name}: is a directory; pass a JSON file") from None
    if len(data) > limit:
        raise InvalidDocumentError(
            f"{name}: larger than {limit} bytes; OCI documents beyond "
            f"{limit // (1024 * 1024)} MiB are refused"
        )
    return data


@click.command("validate")
@click.argument("file", metavar="FILE")
@click.option(
    "--media-type",
    "-m",
    "media_type",
    metavar="MT",
    help="Validate as this media type, or an alias: manifest, index, config, descriptor, "
    "layout, docker-manifest, docker-manifest-list, docker-config [default: guessed].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.pass_context
def validate(ctx: click.Context, file: str, media_type: str | None, as_json: bool) -> None:
    """Validate an OCI manifest, index, config, descriptor or oci-layout file.

    FILE may be - for stdin. Prints "valid" and exits 0, or prints one problem
    per line and exits 1.
    """
    report = check_document(_read_capped(file, MAX_DOCUMENT_BYTES), media_type)
    if as_json:
        emit_json(
            {
                "file": file,
                "mediaType": report.media_type,
                "valid": report.valid,
                "problems": list(report.problems),
            }
        )
    elif report.valid:
        click.echo("valid")
    else:
        for problem in report.problems:
            click.echo(problem)
    if not report.valid:
        ctx.exit(1)

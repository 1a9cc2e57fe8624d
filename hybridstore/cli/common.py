"""What every command shares: global options, JSON output, error-to-exit mapping."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from hybridstore.errors import HybridstoreError

__all__ = ["GlobalOptions", "concurrency_option", "emit_json", "fail", "run_cli", "pass_options"]


@dataclass
class GlobalOptions:
    cache_dir: str | None = None
    debug: bool = False
    quiet: bool = False


pass_options = click.make_pass_decorator(GlobalOptions, ensure=True)

# The numbers are transfer.pools.SMALL_BLOB and SMALL_BLOB_FANOUT (not imported: every command
# loads this module, and that one imports the document model).
concurrency_option = click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Blobs transferred at once; blobs under 256 KiB, which wait on round trips "
    "rather than bandwidth, up to 4x as many.",
)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"hybridstore: error: {message}", err=True)
    sys.exit(code)


def run_cli(group: click.Group, argv: list[str]) -> Any:
    """Run the click group; map library errors to one stderr line and an exit code."""
    debug = "--debug" in argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="hybridstore: %(levelname)s: %(message)s",
    )
    try:
        return group.main(args=argv, prog_name="hybridstore", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("hybridstore: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except HybridstoreError as e:
        if debug:
            raise
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__, e.exit_code)
    except KeyboardInterrupt:
        click.echo("hybridstore: interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        if debug:
            raise
        fail(f"{e.strerror or e} ({e.filename})" if e.filename else str(e), 11)

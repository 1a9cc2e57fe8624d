"""The ``hybridstore`` command: a thin click layer over the library.

Each command group lives in its own module and is imported only when the
command runs, so ``hybridstore --help`` stays fast. Commands parse, call the
library, print, and let ``run_cli`` map library errors to exit codes.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from hybridstore import __version__
from hybridstore.cli.format import emit_json, fail, one_line
from hybridstore.cli.options import GlobalOptions, add_global_options
from hybridstore.errors import HybridstoreError

__all__ = ["main", "cli", "run_cli"]

# command name -> (module, attribute, one-line help); imported on use.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": ("hybridstore.cli.validate", "validate", "Validate an OCI JSON document."),
    "login": ("hybridstore.cli.login", "login", "Check and store credentials for a registry."),
    "logout": ("hybridstore.cli.login", "logout", "Forget the credentials for a registry."),
    "pull": ("hybridstore.cli.pull", "pull", "Pull images, charts and artifacts into a layout."),
    "tags": ("hybridstore.cli.tags", "tags", "List the tags of a repository."),
    "layout": ("hybridstore.cli.layout", "layout", "Verify or garbage-collect an OCI layout."),
    "refs": ("hybridstore.cli.refs", "refs", "List the refs in a layout."),
    "tag": ("hybridstore.cli.refs", "tag", "Add a name for content in a layout."),
    "untag": ("hybridstore.cli.refs", "untag", "Remove a name from a layout."),
    "push": ("hybridstore.cli.push", "push", "Push refs of a layout into a registry."),
    "copy": ("hybridstore.cli.copy", "copy", "Copy between registries and layouts, digests kept."),
    "inspect": ("hybridstore.cli.inspect", "inspect", "Show a manifest, its platforms or config."),
    "extract": ("hybridstore.cli.extract", "extract", "Write an artifact's files or a chart .tgz."),
    "referrers": ("hybridstore.cli.referrers", "referrers", "List signatures, SBOMs of a ref."),
    "cache": ("hybridstore.cli.cache", "cache", "Inspect, verify and prune the shared blob cache."),
    "export": ("hybridstore.cli.archive", "export", "Write refs of a layout to one OCI tar."),
    "import": ("hybridstore.cli.archive", "import_", "Import an OCI layout tar into a layout."),
    "serve": ("hybridstore.cli.serve", "serve", "Serve layouts read-only over the OCI API."),
    "sync": ("hybridstore.cli.sync", "sync", "Make layouts match hybridstore.yaml and its lock."),
    "completion": (
        "hybridstore.cli.completion",
        "completion",
        "Print a bash, zsh or fish completion script.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked or listed in detail."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module, attr, _ = _COMMANDS[cmd_name]
            cmd = getattr(importlib.import_module(module), attr)
            assert isinstance(cmd, click.Command)
            return add_global_options(cmd)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in sorted(_COMMANDS)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, package_name="hybridstore")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Pull OCI images, Helm charts and ORAS artifacts into one shared cache and
    per-project OCI layouts.

    \b
    Exit codes: 0 ok, 1 problems found / other error, 2 usage, 3 integrity
    (digest/size mismatch, corruption), 4 not found, 5 auth, 6 network/registry,
    7 lock timeout, 8 conflict, 9 unsupported algorithm, 10 invalid input,
    11 filesystem/link error, 130 interrupted.
    """
    ctx.ensure_object(GlobalOptions)


add_global_options(cli)


def main(argv: list[str] | None = None) -> Any:
    return run_cli(cli, argv if argv is not None else sys.argv[1:])


def run_cli(group: click.Group, argv: list[str]) -> Any:
    """Run the click group; map library errors to one stderr line and an exit code.

    With ``--json`` anywhere on the line, a failure also prints ``{"error": {"message",
    "exit_code"}}`` on stdout, so a script parsing stdout sees the failure as JSON."""
    debug = "--debug" in argv
    as_json = "--json" in argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="hybridstore: %(levelname)s: %(message)s",
    )
    opts = GlobalOptions()
    try:
        return group.main(args=argv, prog_name="hybridstore", standalone_mode=False, obj=opts)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("hybridstore: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        if as_json:
            emit_json({"error": {"message": e.format_message(), "exit_code": e.exit_code}})
        e.show()
        sys.exit(e.exit_code)
    except HybridstoreError as e:
        if debug:
            raise
        fail(one_line(e), e.exit_code, as_json=as_json, ref=opts.ref)
    except KeyboardInterrupt:
        click.echo("hybridstore: interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        if debug:
            raise
        message = f"{e.strerror or e} ({e.filename})" if e.filename else str(e)
        fail(message, 11, as_json=as_json, ref=opts.ref)

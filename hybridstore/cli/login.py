"""``hybridstore login`` and ``hybridstore logout``."""

from __future__ import annotations

import sys
from typing import Any

import click

from hybridstore.cli.format import emit_json
from hybridstore.cli.options import GlobalOptions, pass_options, transport_from, transport_options
from hybridstore.errors import InvalidInputError

__all__ = ["login", "logout"]


def _read_secret(username: str | None, password: str | None, from_stdin: bool) -> tuple[str, str]:
    """User name and password: from the options, stdin, or a prompt on a terminal."""
    interactive = sys.stdin.isatty()
    if password is not None:
        if from_stdin:
            raise InvalidInputError("--password and --password-stdin exclude each other")
        if not username or not password:
            raise InvalidInputError("--password needs a non-empty password and -u/--username")
        # docker's own words: the password is now in the shell history and process list.
        click.echo(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True
        )
        return username, password
    if from_stdin:
        if not username:
            raise InvalidInputError("--password-stdin needs --username (-u)")
        password = sys.stdin.read().rstrip("\r\n")
        if not password:
            raise InvalidInputError("--password-stdin given but stdin was empty")
        return username, password
    if not interactive:
        raise InvalidInputError(
            "no password given and stdin is not a terminal: pipe it with --password-stdin"
        )
    if not username:
        username = click.prompt("Username", err=True).strip()
    password = click.prompt("Password", hide_input=True, err=True)
    if not username or not password:
        raise InvalidInputError("a user name and a password are required")
    return username, password


@click.command()
@click.argument("registry")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@transport_options
@click.option("-u", "--username", help="Registry user name.")
@click.option("-p", "--password", help="Password or token (insecure: prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password or token from stdin.")
@pass_options
def login(opts: GlobalOptions, /, registry: str, as_json: bool, **kw: Any) -> None:
    """Log in to REGISTRY (host[:port]; docker.io for Docker Hub).

    The credentials are checked against the registry first, then stored where
    docker and podman look: a configured credential helper, else
    ~/.docker/config.json ($DOCKER_CONFIG; $REGISTRY_AUTH_FILE when set).
    The password comes from --password-stdin, a prompt on a terminal, or
    -p/--password (visible to other users in the process list).
    """
    from hybridstore.remote.credentials import Credential
    from hybridstore.remote.login import login as login_call

    if kw["insecure"] and kw["ca_file"]:
        raise click.UsageError("--insecure and --ca-file exclude each other")
    transport = transport_from(kw)
    username, password = _read_secret(
        kw.pop("username"), kw.pop("password"), kw.pop("password_stdin")
    )
    result = login_call(registry, Credential(username=username, password=password), transport)
    if as_json:
        emit_json(result.to_json())
        return
    if opts.quiet:
        return
    if result.stored_in_plain_file:
        click.echo(
            f"warning: the password is stored unencrypted (base64) in {result.stored_in}; "
            "configure a credential helper (credsStore) to avoid this",
            err=True,
        )
    note = " (the registry does not ask for authentication)" if result.auth == "none" else ""
    click.echo(f"Login succeeded for {result.registry}{note}")


@click.command()
@click.argument("registry")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_options
def logout(opts: GlobalOptions, /, registry: str, as_json: bool) -> None:
    """Forget the stored credentials for REGISTRY (in every file and helper we read)."""
    from hybridstore.remote.credentials import erase_credential, normalize_registry

    name = normalize_registry(registry)
    removed = erase_credential(name)
    if as_json:
        emit_json({"registry": name, "removed": removed})
    elif not opts.quiet:
        click.echo(f"Removed credentials for {name}" if removed else f"Not logged in to {name}")

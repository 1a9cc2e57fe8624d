"""Click options shared by every command that talks to a registry."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hybridstore.errors import InvalidInputError

if TYPE_CHECKING:  # loaded when a command talks to a registry (pull --offline never does)
    from hybridstore.remote.credentials import Credential
    from hybridstore.remote.transport import TransportOptions

__all__ = [
    "registry_options",
    "mirror_options",
    "ref_or_layout",
    "transport_from",
    "credential_from",
]

F = TypeVar("F", bound=Callable[..., Any])


# Retries and timeouts, as skopeo names them (--retry-times, --retry-delay). The defaults
# are TransportOptions' (spelled out: pull --offline loads no hybridstore.remote module;
# tests/test_no_network_imports.py checks they agree).
_TRANSPORT_TUNING = [
    click.option(
        "--retry-times",
        type=click.IntRange(0, 100),
        default=5,
        show_default=True,
        help="Retries of a request after a connection error, 408, 429 or 5xx.",
    ),
    click.option(
        "--retry-delay",
        type=click.FloatRange(0, 3600),
        metavar="SECONDS",
        help="Fixed pause between retries [default: exponential backoff from "
        "0.25 s; a 429's Retry-After is honoured].",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(0.1, 3600),
        default=30.0,
        show_default=True,
        metavar="SECONDS",
        help="Connect and read timeout; a body that averages under 1 KiB/s over this "
        "long is given up (and a blob resumed).",
    ),
]


def registry_options(f: F) -> F:
    """--plain-http, --insecure, --ca-file, -u/--username, --password-stdin, and
    --retry-times, --retry-delay, --timeout."""
    for opt in reversed(
        [
            click.option("--plain-http", is_flag=True, help="Use HTTP instead of HTTPS."),
            click.option("--insecure", is_flag=True, help="Skip TLS certificate verification."),
            click.option(
                "--ca-file",
                type=click.Path(exists=True, dir_okay=False),
                help="CA bundle to verify the registry's certificate.",
            ),
            click.option("-u", "--username", help="Registry user name (with --password-stdin)."),
            click.option(
                "--password-stdin", is_flag=True, help="Read the password or token from stdin."
            ),
            *_TRANSPORT_TUNING,
        ]
    ):
        f = opt(f)
    return f


def mirror_options(f: F) -> F:
    """--registries-conf, --mirror: for the commands that read (push never uses mirrors)."""
    f = click.option(
        "--mirror",
        "mirror",
        multiple=True,
        metavar="HOST",
        help="Try this pull-through registry (host[:port], same repository paths) first, "
        "before registries.conf's mirrors; repeatable.",
    )(f)
    return click.option(
        "--registries-conf",
        type=click.Path(dir_okay=False),
        help="containers-registries.conf(5) file to use instead of $HYBRIDSTORE_REGISTRIES_CONF, "
        "$CONTAINERS_REGISTRIES_CONF, ~/.config/containers/ or /etc/containers/ "
        "(registries.conf.d/ drop-ins still apply).",
    )(f)


def ref_or_layout(layout_help: str) -> Callable[[F], F]:
    """The optional REF argument and ``--layout DIR``: commands that read REF from a
    registry, or from a layout instead (where REF is a ref name, optional when the
    layout has just one)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--layout",
            "layout_dir",
            type=click.Path(file_okay=False, exists=True),
            help=layout_help,
        )(f)
        return click.argument("ref", required=False)(f)

    return decorate


def transport_from(kwargs: dict[str, Any]) -> TransportOptions:
    from hybridstore.remote.transport import TransportOptions

    return TransportOptions(
        plain_http=kwargs.pop("plain_http"),
        insecure=kwargs.pop("insecure"),
        ca_file=kwargs.pop("ca_file"),
        registries_conf=kwargs.pop("registries_conf", None),
        mirrors=tuple(kwargs.pop("mirror", ())),
        max_retries=kwargs.pop("retry_times"),
        retry_delay=kwargs.pop("retry_delay"),
        timeout=kwargs.pop("timeout"),
    )


def credential_from(kwargs: dict[str, Any]) -> Credential | None:
    from hybridstore.remote.credentials import Credential

    username, from_stdin = kwargs.pop("username"), kwargs.pop("password_stdin")
    if not from_stdin:
        if username:
            raise InvalidInputError("--username needs --password-stdin (the password on stdin)")
        return None
    secret = sys.stdin.read().rstrip("\r\n")
    if not secret:
        raise InvalidInputError("--password-stdin given but stdin was empty")
    if not username:
        return Credential(identity_token=secret)
    return Credential(username=username, password=secret)

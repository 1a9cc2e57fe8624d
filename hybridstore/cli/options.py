"""Click options and parameter types every command family shares, each defined once.

Global options, ``--concurrency``, ``--link-mode``, the registry and credential options,
``REF``-or-``--layout``, the transfer and upload options of copy/push, and the ``size`` and
``duration`` parameter types (parsed by ``hybridstore.units``, the grammar the library uses).
Every command loads this module, so the registry client is imported only inside the helpers
that build its options (``hybridstore --help`` stays cheap).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hybridstore.errors import InvalidInputError
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.units import parse_duration, parse_size

if TYPE_CHECKING:
    from hybridstore.remote.credentials import Credential
    from hybridstore.remote.transport import TransportOptions

__all__ = [
    "GLOBAL_OPTIONS",
    "Duration",
    "GlobalOptions",
    "Size",
    "add_global_options",
    "concurrency_option",
    "copy_credential_options",
    "credential_from",
    "format_option",
    "init_option",
    "json_option",
    "layout_option",
    "link_mode_option",
    "max_manifest_size_option",
    "mirror_options",
    "pass_options",
    "ref_or_layout",
    "registry_options",
    "remember_ref",
    "side_credentials_from",
    "transfer_kwargs",
    "transfer_options",
    "transport_from",
    "transport_options",
    "upload_options",
]

F = TypeVar("F", bound=Callable[..., Any])

_MIB = 1 << 20


@dataclass
class GlobalOptions:
    cache_dir: str | None = None
    debug: bool = False
    quiet: bool = False
    ref: str | None = None
    """The ref the command is about, named in the JSON error object (``remember_ref``)."""


pass_options = click.make_pass_decorator(GlobalOptions, ensure=True)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Record a global option on the one ``GlobalOptions`` every context of the command
    shares; unset (None/False) leaves what an earlier position gave."""
    if value:
        assert param.name is not None
        setattr(ctx.ensure_object(GlobalOptions), param.name, value)
    return value


def remember_ref(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of a command's REF argument: the JSON error object names it."""
    if isinstance(value, str):
        ctx.ensure_object(GlobalOptions).ref = value
    return value


# Defined once, attached to the root group and to every subcommand (``add_global_options``),
# so they work before or after the subcommand as with skopeo and the cobra-based tools. No
# envvar here: BlobCache itself falls back to $HYBRIDSTORE_CACHE_DIR, so an environment value
# never overrides a --cache given earlier on the line.
GLOBAL_OPTIONS: tuple[click.Option, ...] = (
    click.Option(
        ["--cache", "cache_dir"],
        type=click.Path(file_okay=False),
        metavar="DIR",
        expose_value=False,
        callback=_remember,
        help="Shared blob cache directory [env HYBRIDSTORE_CACHE_DIR; "
        "default $XDG_CACHE_HOME/hybridstore].",
    ),
    click.Option(
        ["--debug"],
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="Show tracebacks and debug logging.",
    ),
    click.Option(
        ["-q", "--quiet"],
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="Print only errors and requested output.",
    ),
)


def add_global_options(cmd: click.Command) -> click.Command:
    """Give ``cmd``, and each subcommand of a group, the global options (once)."""
    have = {p.name for p in cmd.params}
    cmd.params.extend(o for o in GLOBAL_OPTIONS if o.name not in have)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            add_global_options(sub)
    return cmd


def _apply(f: F, options: Sequence[Callable[[F], F]]) -> F:
    for opt in reversed(options):
        f = opt(f)
    return f


class Duration(click.ParamType[float, Any]):
    """Seconds given as 90, 90s, 15m, 1h, 7d, 2w (``units.parse_duration``)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class Size(click.ParamType[int, Any]):
    """A byte count given as 123, 500M, 2G... (``units.parse_size``)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

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


# The manifest cap of the commands that fill layouts from registries (pull, sync).
max_manifest_size_option = click.option(
    "--max-manifest-size",
    default=MAX_DOCUMENT_BYTES,
    show_default=True,
    type=click.IntRange(MAX_DOCUMENT_BYTES),
    help="Largest manifest accepted, in bytes.",
)


format_option = click.option(
    "--format",
    "oci_format",
    type=click.Choice(["oci"]),
    callback=lambda ctx, param, value: value == "oci",
    help="Into a layout: store Docker schema2 manifests in OCI media types, which "
    "skopeo's and umoci's oci: readers require (their digests change, as with skopeo's "
    "--format oci; blobs stay).",
)


def link_mode_option(f: F) -> F:
    """Add ``--link-mode`` (env HYBRIDSTORE_LINK_MODE) to a command, passed as ``link_mode``."""
    return click.option(
        "--link-mode",
        "link_mode",
        type=click.Choice(["auto", "reflink", "hardlink", "copy"]),
        envvar="HYBRIDSTORE_LINK_MODE",
        show_envvar=True,
        help="How blobs enter the layout from the cache: auto tries reflink, then hardlink, "
        "then copy; an explicit mode fails instead of falling back.",
    )(f)


def init_option(f: F) -> F:
    """Add ``--init`` (adopt a non-empty directory as a new layout), passed as ``init``."""
    return click.option(
        "--init",
        is_flag=True,
        help="Make --layout a layout even if it already holds other files (by default a "
        "non-empty directory without oci-layout is refused).",
    )(f)


def transport_options(f: F) -> F:
    """--plain-http, --insecure, --ca-file, and retries and timeouts as skopeo names them
    (--retry-times, --retry-delay, --timeout). The defaults are TransportOptions' (spelled
    out: pull --offline loads no hybridstore.remote module; tests/test_no_network_imports.py
    checks they agree)."""
    return _apply(
        f,
        [
            click.option("--plain-http", is_flag=True, help="Use HTTP instead of HTTPS."),
            click.option("--insecure", is_flag=True, help="Skip TLS certificate verification."),
            click.option(
                "--ca-file",
                type=click.Path(exists=True, dir_okay=False),
                help="CA bundle to verify the registry's certificate.",
            ),
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
        ],
    )


_password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password or token from stdin."
)


def registry_options(f: F) -> F:
    """The transport options, and one credential: -u/--username with --password-stdin,
    or --creds USER:PASSWORD. It goes only to the registry the refs are on."""
    return _apply(
        f,
        [
            transport_options,
            click.option("-u", "--username", help="Registry user name (with --password-stdin)."),
            _password_stdin_option,
            click.option(
                "--creds",
                metavar="USER:PASSWORD",
                help="Credentials for the refs' registry (as skopeo's --creds).",
            ),
        ],
    )


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


def copy_credential_options(f: F) -> F:
    """--src-creds/--dest-creds, or --src-username/--dest-username with --password-stdin:
    each side's credential goes only to that side's registry, as with skopeo."""
    return _apply(
        f,
        [
            click.option(
                "--src-creds", metavar="USER:PASSWORD", help="Credentials for the source registry."
            ),
            click.option(
                "--dest-creds",
                metavar="USER:PASSWORD",
                help="Credentials for the destination registry.",
            ),
            click.option("--src-username", help="Source user name (password from stdin)."),
            click.option("--dest-username", help="Destination user name (password from stdin)."),
            _password_stdin_option,
        ],
    )


def layout_option(help: str, *, required: bool = True) -> Callable[[F], F]:
    """``--layout DIR``, passed as ``layout_dir``. Whether it must exist is the library's
    call (``OCILayout.open``), so a missing layout is one message and exit code everywhere."""
    return click.option(
        "--layout",
        "layout_dir",
        required=required,
        metavar="DIR",
        type=click.Path(file_okay=False),
        help=help,
    )


def ref_or_layout(layout_help: str) -> Callable[[F], F]:
    """The optional REF argument and ``--layout DIR``: commands that read REF from a
    registry, or from a layout instead (where REF is a ref name, optional when the
    layout has just one)."""

    def decorate(f: F) -> F:
        f = layout_option(layout_help, required=False)(f)
        return click.argument("ref", required=False, callback=remember_ref)(f)

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


def _read_password_stdin() -> str:
    secret = sys.stdin.read().rstrip("\r\n")
    if not secret:
        raise InvalidInputError("--password-stdin given but stdin was empty")
    return secret


def credential_from(kwargs: dict[str, Any]) -> Credential | None:
    """The one credential of ``registry_options`` (consumed from ``kwargs``)."""
    from hybridstore.remote.credentials import Credential, parse_creds

    username, from_stdin = kwargs.pop("username"), kwargs.pop("password_stdin")
    creds = kwargs.pop("creds")
    if creds is not None:
        if username or from_stdin:
            raise InvalidInputError("--creds excludes -u/--username and --password-stdin")
        return parse_creds(creds)
    if not from_stdin:
        if username:
            raise InvalidInputError("--username needs --password-stdin (the password on stdin)")
        return None
    secret = _read_password_stdin()
    if not username:
        return Credential(identity_token=secret)
    return Credential(username=username, password=secret)


def side_credentials_from(kwargs: dict[str, Any]) -> tuple[Credential | None, Credential | None]:
    """(source, destination) credentials of ``copy_credential_options`` (consumed)."""
    from hybridstore.remote.credentials import Credential, parse_creds

    sides: list[Credential | None] = []
    stdin_users = []
    for side in ("src", "dest"):
        creds, username = kwargs.pop(f"{side}_creds"), kwargs.pop(f"{side}_username")
        if creds is not None and username is not None:
            raise InvalidInputError(f"--{side}-creds excludes --{side}-username")
        sides.append(parse_creds(creds, f"--{side}-creds") if creds is not None else None)
        if username is not None:
            stdin_users.append((side, username))
    if not kwargs.pop("password_stdin"):
        if stdin_users:
            raise InvalidInputError(
                f"--{stdin_users[0][0]}-username needs --password-stdin (the password on stdin)"
            )
        return sides[0], sides[1]
    if len(stdin_users) != 1:
        raise InvalidInputError(
            "--password-stdin reads one password: give exactly one of --src-username and "
            "--dest-username with it (--src-creds/--dest-creds for the other side)"
        )
    side, username = stdin_users[0]
    cred = Credential(username=username, password=_read_password_stdin())
    return (cred, sides[1]) if side == "src" else (sides[0], cred)


def transfer_options(f: F) -> F:
    """--platform, --all-platforms, --include-referrers, --referrer-type, --concurrency,
    --include-nondistributable, --max-manifest-size, --json."""
    return _apply(
        f,
        [
            click.option(
                "--platform",
                "platforms",
                multiple=True,
                metavar="OS/ARCH[/VARIANT]",
                help="Platform of an image index (repeatable). Into a layout: default this "
                "host's. Into a registry: default the whole index; one --platform copies "
                "just that manifest as the target.",
            ),
            click.option("--all-platforms", is_flag=True, help="Every manifest of an index."),
            click.option(
                "--include-referrers",
                is_flag=True,
                help="Also copy what is attached through 'subject' (signatures, SBOMs).",
            ),
            click.option(
                "--referrer-type",
                "referrer_types",
                multiple=True,
                metavar="ARTIFACT_TYPE",
                help="With --include-referrers: only these artifact types (repeatable).",
            ),
            concurrency_option,
            click.option(
                "--include-nondistributable",
                is_flag=True,
                help="Also copy foreign/non-distributable layers (off by default).",
            ),
            click.option(
                "--max-manifest-size",
                default=MAX_DOCUMENT_BYTES,
                show_default=True,
                type=click.IntRange(MAX_DOCUMENT_BYTES),
                help="Largest manifest accepted, in bytes.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print a JSON summary."),
        ],
    )


def upload_options(f: F) -> F:
    """--chunk-size and --chunked-above (uploads into registries)."""
    return _apply(
        f,
        [
            click.option(
                "--chunk-size",
                default=16 * _MIB,
                show_default=True,
                type=click.IntRange(1),
                help="Bytes per PATCH of a chunked upload (raised to the registry's minimum).",
            ),
            click.option(
                "--chunked-above",
                default=64 * _MIB,
                show_default=True,
                type=click.IntRange(0),
                help="Upload blobs larger than this in chunks (0: always chunked).",
            ),
        ],
    )


def transfer_kwargs(opts: GlobalOptions, kw: dict[str, Any]) -> dict[str, Any]:
    """Library keyword arguments from the transfer, upload and transport options
    (consumed from ``kw``); the caller adds the credentials."""
    from hybridstore.remote.upload import UploadOptions

    return dict(
        cache=opts.cache_dir,
        platforms=kw.pop("platforms"),
        concurrency=kw.pop("concurrency"),
        include_nondistributable=kw.pop("include_nondistributable"),
        include_referrers=kw.pop("include_referrers") or bool(kw.get("referrer_types")),
        referrer_types=kw.pop("referrer_types"),
        transport=transport_from(kw),
        upload=UploadOptions(
            chunk_size=kw.pop("chunk_size"), chunked_above=kw.pop("chunked_above")
        ),
        manifest_limit=kw.pop("max_manifest_size"),
    )

"""``hybridstore serve``: layouts as a read-only OCI registry endpoint."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click

from hybridstore.cli.options import GlobalOptions, pass_options

__all__ = ["serve"]


@click.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--listen",
    default="127.0.0.1:5000",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on; port 0 picks a free port (printed on start).",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate (chain) to serve HTTPS with.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM private key for --tls-cert (if not in the certificate file).",
)
@pass_options
def serve(
    opts: GlobalOptions,
    /,
    directories: tuple[str, ...],
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Serve the refs in DIRECTORIES (OCI layouts) read-only over the OCI distribution API.

    A ref named registry.example.com/charts/app:1.2.3 is served as repository
    charts/app, tag 1.2.3; a bare tag as a tag of the layout directory's name.
    When two layouts give one repository the same tag, the first wins. Plain
    HTTP on loopback by default. The first line printed is "listening on URL".
    For anything shared, push into a real registry instead.
    """
    from hybridstore.errors import InvalidInputError
    from hybridstore.server.http import RegistryServer, parse_listen

    if tls_key and not tls_cert:
        raise InvalidInputError("--tls-key needs --tls-cert")
    host, port = parse_listen(listen)
    server = RegistryServer(list(directories), host, port, tls_cert=tls_cert, tls_key=tls_key)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    click.echo(f"listening on {server.url}")
    if not opts.quiet:
        repos = list(server.repositories())
        for repo in repos:
            click.echo(f"  {repo.name}: {', '.join(sorted(repo.tags)) or '(by digest only)'}")
        if not repos:
            click.echo("  (nothing to serve: these layouts have no named refs)")
        click.echo("read-only; Ctrl-C or SIGTERM stops it")
    sys.stdout.flush()
    server.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    if not opts.quiet:
        click.echo("stopped")

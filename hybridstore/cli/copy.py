"""``hybridstore copy SRC DST``, and the transfer options ``push`` shares."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from hybridstore.cli.common import GlobalOptions, concurrency_option, emit_json, pass_options
from hybridstore.cli.remote_options import (
    credential_from,
    mirror_options,
    registry_options,
    transport_from,
)

__all__ = ["copy", "transfer_options", "upload_options", "run_with_progress", "print_results"]

F = TypeVar("F", bound=Callable[..., Any])

_MIB = 1 << 20


def _apply(f: F, options: Sequence[Callable[[F], F]]) -> F:
    for opt in reversed(options):
        f = opt(f)
    return f


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
                default=4 * _MIB,
                show_default=True,
                type=click.IntRange(4 * _MIB),
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


def common_kwargs(opts: GlobalOptions, kw: dict[str, Any]) -> dict[str, Any]:
    """Library keyword arguments from the shared options (consumes them from ``kw``)."""
    from hybridstore.remote.upload import UploadOptions

    return dict(
        cache=opts.cache_dir,
        platforms=kw.pop("platforms"),
        concurrency=kw.pop("concurrency"),
        include_nondistributable=kw.pop("include_nondistributable"),
        include_referrers=kw.pop("include_referrers") or bool(kw.get("referrer_types")),
        referrer_types=kw.pop("referrer_types"),
        transport=transport_from(kw),
        credential=credential_from(kw),
        upload=UploadOptions(
            chunk_size=kw.pop("chunk_size"), chunked_above=kw.pop("chunked_above")
        ),
        manifest_limit=kw.pop("max_manifest_size"),
    )


def run_with_progress(opts: GlobalOptions, as_json: bool, call: Callable[[Any], Any]) -> Any:
    """Run ``call(progress)`` with bars on a TTY (none with -q or --json)."""
    if sys.stderr.isatty() and not opts.quiet and not as_json:
        from hybridstore.cli.pull import RichProgress

        progress = RichProgress()
        with progress.bars:
            return call(progress)
    return call(None)


def print_results(opts: GlobalOptions, as_json: bool, results: Sequence[Any]) -> None:
    if as_json:
        emit_json([r.to_json() for r in results] if len(results) != 1 else results[0].to_json())
        return
    if opts.quiet:
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


@click.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@upload_options
@click.option(
    "--link-mode",
    type=click.Choice(["auto", "reflink", "hardlink", "copy"]),
    envvar="HYBRIDSTORE_LINK_MODE",
    help="How blobs enter a layout destination [env HYBRIDSTORE_LINK_MODE].",
)
@registry_options
@mirror_options
@pass_options
def copy(opts: GlobalOptions, /, src: str, dst: str, **kw: Any) -> None:
    """Copy SRC to DST, keeping every digest.

    \b
    SRC and DST (as skopeo writes them):
      docker://REF, REF, oci://REF   a registry (oci:// as Helm writes it)
      oci:PATH[:NAME]                an OCI layout (cache-backed when written here)
      oci-archive:PATH[:NAME]        an OCI layout tar (as `hybridstore export` writes)

    Between two repositories of one registry, blobs are mounted, not moved.
    """
    from hybridstore.copy import copy as copy_call

    as_json = kw.pop("as_json")
    args = common_kwargs(opts, kw)
    args.update(all_platforms=kw.pop("all_platforms"), link_mode=kw.pop("link_mode"))
    result = run_with_progress(
        opts, as_json, lambda progress: copy_call(src, dst, progress=progress, **args)
    )
    print_results(opts, as_json, [result])

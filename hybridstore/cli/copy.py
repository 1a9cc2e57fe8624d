"""``hybridstore copy SRC DST``."""

from __future__ import annotations

from typing import Any

import click

from hybridstore.cli.options import (
    GlobalOptions,
    copy_credential_options,
    format_option,
    link_mode_option,
    mirror_options,
    pass_options,
    remember_ref,
    side_credentials_from,
    transfer_kwargs,
    transfer_options,
    transport_options,
    upload_options,
)

__all__ = ["copy"]


@click.command()
@click.argument("src", callback=remember_ref)
@click.argument("dst")
@transfer_options
@upload_options
@link_mode_option
@format_option
@transport_options
@copy_credential_options
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
    A --src-* credential is sent only to the source registry, a --dest-* one
    only to the destination; other registries use their stored credentials.
    """
    from hybridstore.cli.format import emit_json, print_transfer_results
    from hybridstore.cli.progress import run_with_progress
    from hybridstore.copy import copy as copy_call

    as_json = kw.pop("as_json")
    src_credential, dest_credential = side_credentials_from(kw)
    args = transfer_kwargs(opts, kw)
    args.update(src_credential=src_credential, dest_credential=dest_credential)
    args.update(
        all_platforms=kw.pop("all_platforms"),
        link_mode=kw.pop("link_mode"),
        oci_format=kw.pop("oci_format"),
    )
    result = run_with_progress(
        opts.quiet, as_json, lambda progress: copy_call(src, dst, progress=progress, **args)
    )
    if as_json:
        emit_json(result.to_json())  # one SRC, one DST: always one object
    else:
        print_transfer_results(opts.quiet, False, [result])

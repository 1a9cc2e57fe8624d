"""``hybridstore pull``."""

from __future__ import annotations

from typing import Any

import click

from hybridstore.cli.format import emit_json
from hybridstore.cli.options import (
    GlobalOptions,
    concurrency_option,
    credential_from,
    format_option,
    init_option,
    layout_option,
    link_mode_option,
    max_manifest_size_option,
    mirror_options,
    pass_options,
    registry_options,
    transport_from,
)

__all__ = ["pull"]


@click.command()
@click.argument("refs", nargs=-1, required=True)
@layout_option("Project OCI layout directory (created if missing).")
@init_option
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="OS/ARCH[/VARIANT]",
    help="Platform to pull from an image index (repeatable; default: this host's). With "
    "one, that platform's manifest becomes the ref (as skopeo records it).",
)
@click.option("--all-platforms", is_flag=True, help="Pull every manifest of an index.")
@format_option
@concurrency_option
@click.option("--ref-name", help="Name to record in index.json (default: the full reference).")
@link_mode_option
@click.option(
    "--include-nondistributable",
    is_flag=True,
    help="Also fetch foreign/non-distributable layers (off by default).",
)
@click.option(
    "--include-referrers",
    is_flag=True,
    help="Also pull what is attached through 'subject' (signatures, SBOMs).",
)
@click.option(
    "--referrer-type",
    "referrer_types",
    multiple=True,
    metavar="ARTIFACT_TYPE",
    help="With --include-referrers: only these artifact types (repeatable).",
)
@max_manifest_size_option
@click.option(
    "--verify",
    is_flag=True,
    help="Re-hash every blob reused from the layout or the cache (by default a reused "
    "blob is re-hashed only when its verification seal shows it was written since).",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Open no network connection: a digest comes from the cache; a tag from this "
    "layout, else from the most recently used layout the cache knows that holds exactly "
    "that reference (printed). Fails, changing nothing, if anything is missing.",
)
@click.option(
    "--fail-fast",
    is_flag=True,
    help="Stop at the first REF that fails (default: pull the others, report all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one entry per REF.")
@registry_options
@mirror_options
@pass_options
def pull(opts: GlobalOptions, /, refs: tuple[str, ...], **kw: Any) -> None:
    """Pull REFS (images, Helm charts via oci://, ORAS artifacts) into a layout.

    Each blob is downloaded once into the shared cache and linked into the
    layout; a re-pull of cached content costs one manifest request. A REF that
    fails does not stop the others (unless --fail-fast): each is reported, and
    the exit code is the first failure's.
    """
    from hybridstore.cli.format import error_json, one_line, target_note
    from hybridstore.cli.progress import run_with_progress
    from hybridstore.errors import HybridstoreError
    from hybridstore.pull import pull_many

    if kw["ref_name"] and len(refs) > 1:
        raise click.UsageError("--ref-name needs exactly one REF")
    offline = kw.pop("offline")
    if offline:  # nothing of the registry client is loaded
        if kw["username"] or kw["password_stdin"] or kw["creds"]:
            raise click.UsageError(
                "--offline talks to no registry: drop -u/--password-stdin/--creds"
            )
        for key in ("plain_http", "insecure", "ca_file", "username", "password_stdin", "creds"):
            kw.pop(key)
        transport, credential = None, None
    else:
        transport, credential = transport_from(kw), credential_from(kw)
    as_json = kw.pop("as_json")
    failures: list[tuple[str, HybridstoreError]] = []
    args: dict[str, Any] = dict(
        layout=kw["layout_dir"],
        cache=opts.cache_dir,
        platforms=kw["platforms"],
        all_platforms=kw["all_platforms"],
        concurrency=kw["concurrency"],
        ref_name=kw["ref_name"],
        link_mode=kw["link_mode"],
        include_nondistributable=kw["include_nondistributable"],
        include_referrers=kw["include_referrers"] or bool(kw["referrer_types"]),
        referrer_types=kw["referrer_types"],
        transport=transport,
        credential=credential,
        manifest_limit=kw["max_manifest_size"],
        init=kw["init"],
        verify=kw["verify"],
        offline=offline,
        oci_format=kw["oci_format"],
        on_error=None if kw["fail_fast"] else lambda ref, e: failures.append((ref, e)),
    )
    results = run_with_progress(
        opts.quiet, as_json, lambda progress: pull_many(list(refs), progress=progress, **args)
    )
    if as_json:
        emit_json(
            [r.to_json() for r in results]
            + [{"reference": ref, **error_json(e, ref)} for ref, e in failures]
        )
    elif not opts.quiet:
        for r in results:
            if r.resolved_from:
                click.echo(f"{r.ref_name}: resolved offline from {r.resolved_from}")
            click.echo(
                f"{r.ref_name}: {r.digest}{target_note(r)} "
                f"({r.fetched} fetched, {r.reused} reused, "
                f"{r.bytes_transferred} bytes, link {'/'.join(r.link_modes)}, {r.seconds:.2f}s)"
            )
    for ref, e in failures:
        click.echo(f"hybridstore: error: {ref}: {one_line(e)}", err=True)
    if failures:
        raise click.exceptions.Exit(failures[0][1].exit_code)

"""``hybridstore push --layout DIR NAME [TARGET]`` and ``push --layout DIR --all``."""

from __future__ import annotations

from typing import Any

import click

from hybridstore.cli.options import (
    GlobalOptions,
    credential_from,
    layout_option,
    pass_options,
    registry_options,
    remember_ref,
    transfer_kwargs,
    transfer_options,
    upload_options,
)

__all__ = ["push"]


@click.command()
@click.argument("name", required=False, callback=remember_ref)
@click.argument("target", required=False)
@layout_option("The OCI layout to push from.")
@click.option("--all", "push_all", is_flag=True, help="Push every ref to its recorded name.")
@click.option(
    "--registry",
    metavar="HOST[:PORT]",
    help="With --all: push into this registry instead (repository paths are kept).",
)
@transfer_options
@upload_options
@registry_options
@pass_options
def push(
    opts: GlobalOptions, /, name: str | None, target: str | None, layout_dir: str, **kw: Any
) -> None:
    """Push the layout ref NAME (its whole graph) to TARGET.

    TARGET defaults to NAME when NAME is a full reference (host/repo:tag).
    Blobs the registry already has are not sent; digests are kept exactly.
    --all pushes every ref to its recorded name, with referrers (the
    air-gap restore case).
    """
    from hybridstore.cli.format import print_transfer_results
    from hybridstore.cli.progress import run_with_progress
    from hybridstore.push import push_all, push_many

    push_every, registry = kw.pop("push_all"), kw.pop("registry")
    as_json = kw.pop("as_json")
    kw.pop("all_platforms")  # a registry takes the whole index unless --platform picks one
    if push_every == bool(name):
        raise click.UsageError("give NAME (and optionally TARGET), or --all")
    if registry and not push_every:
        raise click.UsageError("--registry goes with --all; otherwise give a TARGET")
    args = transfer_kwargs(opts, kw)
    args["credential"] = credential_from(kw)

    def call(progress: Any) -> Any:
        if push_every:
            args["include_referrers"] = True  # restore signatures and SBOMs too
            return push_all(layout_dir, registry=registry, progress=progress, **args)
        assert name is not None
        return push_many(layout_dir, [(name, target)], progress=progress, **args)

    results = run_with_progress(opts.quiet, as_json, call)
    print_transfer_results(opts.quiet, as_json, results)

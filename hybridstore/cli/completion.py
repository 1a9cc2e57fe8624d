"""``hybridstore completion bash|zsh|fish``: the completion script, as cobra tools print it."""

from __future__ import annotations

import click

__all__ = ["completion"]

_SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(_SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  eval "$(hybridstore completion bash)"    (in ~/.bashrc)
    zsh:   eval "$(hybridstore completion zsh)"     (in ~/.zshrc)
    fish:  hybridstore completion fish > ~/.config/fish/completions/hybridstore.fish

    The script asks hybridstore itself for the candidates (commands, options,
    choices, paths), so it never goes stale.
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # click ships all three
    click.echo(cls(root, {}, "hybridstore", "_HYBRIDSTORE_COMPLETE").source())

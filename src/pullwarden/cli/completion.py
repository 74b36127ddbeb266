"""``pullwarden completion``: the shell completion script, over click's completion protocol.

The script the shell sources calls ``pullwarden`` back with ``_PULLWARDEN_COMPLETE`` set; the
top-level group answers command names from its table without importing any command module,
so only the command being completed (``records …``) is imported.
"""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_PULLWARDEN_COMPLETE"


@click.command("completion", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_command(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    \b
    bash:  eval "$(pullwarden completion bash)"   (in ~/.bashrc; needs bash 4.4 or later)
    zsh:   eval "$(pullwarden completion zsh)"    (in ~/.zshrc)
    fish:  pullwarden completion fish > ~/.config/fish/completions/pullwarden.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # every choice is one of click's shells
    root = ctx.find_root().command
    click.echo(cls(root, {}, "pullwarden", COMPLETE_VAR).source(), nl=False)

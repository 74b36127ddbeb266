"""Command groups whose commands are imported when they run.

A :class:`LazyGroup` knows its lazy commands from a table, name → (module, attribute, one line
of help), so ``--help`` and shell completion list them without importing them; the line is also
the first line of the command's own help (a test keeps them equal).  Help shows one whole line
per command, however narrow the terminal: a line cut in the middle is harder to read (and to
grep) than a long one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

__all__ = ["LazyGroup"]

_SHORT_HELP_LIMIT = 500  # the whole first sentence


class LazyGroup(click.Group):
    """A group with eager commands (added as usual) and the lazy ones of :attr:`lazy`."""

    lazy: ClassVar[dict[str, tuple[str, str, str]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)
        module, attribute, _ = entry
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def _help_line(self, name: str) -> str | None:
        entry = self.lazy.get(name)
        if entry is not None:
            return entry[2]
        command = self.commands[name]
        return None if command.hidden else command.get_short_help_str(_SHORT_HELP_LIMIT)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, line) for name in self.list_commands(ctx) if (line := self._help_line(name))]
        if not rows:
            return
        width = max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            for name, line in rows:
                formatter.write(f"{'':>{formatter.current_indent}}{name:<{width}}  {line}\n")

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """Command names (no lazy command is imported), then the group's own options."""
        from click.shell_completion import CompletionItem

        items = [
            CompletionItem(name, help=line)
            for name in self.list_commands(ctx)
            if name.startswith(incomplete) and (line := self._help_line(name)) is not None
        ]
        items.extend(click.Command.shell_complete(self, ctx, incomplete))
        return items

"""The top-level command: commands are imported when they run, and --help describes them all."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from pullwarden.cli import COMMANDS, main


def test_each_listed_line_is_the_command_s_own_first_help_line() -> None:
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=500) == COMMANDS[name][2], name


def test_help_imports_no_command_and_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "from pullwarden.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('httpx', 'rich', 'prometheus_client', 'grpc', 'yaml', 'pullwarden.node',\n"
        "         'pullwarden.cli.node', 'pullwarden.cli.records', 'pullwarden.runtime')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.strip() == "[]"
    for name, (_module, _attribute, line) in COMMANDS.items():
        assert name in done.stdout and line.split()[0] in done.stdout


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nonsense"])
    assert result.exit_code == 2 and "No such command" in result.output

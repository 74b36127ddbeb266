"""The top-level command: commands are imported when they run, and --help describes them all."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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
        "print(sorted(m for m in sys.modules if m.startswith(heavy) and sys.modules[m]),"
        " file=sys.stderr)\n"
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


def modules_after(*args: str) -> list[str]:
    """The pullwarden and heavy modules a process has imported after running one command."""
    probe = (
        "import sys\n"
        "from pullwarden.cli import main\n"
        "try:\n"
        f"    main({list(args)!r}, prog_name='pullwarden')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('httpx', 'rich', 'grpc', 'cryptography', 'prometheus_client', 'pullwarden.')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy) and sys.modules[m]),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return list(ast.literal_eval(done.stderr.strip().splitlines()[-1]))  # after any error line


def test_metrics_imports_the_records_and_metrics_only(tmp_path: Path) -> None:
    loaded = modules_after("metrics", "--root", str(tmp_path))
    assert "pullwarden.cli.metrics" in loaded and "prometheus_client" in loaded
    unwanted: tuple[str, ...] = ("httpx", "rich", "grpc", "cryptography", "pullwarden.runtime")
    unwanted += ("pullwarden.node", "pullwarden.imagemanager", "pullwarden.pullmanager")
    unwanted += ("pullwarden.credentials",)
    assert [m for m in loaded if m.startswith(unwanted)] == []
    assert [m for m in loaded if m.startswith("pullwarden.cli.")] == [
        "pullwarden.cli._common",
        "pullwarden.cli._lazy",
        "pullwarden.cli.metrics",
    ]


def test_completion_imports_no_other_command_and_nothing_heavy() -> None:
    loaded = modules_after("completion", "bash")
    assert [m for m in loaded if m.startswith("pullwarden.cli.")] == [
        "pullwarden.cli._lazy",
        "pullwarden.cli.completion",
    ]
    assert [m for m in loaded if not m.startswith("pullwarden")] == []


def test_image_commands_load_only_the_stack_they_use(tmp_path: Path) -> None:
    heavy = ("httpx", "rich", "grpc", "yaml", "pullwarden.runtime._registry")
    for args in (("pull", "--help"), ("images", "--help"), ("rmi", "--help")):
        loaded = modules_after(*args)
        assert [m for m in loaded if m.startswith(heavy)] == [], args
    # Listing an (empty) store opens the store, never the registry client or a progress bar.
    loaded = modules_after("images", "--store", str(tmp_path / "none"))
    assert "pullwarden.runtime._store" not in loaded  # a typo'd store is refused first
    assert [m for m in loaded if m.startswith(("httpx", "rich", "grpc"))] == []


def test_the_registry_commands_load_no_http_library() -> None:
    # The client's HTTP is its own (runtime._messages, runtime._http1): a command that talks
    # to a registry loads no HTTP library, none of the stdlib HTTP stack either, and ssl only
    # once an https registry is contacted.
    probe = (
        "import sys\n"
        "import pullwarden.cli, pullwarden.cli.image, pullwarden.runtime._registry\n"
        "unwanted = ('httpx', 'httpcore', 'h11', 'anyio', 'trio', 'rich', 'pygments', 'ssl',"
        " 'urllib.request', 'http.client', 'email')\n"
        "print(sorted(m for m in sys.modules if m.startswith(unwanted)"
        " and sys.modules[m] is not None))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_run_and_gc_help_load_no_node(tmp_path: Path) -> None:
    unwanted: tuple[str, ...] = ("pullwarden.node", "pullwarden.imagemanager", "yaml")
    unwanted += ("pullwarden.config",)
    unwanted += ("pullwarden.objects", "pullwarden.runtime._store", "prometheus_client")
    for args in (("run", "--help"), ("gc", "--help")):
        loaded = modules_after(*args)
        assert "pullwarden.cli.node" in loaded
        assert [m for m in loaded if m.startswith(unwanted)] == [], args

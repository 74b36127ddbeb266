"""``records ls`` (and show, check) start without the decision code: no image manager, no
credentials, no metrics (so no prometheus_client), no HTTP or gRPC client.  Each probe runs the
real command in a fresh interpreter and lists the modules it loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pullwarden.cli.records import DECISION_COMMANDS, records
from tests.cli._records_support import REF, make_root

HEAVY = (
    "pullwarden.imagemanager",
    "pullwarden.credentials",
    "pullwarden.metrics",
    "pullwarden.pullmanager",
    "pullwarden.runtime",
    "pullwarden.cli._providers",
    "pullwarden.cli._records_decide",
    "prometheus_client",
    "httpx",
    "grpc",
)

PROBE = """
import json, sys
from pullwarden.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
loaded = sorted(m for m, module in sys.modules.items() if module is not None)
print(json.dumps({"code": code, "modules": loaded}), file=sys.stderr)
"""


def loaded(*args: str) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY))


@pytest.mark.parametrize(
    "args",
    [["ls"], ["ls", "-o", "json"], ["ls", "--image", "nginx"], ["show", REF], ["check"]],
    ids=" ".join,
)
def test_reading_commands_import_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    root = make_root(tmp_path / "node")
    code, modules = loaded("records", *args, "--root", str(root))
    assert code in (0, None)
    assert "pullwarden.cli.records" in modules  # the probe did run the command
    assert heavy(modules) == []


def test_ls_of_an_empty_root_imports_no_yaml_either(tmp_path: Path) -> None:
    code, modules = loaded("records", "ls", "--root", str(tmp_path))
    assert code in (0, None)
    assert heavy(modules) == []
    assert not any(m == "yaml" or m.startswith("yaml.") for m in modules)


@pytest.mark.parametrize("command", ["explain", "who-can"])
def test_explain_and_who_can_load_the_decision_code_and_little_else(
    tmp_path: Path, command: str
) -> None:
    root = make_root(tmp_path / "node")
    args = ["--image", "nginx", "--image-ref", REF] if command == "explain" else ["nginx"]
    code, modules = loaded("records", command, "--root", str(root), *args)
    assert code in (0, None)
    assert {"pullwarden.pullmanager", "pullwarden.cli._records_decide"} <= modules
    # no configuration file, no provider config: neither is loaded (nor the YAML behind them)
    unused: tuple[str, ...] = ("pullwarden.imagemanager", "pullwarden.credentials")
    unused += ("pullwarden.config", "pullwarden.objects", "pullwarden.runtime", "httpx", "grpc")
    unused += ("yaml", "prometheus_client")  # a decision counts without the exposition library
    assert not [m for m in modules if m.startswith(unused)]


def test_the_group_lists_the_lazy_commands_with_their_own_first_help_line() -> None:
    import click

    ctx = click.Context(records)
    for name, (_module, _attribute, line) in DECISION_COMMANDS.items():
        command = records.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=500) == line
    assert set(DECISION_COMMANDS) <= set(records.list_commands(ctx))

"""The ``pullwarden`` command line.

Each command lives in its own module, imported only when that command runs (``pullwarden
--help`` imports none of them): :data:`COMMANDS` names the module and says in one line what the
command does, which is also the first line of the command's own help (a test keeps them equal).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from pullwarden import __version__

# name → (module, attribute, one line of help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "pullwarden.cli.demo",
        "demo_command",
        "Run the KEP-2535 story (the Kubernetes blog's) for real, explaining each step.",
    ),
    "run": (
        "pullwarden.cli.node",
        "run_command",
        "Treat every pod in the files as scheduled to this node and ensure its images.",
    ),
    "gc": (
        "pullwarden.cli.node",
        "gc_command",
        "Collect unused images on the kubelet's thresholds, then prune records of removed images.",
    ),
    "pull": (
        "pullwarden.cli.images",
        "pull_command",
        "Pull IMAGE into the embedded store, or the runtime's, and print its image ref.",
    ),
    "images": (
        "pullwarden.cli.images",
        "images_command",
        "List the images in the embedded store, or the runtime's (like `crictl images`).",
    ),
    "rmi": (
        "pullwarden.cli.images",
        "rmi_command",
        "Remove images (by name, repo@digest or id) from the embedded store, or the runtime's.",
    ),
    "records": (
        "pullwarden.cli.records",
        "records",
        "Read, explain, audit, migrate and prune a kubelet's image pull records.",
    ),
    "registry": (
        "pullwarden.cli.registry",
        "registry",
        "Run pullwarden's embedded OCI registry (loopback only), for experiments and demos.",
    ),
}


class _Main(click.Group):
    """The top-level group: commands imported on use; Ctrl-C outside a command's own handling
    exits 130, quietly."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attribute, _ = entry
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pullwarden")
def main() -> None:
    """pullwarden: the kubelet's image pull path with KEP-2535 credential verification.

    A node image manager (run, gc), an image store (pull, images, rmi), an operator tool for
    a kubelet's pull records (records) and a registry for experiments (registry).  New here?
    Try `pullwarden demo`.
    """

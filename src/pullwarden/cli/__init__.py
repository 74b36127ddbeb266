"""The ``pullwarden`` command line."""

from __future__ import annotations

import sys
from typing import Any

import click

from pullwarden import __version__
from pullwarden.cli.demo import demo_command
from pullwarden.cli.images import images_command, pull_command, rmi_command
from pullwarden.cli.node import gc_command, run_command
from pullwarden.cli.records import records
from pullwarden.cli.registry import registry


class _Main(click.Group):
    """The top-level group: Ctrl-C outside a command's own handling exits 130, quietly."""

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


for command in (
    demo_command,
    run_command,
    gc_command,
    pull_command,
    images_command,
    rmi_command,
    records,
    registry,
):
    main.add_command(command)

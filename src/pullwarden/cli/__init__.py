"""The ``pullwarden`` command line."""

from __future__ import annotations

import click

from pullwarden import __version__
from pullwarden.cli.records import records


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pullwarden")
def main() -> None:
    """pullwarden: the kubelet's image pull path with KEP-2535 credential verification.

    \b
    records   read, explain, audit, migrate and prune a kubelet's pull records
    """


main.add_command(records)

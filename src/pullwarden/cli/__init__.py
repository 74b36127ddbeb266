"""The ``pullwarden`` command line."""

from __future__ import annotations

import click

from pullwarden import __version__
from pullwarden.cli.images import images_command, pull_command, rmi_command
from pullwarden.cli.records import records


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pullwarden")
def main() -> None:
    """pullwarden: the kubelet's image pull path with KEP-2535 credential verification.

    \b
    pull      pull an image into the embedded store (real registry, real auth)
    images    list the embedded store's images
    rmi       remove images from the embedded store
    records   read, explain, audit, migrate and prune a kubelet's pull records
    """


for command in (pull_command, images_command, rmi_command, records):
    main.add_command(command)

"""The ``pullwarden`` command line."""

from __future__ import annotations

import click

from pullwarden import __version__
from pullwarden.cli.demo import demo_command
from pullwarden.cli.images import images_command, pull_command, rmi_command
from pullwarden.cli.node import gc_command, run_command
from pullwarden.cli.records import records
from pullwarden.cli.registry import registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pullwarden")
def main() -> None:
    """pullwarden: the kubelet's image pull path with KEP-2535 credential verification.

    \b
    demo      the KEP-2535 story, run for real on this machine, step by step
    run       ensure (and verify) the images of pods from manifests, as a kubelet does
    gc        garbage-collect unused images and prune their pull records
    pull      pull an image into the embedded store (real registry, real auth)
    images    list the embedded store's images
    rmi       remove images from the embedded store
    records   read, explain, audit, migrate and prune a kubelet's pull records
    registry  an embedded OCI registry on 127.0.0.1 for experiments
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

"""The ``pullwarden`` command line.

Each command lives in its own module, imported only when that command runs (``pullwarden
--help`` imports none of them): :data:`COMMANDS` names the module and says in one line what the
command does, which is also the first line of the command's own help (a test keeps them equal).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pullwarden import __version__
from pullwarden.cli._lazy import LazyGroup

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

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
    "image": (
        "pullwarden.cli.image",
        "image",
        "Build small deterministic OCI images offline (an OCI layout), and push them.",
    ),
    "metrics": (
        "pullwarden.cli.metrics",
        "metrics_command",
        "Print the Prometheus metrics of a node root (records on disk, as `run` serves them).",
    ),
    "completion": (
        "pullwarden.cli.completion",
        "completion_command",
        "Print the shell completion script for bash, zsh or fish.",
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


class _Main(LazyGroup):
    """The top-level group: every command is imported on use; Ctrl-C outside a command's own
    handling exits 130, quietly."""

    lazy = COMMANDS

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def configure_logging(verbose: int, log_level: str | None) -> None:
    """Send the ``pullwarden`` loggers to standard error at the level asked for.

    ``--log-level`` beats ``-v`` (INFO) and ``-vv`` (DEBUG).  Without either nothing is set up
    (and :mod:`logging` is not even imported here): warnings and errors then reach standard
    error through Python's last-resort handler, as they always have.  Only the ``pullwarden``
    loggers are configured: the HTTP libraries' own debug logs stay off.
    """
    if log_level is None and verbose <= 0:
        return
    import logging

    level = log_level.upper() if log_level else ("INFO" if verbose == 1 else "DEBUG")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("pullwarden")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pullwarden")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log what pullwarden does to standard error: -v INFO, -vv DEBUG.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    metavar="LEVEL",
    help="Log at this level (DEBUG, INFO, WARNING, ERROR, CRITICAL); beats -v.",
)
def main(verbose: int, log_level: str | None) -> None:
    """pullwarden: the kubelet's image pull path with KEP-2535 credential verification.

    A node image manager (run, gc), an image store (pull, images, rmi), an operator tool for
    a kubelet's pull records (records) and a registry for experiments (registry).  New here?
    Try `pullwarden demo`.
    """
    configure_logging(verbose, log_level)


def console_main() -> None:
    """The ``pullwarden`` program itself (console script, ``python -m pullwarden.cli``).

    :func:`main`, in a process that ends with it: once everything has run (``atexit``
    handlers included: this one is registered first, so it runs last), the garbage collector
    is told that every object left is permanent, so the interpreter's final collection does
    not walk them all (20-35 ms of a ``pull``'s wall time on this machine's shared cores).
    Nothing depends on that collection: commands close their files and sockets themselves and
    the commit points are explicit.  Not done for :func:`main`, which tests call in-process.
    """
    import atexit
    import gc

    atexit.register(gc.freeze)
    main(prog_name="pullwarden")

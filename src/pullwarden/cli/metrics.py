"""``pullwarden metrics``: the Prometheus text of a node root, as ``run`` would be scraped.

The on-disk gauges are counted from the root's ``image_manager/`` when printed, exactly as a
running node counts them at scrape time; everything a process counts while it works (checks,
ensure-image requests, pull durations) starts at zero, as in a node that has just started.
Nothing is written: the records are opened read-only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pullwarden.cli._common import default_root, die, emit

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

OUTPUTS = ("prometheus", "json", "yaml")


def metrics_document(registry: CollectorRegistry) -> dict[str, Any]:
    """The registry's metrics as one JSON/YAML document (names as in the text format)."""
    families = []
    for family in registry.collect():
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": s.value}
                    for s in family.samples
                ],
            }
        )
    return {"metrics": families}


@click.command("metrics", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    metavar="DIR",
    default=default_root,
    show_default="$PULLWARDEN_ROOT or ~/.local/share/pullwarden/node",
    help="The node root: records in ROOT/image_manager (as a kubelet root).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUTS),
    default="prometheus",
    show_default=True,
    help="prometheus: the text exposition format (what a scrape gets); json/yaml: the same "
    "metrics as {metrics: [{name, type, help, samples: [{name, labels, value}]}]}.",
)
def metrics_command(root: Path, output: str) -> None:
    """Print the Prometheus metrics of a node root (records on disk, as `run` serves them).

    The kubelet's metric names (kubelet_imagemanager_ondisk_pullintents,
    kubelet_imagemanager_ondisk_pulledrecords, kubelet_imagemanager_image_mustpull_checks,
    ...) in the Prometheus text exposition format.  The on-disk gauges count the files under
    ROOT/image_manager now; counters and in-memory cache gauges are those of a node that has
    just started (zero).  Read-only: nothing is created, a missing ROOT is an error.

    \b
    Exit status: 0 printed; 2 bad input (ROOT missing or not a directory, or its records
    cannot be listed).
    """
    if not root.exists():
        die(f"--root {str(root)!r} does not exist")
    if not root.is_dir():
        die(f"--root {str(root)!r} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        die(f"--root {str(root)!r} cannot be read")

    from prometheus_client import generate_latest

    from pullwarden.errors import RecordError
    from pullwarden.metrics import Metrics
    from pullwarden.records import FileRecordStore

    store = FileRecordStore(root, migrate=False, create=False)
    metrics = Metrics()
    gauges = store.gauges()
    if gauges.intent_files is not None and gauges.record_files is not None:
        metrics.watch_disk(gauges.intent_files, gauges.record_files)
    try:
        if output == "prometheus":
            click.echo(generate_latest(metrics.registry).decode(), nl=False)
            return
        document = metrics_document(metrics.registry)
    except RecordError as err:
        die(str(err))
    emit(document, output)

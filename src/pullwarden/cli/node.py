"""``pullwarden run`` and ``pullwarden gc``: a node image manager on manifests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from pullwarden._cancel import CancelToken
from pullwarden.cli._common import Interrupts, default_root, die, runtime_endpoint_option
from pullwarden.cli._providers import credential_provider_options, load_plugins
from pullwarden.config import KubeletConfig, default_kubelet_config, load_kubelet_config
from pullwarden.errors import (
    ImageStoreError,
    InvalidReferenceError,
    NodeBusyError,
    PullwardenError,
)
from pullwarden.events import StreamRecorder
from pullwarden.node import Node, PodOutcome
from pullwarden.objects import Objects, load_objects
from pullwarden.reference import apply_default_tag
from pullwarden.runtime import CRIImageService

EXIT_OK, EXIT_NOT_READY, EXIT_BUSY, EXIT_STORE = 0, 1, 3, 7


root_option = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_root,
    show_default="$PULLWARDEN_ROOT or ~/.local/share/pullwarden/node",
    help="The node's state: records in ROOT/image_manager (as a kubelet root), images in "
    "ROOT/images.  One process per root: a second one exits with status 3.",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A KubeletConfiguration (kubelet.config.k8s.io/v1beta1) YAML or JSON file.",
)


node_runtime_option = runtime_endpoint_option(
    "keep the node's images there instead of ROOT/images; beats the config's "
    "imageServiceEndpoint / containerRuntimeEndpoint ('' forces the embedded store)."
)


def load_config(path: Path | None) -> KubeletConfig:
    return load_kubelet_config(path) if path is not None else default_kubelet_config()


def outcome_json(pods: list[PodOutcome]) -> dict[str, Any]:
    return {
        "pods": [
            {
                "namespace": p.namespace,
                "name": p.name,
                "uid": p.uid,
                "containers": [
                    {
                        "name": c.name,
                        "image": c.image,
                        "imageRef": c.image_ref,
                        "outcome": c.outcome,
                        "message": c.message,
                        "pulled": c.pulled,
                        "verifiedBy": c.verified_by,
                        "credential": c.credential,
                        "interrupted": c.interrupted,
                    }
                    for c in p.containers
                ],
            }
            for p in pods
        ]
    }


def outcome_table(pods: list[PodOutcome]) -> list[str]:
    rows = [("POD", "CONTAINER", "IMAGE", "OUTCOME", "WHY")]
    for p in pods:
        for c in p.containers:
            name = f"{c.name} (init)" if c.init else c.name
            rows.append((f"{p.namespace}/{p.name}", name, c.image, c.outcome, c.why))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)), r[4]]).rstrip()
        for r in rows
    ]


def check_images(objects: Objects) -> None:
    """Refuse the whole run, before anything is written, if any image name is invalid.

    (A kubelet would fail just that container with InvalidImageName; for a command that takes
    files, a typo is bad input, reported at once.)
    """
    for pod in objects.pods:
        for container in (*pod.init_containers, *pod.containers):
            try:
                apply_default_tag(container.image)
            except InvalidReferenceError as err:
                raise InvalidReferenceError(
                    f"pod {pod.namespace}/{pod.name}, container {container.name}: invalid image "
                    f"name: {err}"
                ) from None


@click.command("run")
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pods, Secrets and ServiceAccounts (YAML or JSON, multi-document, kind: List); "
    "repeatable, '-' for standard input.",
)
@config_option
@root_option
@node_runtime_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option(
    "--no-node-credentials",
    is_flag=True,
    help="Do not read the node's docker config.json (ROOT, working dir, ~/.docker, /.docker).",
)
@credential_provider_options
def run_command(
    files: tuple[Path, ...],
    config_path: Path | None,
    root: Path,
    runtime_endpoint: str | None,
    output: str,
    no_node_credentials: bool,
    provider_config: Path | None,
    provider_bin_dir: Path | None,
    signing_key_file: Path | None,
    issuer: str | None,
) -> None:
    """Treat every pod in the files as scheduled to this node and ensure its images.

    Init containers first, pods in file order.  Events print as they happen (on standard error
    with -o json); a final table says for each container whether it got its image and why:
    pulled with which credentials, verified by a record (hash or coordinate match, node-wide),
    or exempt by policy.  A second run over the same --root is a restarted kubelet.

    Ctrl-C (or SIGTERM) stops within about a second: pulls in flight are abandoned without
    committing, or, if they already committed, recorded; what was left undone is listed on
    standard error.  A second Ctrl-C exits at once (still safe: an interrupted pull's intent
    stays on disk and the next run turns it into a record).

    \b
    Exit status: 0 every container got its image; 1 some did not; 2 bad input;
    3 another pullwarden process is using --root; 7 the image store or container runtime
    cannot be used; 130 interrupted (SIGINT), 143 (SIGTERM).
    """
    try:
        config = load_config(config_path)
        objects = load_objects(list(files))
        check_images(objects)
    except (PullwardenError, OSError) as err:
        die(str(err))
    plugins = load_plugins(provider_config, provider_bin_dir, signing_key_file, issuer)
    events = StreamRecorder(sys.stderr if output == "json" else sys.stdout)
    token = CancelToken()
    with Interrupts(token) as interrupts:
        try:
            with Node(
                root,
                config,
                events=events,
                node_credentials=not no_node_credentials,
                cancel=token,
                runtime_endpoint=runtime_endpoint,
                credential_plugins=plugins,
            ) as node:
                if isinstance(node.images, CRIImageService):
                    click.echo(
                        f"images: {node.images.version} at {node.images.endpoint}",
                        err=output == "json",
                    )
                pods = node.run(objects)
        except NodeBusyError as err:
            die(str(err), EXIT_BUSY)
        except ImageStoreError as err:
            die(str(err), EXIT_STORE)
        except PullwardenError as err:
            die(str(err))
        if output == "json":
            click.echo(json.dumps(outcome_json(pods), indent=2))
        else:
            click.echo()
            for line in outcome_table(pods):
                click.echo(line)
        status = interrupts.exit_status
        if status is not None:
            report_undone(pods, str(token.error))
            # Abandoned pulls may still be stopping on daemon threads: leave without waiting
            # for them (their intents stay on disk, which is safe).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    sys.exit(EXIT_OK if all(p.ready for p in pods) else EXIT_NOT_READY)


def report_undone(pods: list[PodOutcome], why: str) -> None:
    undone = [(p, c) for p in pods for c in p.containers if c.interrupted]
    click.echo(f"{why}: {len(undone)} container(s) left without their image:", err=True)
    for p, c in undone:
        click.echo(f"  {p.namespace}/{p.name} {c.name}: {c.image} ({c.message})", err=True)


@click.command("gc")
@config_option
@root_option
@node_runtime_option
@click.option(
    "--all",
    "remove_all",
    is_flag=True,
    help="Remove every unused image old enough, whatever the disk usage.",
)
def gc_command(
    config_path: Path | None, root: Path, runtime_endpoint: str | None, remove_all: bool
) -> None:
    """Collect unused images on the kubelet's thresholds, then prune records of removed images.

    Images used less than imageMinimumGCAge ago are kept; with the disk above
    imageGCHighThresholdPercent, least recently used images go until usage is under
    imageGCLowThresholdPercent; images idle longer than imageMaximumGCAge (if set) always go.
    """
    try:
        config = load_config(config_path)
        with Node(root, config, node_credentials=False, runtime_endpoint=runtime_endpoint) as node:
            report = node.collect_garbage(force_all_unused=remove_all)
    except NodeBusyError as err:
        die(str(err), EXIT_BUSY)
    except ImageStoreError as err:
        die(str(err), EXIT_STORE)
    except PullwardenError as err:
        die(str(err))
    click.echo(f"disk usage before: {report.usage_percent_before:.1f}%")
    for image in report.removed:
        name = image.repo_tags[0] if image.repo_tags else image.id
        click.echo(f"removed {name} ({image.size} bytes): {report.reasons[image.id]}")
    for ref in report.pruned_records:
        click.echo(f"pruned the pull record of {ref}")
    click.echo(f"{len(report.removed)} image(s) removed, {report.freed_bytes} bytes freed")

"""``pullwarden run`` and ``pullwarden gc``: a node image manager on manifests."""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from pullwarden._cancel import CancelToken
from pullwarden.cli._common import (
    Interrupts,
    default_root,
    die,
    emit,
    output_option,
    runtime_endpoint_option,
)
from pullwarden.cli._providers import credential_provider_options, load_plugins
from pullwarden.errors import (
    ImageStoreError,
    InvalidReferenceError,
    NodeBusyError,
    PullwardenError,
)
from pullwarden.reference import apply_default_tag

if TYPE_CHECKING:
    # The node, its configuration and the manifests load when a command runs, not for --help.
    from wsgiref.simple_server import WSGIServer

    from pullwarden.config import KubeletConfig
    from pullwarden.events import EventLog
    from pullwarden.metrics import Metrics
    from pullwarden.node import GCPlan, GCReport, PodOutcome
    from pullwarden.objects import Objects, Pod
    from pullwarden.runtime import PullProgress

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


# The -o help of run and gc, after what their table shows.
ONE_DOCUMENT = "json / yaml: one document on standard output (yaml is the json document as YAML)."

node_runtime_option = runtime_endpoint_option(
    "keep the node's images there instead of ROOT/images; beats the config's "
    "imageServiceEndpoint / containerRuntimeEndpoint ('' forces the embedded store)."
)


def load_config(path: Path | None) -> KubeletConfig:
    """The configuration (defaults without ``path``); one warning line per unknown or repeated
    field."""
    from pullwarden.config import default_kubelet_config, load_kubelet_config

    if path is None:
        return default_kubelet_config()
    config = load_kubelet_config(path)
    for name in config.unknown_fields:
        click.echo(
            f'warning: {path}: unknown field "{name}" in the KubeletConfiguration (ignored, as '
            "the kubelet does)",
            err=True,
        )
    for name in config.duplicate_fields:
        click.echo(
            f'warning: {path}: duplicate field "{name}" in the KubeletConfiguration (its last '
            "value is used, as the kubelet does)",
            err=True,
        )
    return config


def outcome_json(pods: list[PodOutcome], events: EventLog | None = None) -> dict[str, Any]:
    """The ``run -o json`` document: every container's outcome (and the events, when given).

    ``credential`` is whose access pulled the image or matched its record
    (:meth:`~pullwarden.objects.CredentialRef.to_json`), null when none did.
    """
    doc: dict[str, Any] = {
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
                        "verifiedBy": c.verified_by.value,
                        "credential": (
                            c.credential_ref.to_json() if c.credential_ref is not None else None
                        ),
                        "init": c.init,
                        "interrupted": c.interrupted,
                    }
                    for c in p.containers
                ],
            }
            for p in pods
        ]
    }
    if events is not None:
        doc["events"] = events.to_json()
    return doc


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


def check_objects(objects: Objects, files: tuple[Path, ...]) -> None:
    """A warning line per object of a kind run does not use; no Pod at all is bad input."""
    for skipped in objects.skipped:
        click.echo(
            f"warning: skipped {skipped.describe()}: run uses only Pods, Secrets and "
            "ServiceAccounts",
            err=True,
        )
    if not objects.pods:
        names = ", ".join(str(f) for f in files)
        die(f"no Pod in {names}: run needs at least one Pod (kind: Pod, apiVersion: v1)")


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


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop returns


@dataclass
class _PullState:
    start: float
    last: float
    blobs: dict[str, tuple[int, int]] = field(default_factory=dict)


class PullProgressLines:
    """Per pull, the bytes downloaded, the rate and the time left, on ``stream`` (stderr).

    On a terminal (``live``) one line is redrawn, at most ten times a second, and wiped before
    anything else is written to the terminal (:meth:`clear`); otherwise a line every
    ``interval`` seconds per pull, the first after ``interval`` seconds (so quick pulls print
    nothing).  Blobs already in the store count for neither the bytes nor the rate.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._live = live
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pulls: dict[tuple[str, str], _PullState] = {}
        self._shown = False  # a live line is on the terminal

    def __call__(self, pod: Pod, image: str, progress: PullProgress) -> None:
        if progress.cached:
            return
        now = self._clock()
        with self._lock:
            state = self._pulls.setdefault((pod.key, image), _PullState(now, now))
            state.blobs[progress.digest] = (progress.done, progress.total)
            if now - state.last < (0.1 if self._live else self._interval):
                return
            state.last = now
            done = sum(d for d, _ in state.blobs.values())
            total = sum(t for _, t in state.blobs.values())
            line = _progress_line(pod, image, done, total, now - state.start)
            if self._live:
                self._stream.write("\r\x1b[K" + line)
                self._shown = True
            else:
                self._stream.write(line + "\n")
            self._stream.flush()

    def clear(self) -> None:
        """Wipe the live line, if one is shown."""
        with self._lock:
            if self._shown:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
                self._shown = False


class _ClearingStream:
    """``stream``, but every write first wipes the live progress line (same terminal)."""

    def __init__(self, stream: TextIO, progress: PullProgressLines) -> None:
        self._stream = stream
        self._progress = progress

    def write(self, text: str) -> int:
        self._progress.clear()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


def _progress_line(pod: Pod, image: str, done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    share = f" ({done * 100 // total}%)" if total else ""
    left = f", {max(0, round((total - done) / rate))}s left" if rate and total > done else ""
    return (
        f"pulling {image} for {pod.key}: {human_bytes(done)} of {human_bytes(total)}{share}, "
        f"{human_bytes(rate)}/s{left}"
    )


def parse_metrics_addr(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) on a loopback address; exit 2 otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        die(f"--metrics-addr {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9101 (PORT 0: any)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        die(
            f"--metrics-addr {value!r}: only a loopback address (127.0.0.1, ::1, localhost) may "
            "serve the node's metrics"
        )
    return host, int(port_text)


@contextmanager
def serve_metrics(addr: str | None, metrics: Metrics) -> Iterator[None]:
    """While the block runs, serve ``metrics`` at ``http://ADDR/metrics`` (when ``addr``)."""
    if addr is None:
        yield
        return
    host, port = parse_metrics_addr(addr)
    from prometheus_client import start_http_server

    server: WSGIServer
    try:
        server, _ = start_http_server(port, host, registry=metrics.registry)
    except OSError as err:
        die(f"--metrics-addr {addr}: cannot listen: {err.strerror or err}")
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"metrics: serving http://{shown}:{server.server_port}/metrics", err=True)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@click.command("run")
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pods, Secrets and ServiceAccounts (YAML or JSON, multi-document, kind: List); "
    "repeatable, '-' for standard input.  Other kinds are skipped with a warning.",
)
@config_option
@root_option
@node_runtime_option
@output_option(help=f"table: events as they happen, then a table; {ONE_DOCUMENT}")
@click.option(
    "--no-node-credentials",
    is_flag=True,
    help="Do not read the node's docker config.json (ROOT, working dir, ~/.docker, /.docker).",
)
@click.option(
    "--metrics-addr",
    metavar="HOST:PORT",
    help="Serve the node's Prometheus metrics (the kubelet's names) at http://HOST:PORT/metrics "
    "while the run lasts; loopback addresses only; PORT 0 picks a free port (the address is "
    "printed on standard error).",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.0),
    default=5.0,
    hidden=True,
    help="Seconds between progress lines when standard error is not a terminal.",
)
@credential_provider_options
def run_command(
    files: tuple[Path, ...],
    config_path: Path | None,
    root: Path,
    runtime_endpoint: str | None,
    output: str,
    no_node_credentials: bool,
    metrics_addr: str | None,
    progress_interval: float,
    provider_config: Path | None,
    provider_bin_dir: Path | None,
    signing_key_file: Path | None,
    issuer: str | None,
) -> None:
    """Treat every pod in the files as scheduled to this node and ensure its images.

    Init containers first, pods in file order.  In table mode events print as they happen, one
    per line (TIME  TYPE  REASON  NAMESPACE/POD  MESSAGE), then a table says for each container
    whether it got its image and why: pulled with whose credentials, verified by a record
    (secret hash or coordinates, service account, node-wide), or not verified because the
    policy exempts it (preloaded, allowlisted, NeverVerify) or the feature gate is off.  With
    -o json / yaml standard output holds one document, {"pods": [...], "events": [...]}.  A
    second run over the same --root is a restarted kubelet.

    Pulls into the embedded store report their progress on standard error (bytes, rate, time
    left): a live line on a terminal, else a line every five seconds; a CRI runtime reports
    none.

    Ctrl-C (or SIGTERM) stops within about a second: pulls in flight are abandoned without
    committing, or, if they already committed, recorded; what was left undone is listed on
    standard error.  A second Ctrl-C exits at once (still safe: an interrupted pull's intent
    stays on disk and the next run turns it into a record).

    \b
    Exit status: 0 every container got its image; 1 some did not; 2 bad input;
    3 another pullwarden process is using --root; 7 the image store or container runtime
    cannot be used; 130 interrupted (SIGINT), 143 (SIGTERM).
    """
    from pullwarden.events import EventLog
    from pullwarden.metrics import Metrics
    from pullwarden.node import Node
    from pullwarden.objects import load_objects
    from pullwarden.runtime import CRIImageService

    if metrics_addr is not None:
        parse_metrics_addr(metrics_addr)  # bad input is refused before anything is read
    try:
        config = load_config(config_path)
        objects = load_objects(list(files))
        check_images(objects)
    except (PullwardenError, OSError) as err:
        die(str(err))
    check_objects(objects, files)
    plugins = load_plugins(provider_config, provider_bin_dir, signing_key_file, issuer)
    table = output == "table"
    live = sys.stderr.isatty()
    progress = PullProgressLines(sys.stderr, live=live, interval=progress_interval)
    same_terminal = table and live and sys.stdout.isatty()
    events = EventLog(
        (_ClearingStream(sys.stdout, progress) if same_terminal else sys.stdout) if table else None
    )
    metrics = Metrics()
    token = CancelToken()
    with serve_metrics(metrics_addr, metrics), Interrupts(token) as interrupts:
        try:
            with Node(
                root,
                config,
                events=events,
                metrics=metrics,
                node_credentials=not no_node_credentials,
                cancel=token,
                runtime_endpoint=runtime_endpoint,
                credential_plugins=plugins,
                pull_progress=progress,
            ) as node:
                if isinstance(node.images, CRIImageService):
                    click.echo(
                        f"images: {node.images.version} at {node.images.endpoint}", err=not table
                    )
                pods = node.run(objects)
        except NodeBusyError as err:
            die(str(err), EXIT_BUSY)
        except ImageStoreError as err:
            die(str(err), EXIT_STORE)
        except PullwardenError as err:
            die(str(err))
        progress.clear()
        if table:
            click.echo()
            for line in outcome_table(pods):
                click.echo(line)
        else:
            emit(outcome_json(pods, events), output)
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


def image_name(image: Any) -> str:
    return str(image.repo_tags[0]) if image.repo_tags else str(image.id)


def gc_json(plan: GCPlan, report: GCReport | None, records: list[str]) -> dict[str, Any]:
    """``gc -o json``: the images removed (or, dry run, to remove), each as ``images -o json``
    shows an image plus ``reason``, and the imageRefs whose records were (would be) pruned."""
    failed = {} if report is None else report.reasons
    removed_ids = None if report is None else {i.id for i in report.removed}
    images = []
    for removal in plan.removals:
        i = removal.image
        entry: dict[str, Any] = {
            "id": i.id,
            "repoTags": list(i.repo_tags),
            "repoDigests": list(i.repo_digests),
            "size": i.size,
            "pinned": i.pinned,
            "reason": removal.reason,
        }
        if removed_ids is not None and i.id not in removed_ids:
            entry["error"] = failed.get(i.id, "not removed")
        images.append(entry)
    return {
        "dryRun": report is None,
        "diskUsagePercent": round(plan.usage_percent, 1),
        "images": images,
        "prunedRecords": records,
        "freedBytes": (
            sum(r.image.size for r in plan.removals) if report is None else report.freed_bytes
        ),
    }


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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say which images would be removed (and why) and which records pruned; change nothing.",
)
@output_option(help=f"table: one line per image and per record, then a summary; {ONE_DOCUMENT}")
def gc_command(
    config_path: Path | None,
    root: Path,
    runtime_endpoint: str | None,
    remove_all: bool,
    dry_run: bool,
    output: str,
) -> None:
    """Collect unused images on the kubelet's thresholds, then prune records of removed images.

    Images used less than imageMinimumGCAge ago are kept; with the disk above
    imageGCHighThresholdPercent, least recently used images go until usage is under
    imageGCLowThresholdPercent; images idle longer than imageMaximumGCAge (if set) always go.
    One line per image removed (with --dry-run: that would be removed) and per record pruned.
    """
    from pullwarden.node import IMAGES_DIR, Node, prune_withheld_message

    if dry_run and not root.is_dir():
        what = "does not exist" if not os.path.lexists(root) else "is not a directory"
        die(f"--root {root} {what}: there is no node to collect")
    try:
        config = load_config(config_path)
        # No embedded store that ever held an image where this node keeps one (it runs on a
        # runtime this command was not told of, or the store is not mounted): its empty list says
        # nothing of what the node holds, and pruning by it would make every image still there
        # count as preloaded.  (Opening a store creates its directory; its index comes with the
        # first image committed and stays.)
        no_store = (
            not (runtime_endpoint or config.image_endpoint)
            and not (root / IMAGES_DIR / "index.json").is_file()
        )
        with Node(
            root,
            config,
            node_credentials=False,
            runtime_endpoint=runtime_endpoint,
            read_only=dry_run,
        ) as node:
            plan = node.gc.plan(force_all_unused=remove_all)
            withheld = () if no_store else node.gc.prune_withheld()
            if dry_run:
                report = None
                records = [] if no_store else node.gc.records_to_prune(plan)
            else:
                report = node.gc.apply(plan, always_prune=not no_store)
                records = report.pruned_records
    except NodeBusyError as err:
        die(str(err), EXIT_BUSY)
    except ImageStoreError as err:
        die(str(err), EXIT_STORE)
    except PullwardenError as err:
        die(str(err))
    if no_store:
        click.echo(
            f"warning: no image store at {root / IMAGES_DIR}: every pull record is kept (give "
            "the node's --runtime-endpoint or --config if it runs on another runtime)",
            err=True,
        )
    elif withheld:
        click.echo(f"warning: {prune_withheld_message(withheld)}", err=True)
    if output != "table":
        emit(gc_json(plan, report, records), output)
        return
    print_gc(plan, report, records)


def print_gc(plan: GCPlan, report: GCReport | None, records: list[str]) -> None:
    """One line per image removed (or that would be), per record pruned, then a summary."""
    dry = report is None
    click.echo(f"disk usage: {plan.usage_percent:.1f}%")
    removed = [r.image for r in plan.removals]
    if report is not None:
        for image in removed:
            if image not in report.removed:
                click.echo(f"failed to remove {image_name(image)}: {report.reasons[image.id]}")
        removed = report.removed
    reasons = {r.image.id: r.reason for r in plan.removals}
    verb = "would remove" if dry else "removed"
    for image in removed:
        click.echo(f"{verb} {image_name(image)} ({image.size} bytes): {reasons[image.id]}")
    prune = "would prune" if dry else "pruned"
    for ref in records:
        click.echo(f"{prune} the pull record of {ref}")
    freed = sum(i.size for i in removed)
    if dry:
        click.echo(
            f"dry run: {len(removed)} image(s) would be removed, {freed} bytes freed, "
            f"{len(records)} record(s) pruned; nothing was changed"
        )
    else:
        click.echo(
            f"{len(removed)} image(s) removed, {freed} bytes freed, {len(records)} record(s) pruned"
        )

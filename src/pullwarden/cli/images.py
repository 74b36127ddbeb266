"""``pullwarden pull | images | rmi``: the embedded image store from the command line."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from pullwarden._cancel import CancelToken
from pullwarden.cli._common import Interrupts, default_store, die
from pullwarden.credentials import DockerKeyring, parse_config_json
from pullwarden.errors import (
    DeniedError,
    DockerConfigError,
    ImageStoreError,
    InvalidReferenceError,
    NotFoundError,
    PullCancelledError,
    PullwardenError,
    RegistryError,
    RegistryUnavailableError,
    UnauthorizedError,
)
from pullwarden.reference import familiar_name, parse_image_name, parse_normalized
from pullwarden.runtime import (
    AuthConfig,
    HostOptions,
    Image,
    LocalImageService,
    Platform,
    ProgressCallback,
    PullProgress,
    RegistryClient,
    load_ca_file,
)

EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5
EXIT_REGISTRY = 6
EXIT_STORE = 7

EXIT_CODES_HELP = """\b
Exit status: 0 pulled; 2 bad input; 3 credentials refused (unauthorized or
denied); 4 image not found; 5 registry unavailable; 6 other registry failure
(digest mismatch, too large, unsupported type); 7 local store failure;
130 / 143 interrupted by SIGINT / SIGTERM (nothing was committed)."""

_T = TypeVar("_T")


store_option = click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_store,
    show_default="$PULLWARDEN_STORE, or the images/ of the default `run --root`",
    help="Root directory of the embedded image store.",
)


def exit_code_for(err: PullwardenError) -> int:
    if isinstance(err, UnauthorizedError | DeniedError):
        return EXIT_AUTH
    if isinstance(err, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(err, RegistryUnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(err, RegistryError):
        return EXIT_REGISTRY
    if isinstance(err, ImageStoreError):
        return EXIT_STORE
    return EXIT_USAGE


def parse_hosts(
    insecure: tuple[str, ...], ca_files: tuple[str, ...], image: str
) -> dict[str, HostOptions]:
    hosts: dict[str, HostOptions] = {host: HostOptions(insecure=True) for host in insecure}
    for item in ca_files:
        host, sep, path = item.rpartition("=")
        if not sep:
            host = parse_normalized(image).domain
        ca = Path(path)
        if not ca.exists():
            raise click.BadParameter(f"CA file {path!r} does not exist", param_hint="--ca-file")
        try:
            load_ca_file(ca)  # checked here, before any request goes out
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--ca-file") from None
        hosts[host] = HostOptions(insecure=False, ca_file=ca)
    return hosts


def candidate_auths(
    image: str, username: str | None, password_stdin: bool, docker_config: Path | None
) -> list[AuthConfig | None]:
    """The credentials to try, in order (as the kubelet tries its keyring); [None] = anonymous."""
    if username is not None:
        password = sys.stdin.readline().rstrip("\r\n") if password_stdin else ""
        return [AuthConfig(username=username, password=password)]
    if password_stdin:
        raise click.BadParameter("--password-stdin needs --username")
    if docker_config is None:
        return [None]
    try:
        config = parse_config_json(docker_config.read_bytes())
    except OSError as err:
        raise click.BadParameter(f"cannot read {docker_config}: {err.strerror}") from None
    keyring = DockerKeyring()
    keyring.add(config, track_hashes=False)
    repository, _tag, _digest = parse_image_name(image)
    found = keyring.lookup(repository)
    if not found:
        return [None]
    return [AuthConfig(username=c.username, password=c.password) for c in found]


@contextmanager
def progress_bars(enabled: bool) -> Iterator[ProgressCallback | None]:
    """Yield an on_progress callback drawing one rich bar per blob (or None when disabled)."""
    if not enabled:
        yield None
        return
    console = Console(stderr=True)
    lock = threading.Lock()
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=False,
    ) as bars:

        def on_progress(p: PullProgress) -> None:
            with lock:
                task = tasks.get(p.digest)
                if task is None:
                    label = f"{p.kind:<8} {p.digest[7:19]}" + (" (present)" if p.cached else "")
                    task = tasks[p.digest] = bars.add_task(label, total=p.total or None)
                bars.update(task, completed=p.done, total=p.total or None)

        yield on_progress


@click.command("pull", epilog=EXIT_CODES_HELP)
@click.argument("image")
@click.option("--username", "-u", help="Registry user name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--docker-config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A docker config.json; its entries for the image's registry are tried in order.",
)
@store_option
@click.option(
    "--platform", "platform_text", metavar="OS/ARCH[/VARIANT]", help="Default: the host's."
)
@click.option(
    "--insecure-registry",
    "insecure",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Use plain HTTP for this registry (loopback registries are plain HTTP by default).",
)
@click.option(
    "--ca-file",
    "ca_files",
    multiple=True,
    metavar="[HOST=]PATH",
    help="Trust this CA for the registry's TLS (HOST defaults to the image's registry).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars; print only the image ref.")
def pull_command(
    image: str,
    username: str | None,
    password_stdin: bool,
    docker_config: Path | None,
    store: Path,
    platform_text: str | None,
    insecure: tuple[str, ...],
    ca_files: tuple[str, ...],
    quiet: bool,
) -> None:
    """Pull IMAGE into the embedded store and print its image ref (the config digest).

    Blobs already in the store are not downloaded again: pulling an image that is present costs
    one manifest request, which still proves the credentials can read it.

    Ctrl-C (SIGINT) or SIGTERM stops the pull within a moment, commits nothing and exits with
    130 or 143; a second signal exits at once.
    """
    try:
        platform = Platform.parse(platform_text) if platform_text else Platform.host()
        hosts = parse_hosts(insecure, ca_files, image)
        auths = candidate_auths(image, username, password_stdin, docker_config)
    except click.BadParameter as err:
        die(err.format_message(), EXIT_USAGE)
    except (InvalidReferenceError, DockerConfigError) as err:
        die(str(err), EXIT_USAGE)
    token = CancelToken()
    with Interrupts(token) as interrupts:
        try:
            ref = pull_into(store, image, auths, hosts, platform, quiet, token)
        except PullCancelledError as err:
            click.echo(f"{err}: {image} was not pulled; nothing was committed", err=True)
            sys.exit(interrupts.exit_status or 130)
        except PullwardenError as err:
            die(str(err), exit_code_for(err))
    click.echo(ref)


def pull_into(
    store: Path,
    image: str,
    auths: list[AuthConfig | None],
    hosts: dict[str, HostOptions],
    platform: Platform,
    quiet: bool,
    token: CancelToken,
) -> str:
    """Open the store and pull, stoppable through ``token``; returns the image ref."""
    with RegistryClient(hosts=hosts, platform=platform) as client:
        service = LocalImageService(store, client=client, platform=platform)
        try:
            with progress_bars(not quiet and sys.stderr.isatty()) as on_progress:
                return in_worker(lambda: pull_with(service, image, auths, on_progress, token))
        finally:
            service.close()


def in_worker(work: Callable[[], _T]) -> _T:
    """Run ``work`` in another thread while this one only waits for it.

    The signal handlers run in the main thread; keeping it out of the pull means a handler
    never interrupts the main thread inside the token's own bookkeeping (which would
    deadlock on its lock), and the pull's sockets are shut down from here, at once.
    """
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as err:
            failure.append(err)

    worker = threading.Thread(target=run, name="pullwarden-pull")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)  # interruptible: a signal handler runs between the waits
    if failure:
        raise failure[0]
    return outcome[0]


def pull_with(
    service: LocalImageService,
    image: str,
    auths: list[AuthConfig | None],
    on_progress: ProgressCallback | None,
    cancel: CancelToken | None = None,
) -> str:
    """Try each credential in order; the first success wins, else the last error is raised."""
    last: PullwardenError | None = None
    for auth in auths:
        try:
            return service.pull_image(image, auth, on_progress, cancel=cancel)
        except (UnauthorizedError, DeniedError) as err:
            last = err
    assert last is not None
    raise last


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000
    return f"{n}B"


def split_tag(ref: str) -> tuple[str, str]:
    """``registry/repo:tag`` → (``registry/repo``, ``tag``); a port colon is not a tag."""
    head, sep, tag = ref.rpartition(":")
    return (head, tag) if sep and "/" not in tag else (ref, "<none>")


def image_rows(images: list[Image]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for img in images:
        short_id, size = img.id.removeprefix("sha256:")[:13], human_size(img.size)
        names = [split_tag(t) for t in img.repo_tags] or [
            (d.partition("@")[0], "<none>") for d in img.repo_digests[:1]
        ]
        rows.extend((repo, tag, short_id, size) for repo, tag in names or [("<none>", "<none>")])
    return sorted(rows)


@click.command("images")
@store_option
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def images_command(store: Path, output: str) -> None:
    """List the images in the embedded store (like `crictl images`)."""
    try:
        service = LocalImageService(store)
        images = service.list_images()
        service.close()
    except PullwardenError as err:
        die(str(err), exit_code_for(err))
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "images": [
                        {
                            "id": i.id,
                            "repoTags": list(i.repo_tags),
                            "repoDigests": list(i.repo_digests),
                            "size": str(i.size),
                        }
                        for i in images
                    ]
                },
                indent=2,
            )
        )
        return
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE"), *image_rows(images)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@click.command("rmi")
@click.argument("images", nargs=-1, required=True)
@store_option
def rmi_command(images: tuple[str, ...], store: Path) -> None:
    """Remove images (by name, repo@digest or id) and every name they have."""
    try:
        service = LocalImageService(store)
        missing = []
        for image in images:
            status = service.image_status(image)
            if status is None:
                missing.append(image)
                continue
            service.remove_image(image)
            click.echo(
                f"Deleted: {familiar_name(status.repo_tags[0]) if status.repo_tags else status.id}"
            )
        service.close()
    except PullwardenError as err:
        die(str(err), exit_code_for(err))
    if missing:
        die(f"no such image: {', '.join(missing)}", EXIT_NOT_FOUND)

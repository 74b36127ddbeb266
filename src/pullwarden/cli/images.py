"""``pullwarden pull | images | rmi``: the embedded image store, or a CRI runtime's, from the shell.

Without ``--runtime-endpoint`` the commands work on the embedded store (``--store``); with it, on
the images of the container runtime at that socket (containerd), through
:class:`~pullwarden.runtime.CRIImageService`, which imports grpc only when it is made.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from pullwarden._cancel import CancelToken
from pullwarden.cli._auth import (
    BadCredentialOptions,
    candidate_auths,
    credential_options,
    parse_hosts,
    tls_options,
)
from pullwarden.cli._common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Interrupts,
    default_store,
    die,
    emit,
    exit_code_for,
    output_option,
    runtime_endpoint_option,
)
from pullwarden.cli._providers import credential_provider_options, load_plugins
from pullwarden.errors import (
    ContainerRuntimeError,
    DeniedError,
    DockerConfigError,
    InvalidReferenceError,
    PullCancelledError,
    PullOutcomeUnknownError,
    PullwardenError,
    UnauthorizedError,
)
from pullwarden.runtime import (
    AuthConfig,
    Image,
    ImageService,
    Platform,
    ProgressCallback,
    PullProgress,
)

if TYPE_CHECKING:
    # The store, the registry client, the CRI client (grpc) and the progress bars (rich)
    # load when a command uses them, so that `--help`, `images` and `pull -q` pay only for theirs.
    from rich.progress import TaskID

    from pullwarden.runtime import CRIImageService, HostOptions, LocalImageService

    AnyImageService = LocalImageService | CRIImageService

EXIT_CODES_HELP = """\b
Exit status: 0 pulled; 2 bad input; 3 credentials refused (unauthorized or
denied); 4 image not found, or no entry for --platform in its index (the
message names the platforms it has); 5 registry unavailable; 6 other registry
failure (digest mismatch, too large, unsupported type); 7 image store or
container runtime failure (the runtime unavailable included); 130 / 143
interrupted by SIGINT / SIGTERM (the embedded store committed nothing; a
runtime may have pulled the image)."""

STORE_ONLY_HELP = (
    "containerd pulls for its own platform and reaches registries as its own configuration "
    "says (hosts.toml files under the CRI plugin's registry config_path, such as "
    "/etc/containerd/certs.d)"
)

_T = TypeVar("_T")


store_option = click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_store,
    show_default="$PULLWARDEN_STORE, or the images/ of the default `run --root`",
    help="Root directory of the embedded image store (not with --runtime-endpoint).",
)

store_runtime_option = runtime_endpoint_option(
    "work on its images instead of the embedded store (--store); '' forces the store."
)


def chosen_endpoint(runtime_endpoint: str | None) -> str | None:
    """The runtime endpoint the command works on, or None for the embedded store.

    Dies with exit 2 when ``--store`` is given as well (whether the endpoint came from the
    command line or from $CONTAINER_RUNTIME_ENDPOINT) or when the endpoint is malformed.
    """
    if not runtime_endpoint:
        return None
    ctx = click.get_current_context()
    if ctx.get_parameter_source("store") is ParameterSource.COMMANDLINE:
        via = ""
        if ctx.get_parameter_source("runtime_endpoint") is ParameterSource.ENVIRONMENT:
            via = " (from $CONTAINER_RUNTIME_ENDPOINT)"
        die(
            f"--store and --runtime-endpoint{via} choose different image services (the "
            "embedded store, a container runtime): give one of them "
            "(--runtime-endpoint '' selects the embedded store)",
            EXIT_USAGE,
        )
    from pullwarden.runtime import parse_endpoint

    try:
        parse_endpoint(runtime_endpoint)
    except ContainerRuntimeError as err:
        die(str(err), EXIT_USAGE)
    return runtime_endpoint


@contextmanager
def image_service(
    store: Path, endpoint: str | None, cancel: CancelToken
) -> Iterator[AnyImageService]:
    """The embedded store at ``store``, or the runtime at ``endpoint``; closed afterwards."""
    from pullwarden.runtime import CRIImageService, LocalImageService

    service: AnyImageService = (
        LocalImageService(store) if endpoint is None else CRIImageService(endpoint, cancel=cancel)
    )
    try:
        yield service
    finally:
        service.close()


@contextmanager
def progress_bars(enabled: bool) -> Iterator[ProgressCallback | None]:
    """Yield an on_progress callback drawing one rich bar per blob (or None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

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
@credential_options("the image's registry")
@store_option
@store_runtime_option
@click.option(
    "--platform",
    "platform_text",
    metavar="OS/ARCH[/VARIANT]",
    help="The entry to pull from a multi-platform image (default: the host's); one the "
    "image does not have is exit 4, naming those it has.  Embedded store only.",
)
@tls_options("  Embedded store only.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars; print only the image ref.")
@credential_provider_options
def pull_command(
    image: str,
    creds: str | None,
    username: str | None,
    password_stdin: bool,
    authfile: Path | None,
    store: Path,
    runtime_endpoint: str | None,
    platform_text: str | None,
    insecure: tuple[str, ...],
    ca_files: tuple[str, ...],
    quiet: bool,
    provider_config: Path | None,
    provider_bin_dir: Path | None,
    signing_key_file: Path | None,
    issuer: str | None,
) -> None:
    """Pull IMAGE into the embedded store, or the runtime's, and print its image ref.

    The image ref is the image id, sha256:<config digest> (with a runtime: the ref it reports).

    Credentials, as skopeo and podman take them: --creds USER[:PASSWORD], or -u USER with
    --password-stdin (on a terminal, -u alone prompts for the password), or --authfile FILE
    (a docker config.json; --docker-config is the same option).  With none of these the
    default auth file is read: $REGISTRY_AUTH_FILE, else $DOCKER_CONFIG/config.json, else
    ~/.docker/config.json, the first that exists.  The auth file's entries for the image's
    registry, then the credential provider plugins' that need no service account, are tried
    in order; with none, the pull is anonymous.  Credentials are never printed.

    Embedded store: blobs already in the store are not downloaded again, so pulling an image
    that is present costs one manifest request, which still proves the credentials can read
    it.  With --runtime-endpoint the runtime pulls (CRI PullImage, no progress bars) with its
    own platform and registry configuration, so --platform, --insecure-registry and --ca-file
    are refused there.

    Ctrl-C (SIGINT) or SIGTERM stops the pull within a moment and exits with 130 or 143; a
    second signal exits at once.  The embedded store then has committed nothing; a runtime may
    have finished the pull on its own (see `pullwarden images`).
    """
    endpoint = chosen_endpoint(runtime_endpoint)
    if endpoint is not None:
        refuse_store_only(platform_text, insecure, ca_files)
    try:
        platform = Platform.parse(platform_text) if platform_text else Platform.host()
        hosts = parse_hosts(insecure, ca_files, image)
        plugins = load_plugins(provider_config, provider_bin_dir, signing_key_file, issuer)
        auths = candidate_auths(
            image,
            creds=creds,
            username=username,
            password_stdin=password_stdin,
            authfile=authfile,
            plugins=plugins,
        )
    except click.BadParameter as err:
        die(err.format_message(), EXIT_USAGE)
    except (InvalidReferenceError, DockerConfigError, BadCredentialOptions) as err:
        die(str(err), EXIT_USAGE)
    token = CancelToken()
    with Interrupts(token) as interrupts:
        try:
            if endpoint is None:
                ref = pull_into(store, image, auths, hosts, platform, quiet, token)
            else:
                ref = pull_by_runtime(endpoint, image, auths, token)
        except PullCancelledError as err:
            click.echo(f"{err}: {image} was not pulled; nothing was committed", err=True)
            sys.exit(interrupts.exit_status or 130)
        except PullOutcomeUnknownError as err:
            if interrupts.exit_status is None:
                die(str(err), exit_code_for(err))
            # The message says the runtime may have pulled it: it may have, after the signal.
            click.echo(f"{err}; `pullwarden images` shows whether it did", err=True)
            sys.exit(interrupts.exit_status)
        except PullwardenError as err:
            die(str(err), exit_code_for(err))
    click.echo(ref)


def refuse_store_only(
    platform_text: str | None, insecure: tuple[str, ...], ca_files: tuple[str, ...]
) -> None:
    """Die (exit 2) when options only the embedded store understands come with an endpoint."""
    given = [
        name
        for name, value in (
            ("--platform", platform_text),
            ("--insecure-registry", insecure),
            ("--ca-file", ca_files),
        )
        if value
    ]
    if given:
        die(
            f"{' and '.join(given)} cannot be used with --runtime-endpoint: {STORE_ONLY_HELP}",
            EXIT_USAGE,
        )


def pull_by_runtime(
    endpoint: str, image: str, auths: list[AuthConfig | None], token: CancelToken
) -> str:
    """Connect to the runtime and pull, stoppable through ``token``; returns the image ref."""

    from pullwarden.runtime import CRIImageService

    def work() -> str:
        with CRIImageService(endpoint, cancel=token) as service:
            return pull_with(service, image, auths, None)

    return in_worker(work)


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
    from pullwarden.runtime import LocalImageService, RegistryClient

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
    service: ImageService,
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


def shorten(digest: str, no_trunc: bool) -> str:
    """``sha256:<hex>`` → its first 13 hex digits, as crictl shows ids (all of it: ``no_trunc``)."""
    return digest if no_trunc else digest.removeprefix("sha256:")[:13]


def repo_digest(img: Image, repo: str) -> str:
    """The manifest digest ``img`` has in ``repo`` (from its repo digests); "" when none."""
    for name in img.repo_digests:
        named_repo, _, digest = name.partition("@")
        if named_repo == repo:
            return digest
    return ""


def image_rows(
    images: list[Image], *, digests: bool = False, no_trunc: bool = False
) -> list[tuple[str, ...]]:
    """One row per name (repo tag; an untagged image: per repo digest), sorted.

    Columns IMAGE, TAG, [DIGEST,] IMAGE ID, SIZE.
    """
    rows: list[tuple[str, ...]] = []
    for img in images:
        image_id, size = shorten(img.id, no_trunc), human_size(img.size)
        names = [split_tag(t) for t in img.repo_tags] or [
            (d.partition("@")[0], "<none>") for d in img.repo_digests
        ]
        for repo, tag in names or [("<none>", "<none>")]:
            digest = [shorten(repo_digest(img, repo), no_trunc) or "<none>"] if digests else []
            rows.append((repo, tag, *digest, image_id, size))
    return sorted(set(rows))


def images_data(images: list[Image]) -> dict[str, Any]:
    """The ``-o json|yaml`` document, shaped as crictl's (size as a string)."""
    return {
        "images": [
            {
                "id": i.id,
                "repoTags": list(i.repo_tags),
                "repoDigests": list(i.repo_digests),
                "size": str(i.size),
                "pinned": i.pinned,
            }
            for i in images
        ]
    }


@click.command("images")
@store_option
@store_runtime_option
@output_option()
@click.option("--quiet", "-q", is_flag=True, help="Only the image ids, one line per image.")
@click.option("--digests", is_flag=True, help="Add a DIGEST column (table).")
@click.option("--no-trunc", is_flag=True, help="Do not shorten ids and digests (table).")
def images_command(
    store: Path,
    runtime_endpoint: str | None,
    output: str,
    quiet: bool,
    digests: bool,
    no_trunc: bool,
) -> None:
    """List the images in the embedded store, or the runtime's (like `crictl images`).

    One row per name: IMAGE, TAG, [DIGEST,] IMAGE ID, SIZE, ids and digests shortened to
    13 hex digits unless --no-trunc.  -q prints each image's full id once; -o json / yaml
    print {"images": [{"id", "repoTags", "repoDigests", "size", "pinned"}]} with full values.

    Only reads: a --store that holds no store is exit 2, and the default store
    ($PULLWARDEN_STORE, else the default root's), before the first `pullwarden pull` made it,
    lists as empty; neither is created.

    \b
    Exit status: 0 listed; 2 bad input; 7 image store or container runtime failure;
    130 / 143 interrupted by SIGINT / SIGTERM.
    """
    endpoint = chosen_endpoint(runtime_endpoint)
    if quiet and output != "table":
        die(f"--quiet prints image ids only: it cannot be used with -o {output}", EXIT_USAGE)
    token = CancelToken()
    images: list[Image] = []
    with Interrupts(token) as interrupts:
        try:
            if endpoint is not None or store_exists(store):
                with image_service(store, endpoint, token) as service:
                    images = service.list_images()
            token.raise_if_cancelled()
        except PullCancelledError as err:
            die(str(err), interrupts.exit_status or 130)
        except PullwardenError as err:
            die(str(err), exit_code_for(err))
    if quiet:
        for image_id in dict.fromkeys(i.id for i in images):
            click.echo(image_id)
    elif output != "table":
        emit(images_data(images), output)
    else:
        header = ("IMAGE", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "SIZE")
        rows = [header, *image_rows(images, digests=digests, no_trunc=no_trunc)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def store_exists(store: Path) -> bool:
    """Whether the embedded store at ``store`` exists (read-only commands never make one).

    A missing store named with ``--store`` is bad input (exit 2); the default one
    (``$PULLWARDEN_STORE``, else the default root's) simply holds no images yet.
    """
    if (store / "index.json").is_file() or (store / "lock").is_file():
        return True
    source = click.get_current_context().get_parameter_source("store")
    if source is ParameterSource.COMMANDLINE:
        die(f"no image store at {store} (`pullwarden pull` makes one)", EXIT_USAGE)
    return False


def removed_names(img: Image) -> tuple[str, ...]:
    """What ``rmi`` reports as deleted: every tag, else every repo digest, else the id."""
    return img.repo_tags or img.repo_digests or (img.id,)


MIN_ID_PREFIX = 4
_HEX_DIGITS = frozenset("0123456789abcdef")


def id_prefix(name: str) -> str | None:
    """The hex digits when ``name`` is a shortened image id (``images`` prints 13 of them), with
    or without ``sha256:``, at least :data:`MIN_ID_PREFIX` long; else None (a full id is not a
    prefix: the image service resolves it)."""
    digits = name.removeprefix("sha256:")
    if MIN_ID_PREFIX <= len(digits) < 64 and set(digits) <= _HEX_DIGITS:
        return digits
    return None


def find_images(
    service: ImageService, names: tuple[str, ...]
) -> tuple[dict[str, Image], list[str]]:
    """The images ``names`` name, each once (by id), and the names that name none.

    Every name is looked up before anything is removed.  A shortened id matching one image
    is that image; matching several is bad input (exit 2, listing them), so nothing is
    removed on a guess.  A hex name matching no id is tried as an image name.
    """
    found: dict[str, Image] = {}
    missing: list[str] = []
    listing: list[Image] | None = None
    for name in names:
        prefix = id_prefix(name)
        if prefix is not None:
            if listing is None:
                listing = service.list_images()
            matches = [i for i in listing if i.id.removeprefix("sha256:").startswith(prefix)]
            if len(matches) > 1:
                shown = ", ".join(f"{i.id} ({', '.join(removed_names(i))})" for i in matches)
                die(
                    f"{name} is ambiguous: it begins the ids of {len(matches)} images: {shown}",
                    EXIT_USAGE,
                )
            if matches:
                found.setdefault(matches[0].id, matches[0])
                continue
            if name.startswith("sha256:"):
                missing.append(name)
                continue
        status = service.image_status(name)
        if status is None:
            missing.append(name)
        else:
            found.setdefault(status.id, status)
    return found, missing


def remove_images(
    service: ImageService, found: dict[str, Image], token: CancelToken, dry_run: bool
) -> None:
    """Remove each image in ``found``, printing its names (``dry_run``: only print)."""
    for img in found.values():
        token.raise_if_cancelled()
        if dry_run:
            for name in removed_names(img):
                click.echo(f"Would delete: {name}")
            continue
        service.remove_image(img.id)
        for name in removed_names(img):
            click.echo(f"Deleted: {name}")


@click.command("rmi")
@click.argument("images", nargs=-1)
@click.option("--all", "-a", "remove_all", is_flag=True, help="Remove every image.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Remove nothing; print `Would delete: <name>` for each name that would go.",
)
@store_option
@store_runtime_option
def rmi_command(
    images: tuple[str, ...],
    remove_all: bool,
    dry_run: bool,
    store: Path,
    runtime_endpoint: str | None,
) -> None:
    """Remove images (by name, repo@digest or id) from the embedded store, or the runtime's.

    IMAGES are names (familiar or full), repo@digest names, image ids, or ids shortened as
    `pullwarden images` prints them: any prefix of at least 4 hex digits, with or without
    sha256:, that begins exactly one image id (one that begins several is exit 2, listing
    them, and nothing is removed).  --all removes every image.

    An image goes with every name it has (containerd too removes the whole image): one
    `Deleted: <name>` line per tag, as the image service lists them (an untagged image: per
    repo@digest name, else its id).  --dry-run prints `Would delete: <name>` lines instead
    and changes nothing.  A --store that holds no store is exit 2; none is created.

    \b
    Exit status: 0 removed; 2 bad input; 4 some image not found (the others are
    removed); 7 image store or container runtime failure; 130 / 143 interrupted by
    SIGINT / SIGTERM.
    """
    endpoint = chosen_endpoint(runtime_endpoint)
    if remove_all and images:
        die("--all removes every image: give it without image names", EXIT_USAGE)
    if not remove_all and not images:
        die("name the images to remove (see `pullwarden images`), or give --all", EXIT_USAGE)
    token = CancelToken()
    missing: list[str] = list(images)
    with Interrupts(token) as interrupts:
        try:
            if endpoint is not None or store_exists(store):
                with image_service(store, endpoint, token) as service:
                    if remove_all:
                        found = {i.id: i for i in service.list_images()}
                        missing = []
                    else:
                        found, missing = find_images(service, images)
                    remove_images(service, found, token, dry_run)
        except PullCancelledError as err:
            die(f"{err}: some images may not have been removed", interrupts.exit_status or 130)
        except PullwardenError as err:
            die(str(err), exit_code_for(err))
    if remove_all:
        missing = []
    if missing:
        die(f"no such image: {', '.join(missing)}", EXIT_NOT_FOUND)

"""``pullwarden image build``: small deterministic OCI images, offline, for tests and demos.

The image is written as an OCI image layout (the directory ``skopeo copy oci:DIR:NAME`` reads)
by :func:`pullwarden.runtime.build_image`: every byte follows from the inputs (sorted tar
entries owned by root with mtime 0, gzip without a timestamp), so the same command gives the
same digests on any machine.  ``--push`` sends it to a registry with
:func:`pullwarden.runtime.push_layout`; the registry client is imported only then.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import click

from pullwarden.cli._auth import (
    BadCredentialOptions,
    candidate_auths,
    credential_options,
    parse_hosts,
    tls_options,
)
from pullwarden.cli._common import EXIT_STORE, EXIT_USAGE, die, emit, exit_code_for, output_option
from pullwarden.errors import (
    DeniedError,
    InvalidReferenceError,
    PullwardenError,
    UnauthorizedError,
)
from pullwarden.reference import parse
from pullwarden.runtime import AuthConfig, Platform

DEFAULT_PLATFORM = "linux/amd64"
MAX_RANDOM_LAYERS = 64
MAX_LAYER_SIZE = 1 << 30


@click.group("image", context_settings={"help_option_names": ["-h", "--help"]})
def image() -> None:
    """Build small deterministic OCI images offline (an OCI layout), and push them.

    No container engine is needed: `image build` writes an OCI image layout directory that
    `pullwarden image build --push`, `skopeo copy oci:DIR:NAME:TAG docker://...` or
    `pullwarden pull` (once pushed) work with.
    """


def tar_path(text: str, what: str) -> str:
    """``text`` as a clean path inside the image (no leading /, no ``..``); dies otherwise."""
    path = PurePosixPath(text.lstrip("/"))
    if not path.parts or any(part in (".", "..") for part in path.parts):
        die(f"{what} {text!r} is not a path inside the image (no '..', not empty)", EXIT_USAGE)
    return str(path)


def tree_files(source: Path, dest: str) -> Iterator[tuple[str, Path]]:
    """(path in the image, file on disk) for every regular file under ``source``, sorted.

    Symbolic links are followed to their files; an empty directory has no file and does not
    appear.  Anything else (a socket, a fifo, a dangling link) is refused.
    """
    for root, dirs, names in os.walk(source, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if not path.is_file():
                die(f"{path} is not a regular file: only files go into a layer", EXIT_USAGE)
            yield str(PurePosixPath(dest, path.relative_to(source).as_posix())), path


def collect_files(directory: Path | None, file_specs: tuple[str, ...]) -> dict[str, bytes] | None:
    """The one layer's ``{path: content}`` from DIR and the --file options; None when neither."""
    sources: dict[str, Path] = {}

    def add(inside: str, path: Path) -> None:
        if inside in sources and sources[inside] != path:
            die(f"two sources for /{inside} in the image: {sources[inside]} and {path}")
        sources[inside] = path

    if directory is not None:
        if not directory.is_dir():
            die(f"directory {directory} does not exist (or is not a directory)", EXIT_USAGE)
        for inside, path in tree_files(directory, ""):
            add(inside, path)
    for spec in file_specs:
        src_text, sep, dest_text = spec.partition(":")
        source = Path(src_text)
        if not src_text or not source.exists():
            die(f"--file {spec!r}: {src_text or 'SRC'} does not exist", EXIT_USAGE)
        if source.is_dir():
            dest = tar_path(dest_text, "--file destination") if sep else source.resolve().name
            for inside, path in tree_files(source, dest):
                add(inside, path)
        elif source.is_file():
            add(tar_path(dest_text if sep else source.name, "--file destination"), source)
        else:
            die(f"--file {spec!r}: {src_text} is not a regular file or a directory", EXIT_USAGE)
    if directory is None and not file_specs:
        return None
    files: dict[str, bytes] = {}
    for inside, path in sources.items():
        try:
            files[inside] = path.read_bytes()
        except OSError as err:
            die(f"cannot read {path}: {err.strerror}", EXIT_USAGE)
    return files


def image_name(tag: str) -> str:
    """``--tag`` checked as an image name with a tag (``:latest`` added when it has none)."""
    try:
        ref = parse(tag)
    except InvalidReferenceError as err:
        die(f"--tag {tag!r} is not an image name: {err}", EXIT_USAGE)
    if ref.digest:
        die(f"--tag {tag!r} names a digest: a built image gets a tag, NAME:TAG", EXIT_USAGE)
    return tag if ref.tag else f"{tag}:latest"


def push_target(target: str) -> str:
    """``--push`` checked: REGISTRY/REPO:TAG, the registry spelled out, no digest."""
    try:
        ref = parse(target)
    except InvalidReferenceError as err:
        die(f"--push {target!r} is not an image name: {err}", EXIT_USAGE)
    if not ref.domain or ref.digest or not ref.tag:
        die(
            f"--push {target!r} must be REGISTRY/REPOSITORY:TAG with the registry spelled out "
            "(such as 127.0.0.1:5000/demo/hello:v1)",
            EXIT_USAGE,
        )
    return target


def command_line(text: str | None) -> list[str]:
    """``--cmd``: a JSON array as written, or a shell-like line split into words."""
    if text is None:
        return ["/bin/true"]
    if text.lstrip().startswith("["):
        try:
            words = json.loads(text)
        except ValueError:
            words = None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words) or not words:
            die(f"--cmd {text!r} is not a JSON array of strings", EXIT_USAGE)
        return words
    try:
        split = shlex.split(text)
    except ValueError as err:
        die(f"--cmd {text!r}: {err}", EXIT_USAGE)
    if not split:
        die("--cmd must not be empty", EXIT_USAGE)
    return split


def check_layout_dir(layout: Path) -> None:
    """Refuse to write into a directory that is neither empty nor an OCI layout."""
    if layout.exists() and not layout.is_dir():
        die(f"--layout {layout} exists and is not a directory", EXIT_USAGE)
    if layout.is_dir() and not (layout / "oci-layout").is_file() and any(layout.iterdir()):
        die(
            f"--layout {layout} is a directory that holds other files and no OCI layout: "
            "give a new or empty directory, or an existing layout",
            EXIT_USAGE,
        )


BUILD_HELP_EPILOG = """\b
Examples:
  # one layer holding ./site (site/index.html is /index.html in the image)
  pullwarden image build ./site --tag demo/site:v1 --layout ./site-oci
  # two files, one under another path; then look at it with skopeo
  pullwarden image build --file app.py --file conf.toml:etc/app/conf.toml \\
      --tag demo/app:v1 --layout ./app-oci --cmd "python3 /app.py"
  skopeo inspect oci:./app-oci:demo/app:v1
  # two 1 MB layers of random bytes, pushed to a local registry, then pulled
  pullwarden image build --layers 2 --layer-size 1000000 --layout ./big-oci \\
      --push 127.0.0.1:5000/demo/big:v1
  pullwarden pull 127.0.0.1:5000/demo/big:v1

\b
Exit status: 0 built (and pushed); 2 bad input; 3 the registry refused the
credentials; 4 the registry has no such repository; 5 registry unavailable;
6 other registry failure; 7 the layout could not be written."""


@image.command("build", epilog=BUILD_HELP_EPILOG)
@click.argument(
    "directory", required=False, type=click.Path(file_okay=False, path_type=Path), metavar="[DIR]"
)
@click.option(
    "--tag",
    "-t",
    metavar="NAME[:TAG]",
    help="The image's name in the layout (TAG defaults to latest; default: the --push "
    "target).  skopeo reads it as oci:LAYOUT:NAME:TAG.",
)
@click.option(
    "--layout",
    required=True,
    type=click.Path(path_type=Path),
    help="The OCI layout directory to write (made if missing; an existing layout keeps its "
    "other images, and an image of the same name is replaced).",
)
@click.option(
    "--file",
    "file_specs",
    multiple=True,
    metavar="SRC[:DEST]",
    help="Put the file (or directory) SRC at /DEST in the image (default: /<name of SRC>).  "
    "Repeatable; goes into the same layer as DIR.",
)
@click.option(
    "--platform",
    "platform_text",
    default=DEFAULT_PLATFORM,
    show_default=True,
    metavar="OS/ARCH[/VARIANT]",
    help="The platform the image's config names (not the host's: the digests would differ "
    "between machines).",
)
@click.option(
    "--cmd",
    "cmd_text",
    metavar="COMMAND",
    help="The image's default command: words as a shell splits them, or a JSON array "
    '(\'["/bin/sh", "-c", "echo hi"]\').  [default: /bin/true]',
)
@click.option(
    "--layers",
    "random_layers",
    type=click.IntRange(0, MAX_RANDOM_LAYERS),
    default=0,
    help="Add this many layers of pseudo-random bytes on top (layer i is drawn from seed i: "
    "the same options give the same layers).",
)
@click.option(
    "--layer-size",
    type=click.IntRange(0, MAX_LAYER_SIZE),
    default=1024 * 1024,
    show_default=True,
    metavar="BYTES",
    help="The size of each --layers layer's one file.",
)
@click.option(
    "--push",
    "push",
    metavar="REGISTRY/REPO:TAG",
    help="Then push the image there (plain HTTP for loopback registries, else TLS).",
)
@credential_options("the --push registry")
@tls_options("  With --push.")
@output_option(help="How to print what was built.")
def build_command(
    directory: Path | None,
    tag: str | None,
    layout: Path,
    file_specs: tuple[str, ...],
    platform_text: str,
    cmd_text: str | None,
    random_layers: int,
    layer_size: int,
    push: str | None,
    creds: str | None,
    username: str | None,
    password_stdin: bool,
    authfile: Path | None,
    insecure: tuple[str, ...],
    ca_files: tuple[str, ...],
    output: str,
) -> None:
    """Build an image from DIR and/or --file sources into an OCI layout; optionally push it.

    The image has one layer with DIR's files (paths relative to DIR) and the --file sources,
    then --layers random layers; with no content at all, one small /hello.txt.  Files are
    stored as root-owned, mode 0644, mtime 0, so the same inputs always give the same
    digests, wherever and whenever you build.  Empty directories are left out.

    Prints the image's name, the layout, the manifest digest (what a registry reports for
    the tag) and the image id (the config digest: what `pullwarden pull` prints); -o json /
    yaml print {"name", "layout", "manifestDigest", "imageId", "platform", "layers",
    "size", "pushed"}.

    --push credentials are the ones `pullwarden pull` takes: --creds USER[:PASSWORD], -u USER
    with --password-stdin (a prompt on a terminal), --authfile FILE, else the default auth
    file.
    """
    if tag is None and push is None:
        die("--tag NAME:TAG names the image (or give --push REGISTRY/REPO:TAG)", EXIT_USAGE)
    name = image_name(tag if tag is not None else push or "")
    target = push_target(push) if push is not None else None
    try:
        platform = Platform.parse(platform_text)
    except InvalidReferenceError as err:
        die(str(err), EXIT_USAGE)
    cmd = command_line(cmd_text)
    if random_layers == 0 and "--layer-size" in _given_options():
        die("--layer-size is the size of each --layers layer: give --layers N too", EXIT_USAGE)
    files = collect_files(directory, file_specs)
    auths: list[AuthConfig | None] = []
    hosts: dict[str, Any] = {}
    if target is not None:
        try:
            hosts = parse_hosts(insecure, ca_files, target)
            auths = candidate_auths(
                target,
                creds=creds,
                username=username,
                password_stdin=password_stdin,
                authfile=authfile,
            )
        except click.BadParameter as err:
            die(err.format_message(), EXIT_USAGE)
        except (BadCredentialOptions, InvalidReferenceError) as err:
            die(str(err), EXIT_USAGE)
    elif creds or username or password_stdin or authfile or insecure or ca_files:
        die("credential and TLS options are for --push: give --push or leave them out")
    check_layout_dir(layout)

    from pullwarden.runtime import build_image, make_tar, random_layer

    layers: list[bytes] | None = None
    if random_layers:
        layers = [make_tar(files)] if files is not None else []
        layers += [random_layer(layer_size, seed) for seed in range(random_layers)]
    try:
        built = build_image(
            layout,
            name,
            layers,
            files=files if layers is None else None,
            platform=platform,
            cmd=cmd,
            gzip_level=1 if random_layers else 6,
        )
    except OSError as err:
        die(f"cannot write the layout {layout}: {err.strerror or err}", EXIT_STORE)
    except ValueError as err:
        die(str(err), EXIT_USAGE)
    pushed = ""
    if target is not None:
        digest = push_built(layout, name, target, auths, hosts)
        pushed = f"{target}@{digest}"
    document: dict[str, Any] = {
        "name": name,
        "layout": str(layout),
        "manifestDigest": built.manifest_digest,
        "imageId": built.config_digest,
        "platform": str(platform),
        "layers": list(built.layer_digests),
        "size": built.total_size,
        "pushed": pushed,
    }
    if output != "table":
        emit(document, output)
    else:
        rows = [
            ("Name", name),
            ("Layout", f"{layout}  (skopeo: oci:{layout}:{name})"),
            ("Manifest digest", built.manifest_digest),
            ("Image id", built.config_digest),
            ("Layers", str(len(built.layer_digests))),
            ("Size", str(built.total_size)),
        ]
        if pushed:
            rows.append(("Pushed", pushed))
        width = max(len(k) for k, _ in rows) + 1
        for key, value in rows:
            click.echo(f"{key + ':':<{width}} {value}")


def _given_options() -> set[str]:
    """The long option names the user typed (so a default is told from an explicit value)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given: set[str] = set()
    for param in ctx.command.params:
        if param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
            given.update(o for o in param.opts if o.startswith("--"))
    return given


def push_built(
    layout: Path,
    name: str,
    target: str,
    auths: list[AuthConfig | None],
    hosts: dict[str, Any],
) -> str:
    """Push ``name`` from ``layout`` to ``target`` with each credential in turn; the digest."""
    from pullwarden.runtime import RegistryClient, push_layout

    last: PullwardenError | None = None
    with RegistryClient(hosts=hosts) as client:
        for auth in auths or [None]:
            try:
                return push_layout(client, layout, name, target, auth)
            except (UnauthorizedError, DeniedError) as err:
                last = err
            except PullwardenError as err:
                die(str(err), exit_code_for(err))
            except OSError as err:
                die(f"pushing {target}: cannot read the layout: {err.strerror or err}", EXIT_STORE)
    assert last is not None
    die(str(last), exit_code_for(last))

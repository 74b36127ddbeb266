"""``pullwarden registry serve``: the embedded development registry, for experiments."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import click

from pullwarden.cli._common import die
from pullwarden.devregistry import AccessRule, DevRegistry
from pullwarden.devregistry.auth import AuthMode

__all__ = ["registry"]

EXIT_USAGE = 2
EXIT_FAILED = 1
_ACTION_WORDS = frozenset({"pull", "push"})
_MODES: dict[str, AuthMode] = {"none": "none", "basic": "basic", "token": "token"}


def parse_users(values: Sequence[str]) -> dict[str, str]:
    """``NAME:PASSWORD`` items → {name: password}; errors never quote the password."""
    users: dict[str, str] = {}
    for value in values:
        name, sep, password = value.partition(":")
        if not sep or not name or not password:
            die(f"--user {name or '?'}:…: expected NAME:PASSWORD with both parts non-empty")
        if name in users:
            die(f"--user {name} is given twice")
        users[name] = password
    return users


def parse_allow(value: str) -> AccessRule:
    """``USER=REPOGLOB[:pull|:push|:pull,push]`` → an AccessRule (default action: pull)."""
    subject, sep, rest = value.partition("=")
    if not sep or not subject or not rest:
        die(f"--allow {value!r}: expected USER=REPOGLOB[:pull|:pull,push]")
    glob, colon, actions_text = rest.rpartition(":")
    if not colon:
        glob, actions_text = rest, "pull"
    actions = frozenset(a.strip() for a in actions_text.split(","))
    if not glob or not actions or not actions <= _ACTION_WORDS:
        die(f"--allow {value!r}: actions must be pull, push or pull,push")
    return AccessRule(subject, glob, actions)


def parse_import(value: str) -> tuple[Path, str, str, str]:
    """``LAYOUT_DIR:REF_NAME=REPO:TAG`` → (layout dir, ref name, repository, tag)."""
    source, sep, target = value.rpartition("=")
    layout, colon1, ref_name = source.rpartition(":")
    repository, colon2, tag = target.rpartition(":")
    if not (sep and colon1 and colon2 and layout and ref_name and repository and tag):
        die(f"--import {value!r}: expected LAYOUT_DIR:REF_NAME=REPO:TAG")
    return Path(layout), ref_name, repository, tag


@click.group("registry")
def registry() -> None:
    """Run pullwarden's embedded OCI registry (loopback only), for experiments and demos."""


@registry.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Loopback address to listen on: 127.0.0.1, localhost or ::1.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=5000,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep content in this directory (survives restarts); default: in memory.",
)
@click.option(
    "--user",
    "user_specs",
    multiple=True,
    metavar="NAME:PASSWORD",
    help="A user the registry accepts (repeatable).",
)
@click.option(
    "--auth",
    type=click.Choice(["none", "basic", "token"]),
    default=None,
    help="Authentication: none, HTTP Basic, or Bearer tokens from the registry's /token "
    "[default: token when --user is given, else none].",
)
@click.option(
    "--allow",
    "allow_specs",
    multiple=True,
    metavar="USER=REPOGLOB[:pull|:pull,push]",
    help="Per-repository access (repeatable; USER may be '*'). Without any, every user may "
    "pull and push everything.",
)
@click.option(
    "--anonymous-pull",
    "anonymous",
    multiple=True,
    metavar="REPOGLOB",
    help="Repositories anyone may pull without credentials (repeatable).",
)
@click.option(
    "--import",
    "import_specs",
    multiple=True,
    metavar="LAYOUT_DIR:REF_NAME=REPO:TAG",
    help="Serve an image from an OCI layout as REPO:TAG (repeatable).",
)
def serve(
    host: str,
    port: int,
    directory: Path | None,
    user_specs: tuple[str, ...],
    auth: str | None,
    allow_specs: tuple[str, ...],
    anonymous: tuple[str, ...],
    import_specs: tuple[str, ...],
) -> None:
    """Serve the OCI distribution API until Ctrl-C (or SIGTERM).

    The first line printed is the registry's URL; images are then named HOST:PORT/REPO:TAG.
    Passwords are never printed.
    """
    users = parse_users(user_specs)
    rules = [parse_allow(spec) for spec in allow_specs]
    imports = [parse_import(spec) for spec in import_specs]
    mode: AuthMode = _MODES[auth] if auth is not None else "token" if users else "none"
    try:
        server = DevRegistry(
            host=host,
            port=port,
            storage_dir=directory,
            users=users,
            auth=mode,
            rules=rules,
            anonymous_pull=anonymous,
        )
    except (ValueError, OSError) as exc:
        die(str(exc))
    imported: list[tuple[str, str, str]] = []
    for layout, ref_name, repository, tag in imports:
        try:
            digest = server.add_image(repository, tag, layout, ref_name)
        except (ValueError, KeyError, OSError) as exc:
            die(f"--import {layout}:{ref_name}: {exc}")
        imported.append((repository, tag, digest))

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except OSError as exc:
            die(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(--port 0 picks a free port)",
                EXIT_FAILED,
            )
        click.echo(server.url)
        storage = str(directory) if directory is not None else "memory"
        click.echo(f"  auth: {mode}; storage: {storage}")
        if users:
            click.echo(f"  users: {', '.join(sorted(users))}")
        for rule in rules:
            actions = ",".join(sorted(rule.actions))
            click.echo(f"  allow: {rule.subject} may {actions} {rule.repository}")
        for pattern in anonymous:
            click.echo(f"  anonymous pull: {pattern}")
        for repository, tag, digest in imported:
            click.echo(f"  image: {server.host}/{repository}:{tag} {digest}")
        click.echo("  press Ctrl-C to stop")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped", err=True)

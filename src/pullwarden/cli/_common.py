"""What every command shares: the one-line error exit and the exit statuses, data locations,
Ctrl-C, the CRI endpoint, and ``-o/--output``.

``-o`` is the one output convention of the commands that print data (README, "Conventions"):
``table`` (the default) is for people; ``json`` and ``yaml`` are one document for programs, the
YAML the same document as the JSON; a command may add choices (``wide``).  ``text``, the old
name of ``table``, is still accepted without being listed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from pullwarden._cancel import CancelToken
from pullwarden.errors import (
    DeniedError,
    ImageStoreError,
    NotFoundError,
    PullCancelledError,
    PullwardenError,
    RegistryError,
    RegistryUnavailableError,
    UnauthorizedError,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_NOT_FOUND",
    "EXIT_REGISTRY",
    "EXIT_STORE",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Interrupts",
    "OutputChoice",
    "default_root",
    "default_store",
    "die",
    "emit",
    "exit_code_for",
    "output_option",
    "runtime_endpoint_option",
    "yaml_text",
]

# The exit statuses of the commands that talk to a registry or an image store (README,
# "Conventions"); run and gc use 1 (not every container got its image) and 3 (root busy) too.
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5
EXIT_REGISTRY = 6
EXIT_STORE = 7


def exit_code_for(err: PullwardenError) -> int:
    """The exit status for a failed registry or image-store operation."""
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


def runtime_endpoint_option(purpose: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--runtime-endpoint`` (env ``CONTAINER_RUNTIME_ENDPOINT``, as crictl), for ``purpose``."""
    return click.option(
        "--runtime-endpoint",
        envvar="CONTAINER_RUNTIME_ENDPOINT",
        metavar="unix:///PATH",
        help="The CRI container runtime at this socket (containerd: "
        f"unix:///run/containerd/containerd.sock): {purpose}  [env: CONTAINER_RUNTIME_ENDPOINT]",
    )


def die(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: <message>`` on standard error and exit: never a traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def default_root() -> Path:
    """The node's state: ``$PULLWARDEN_ROOT``, else ``$XDG_DATA_HOME/pullwarden/node``."""
    env = os.environ.get("PULLWARDEN_ROOT")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pullwarden" / "node"


def default_store() -> Path:
    """``$PULLWARDEN_STORE``, else the default node's image store (so `pull` preloads `run`)."""
    env = os.environ.get("PULLWARDEN_STORE")
    return Path(env) if env else default_root() / "images"


class Interrupts:
    """SIGINT and SIGTERM, while installed, cancel ``token`` instead of killing the process.

    The first signal cancels the token (the work stops at its next safe point and says what it
    left undone); a second one exits at once with ``128 + signal``, which is safe too: nothing
    this process leaves half done grants access (a pull intent stays on disk and the next
    start-up turns it into a record).  Use as a context manager around the work; afterwards
    :attr:`exit_status` is 130 after SIGINT, 143 after SIGTERM, None when no signal came.

    The handler itself only writes the signal number to a pipe (no locks are taken in signal
    context); a watcher thread reads it and cancels the token.
    """

    def __init__(self, token: CancelToken) -> None:
        self.token = token
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def exit_status(self) -> int | None:
        return None if self.signum is None else 128 + self.signum

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is not None:
            os._exit(128 + self.signum)
        self.signum = signum
        if self._pipe is not None:
            os.write(self._pipe[1], bytes([signum]))

    def _watch(self, read_fd: int) -> None:
        data = os.read(read_fd, 1)
        if data and data[0]:
            name = signal.Signals(data[0]).name
            self.token.cancel(PullCancelledError(f"interrupted by {name}"))

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._pipe = os.pipe()
        self._watcher = threading.Thread(
            target=self._watch, args=(self._pipe[0],), name="pullwarden-signals", daemon=True
        )
        self._watcher.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._pipe is not None:
            read_fd, write_fd = self._pipe
            self._pipe = None
            if self.signum is None:
                os.write(write_fd, b"\0")  # let the watcher end
            if self._watcher is not None:
                self._watcher.join(1.0)
            os.close(write_fd)
            os.close(read_fd)


class OutputChoice(click.Choice[str]):
    """The listed choices, plus ``text`` for ``table``, accepted unlisted."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert("table" if value == "text" else value, param, ctx)


def output_option(
    *extra: str, help: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-o/--output table|json|yaml`` (plus ``extra``, e.g. ``wide``), default ``table``."""
    return click.option(
        "-o",
        "--output",
        type=OutputChoice(["table", "json", "yaml", *extra]),
        default="table",
        show_default=True,
        help=help,
    )


def yaml_text(value: object) -> str:
    """``value`` as ``-o yaml`` writes it: block style, keys in their order, non-ASCII as is.

    The text is always what PyYAML's pure-Python emitter writes.  libyaml's (about 7 times
    faster: 90 against 630 µs for a record) quotes, wraps and writes keys otherwise for some
    strings, so it writes only values where the two are known to agree (:func:`_libyaml_alike`).
    """
    import yaml  # only for -o yaml

    fast = getattr(yaml, "CSafeDumper", None)
    # (a bare scalar is a document the two end apart)
    alike = isinstance(value, dict | list) and _libyaml_alike(value)
    dumper = fast if fast is not None and alike else yaml.SafeDumper
    text: str = yaml.dump(value, Dumper=dumper, sort_keys=False, allow_unicode=True)
    return text


_LONGEST_ALIKE_KEY = 100  # past 128 characters the pure emitter writes a key as "? key"


def _libyaml_alike(value: object) -> bool:
    """True when both emitters write ``value`` alike: mappings, lists, ints, bools and None,
    and strings of visible ASCII only (no space, so nothing is wrapped), keys not empty and at
    most :data:`_LONGEST_ALIKE_KEY` long.  Checked against the pure emitter by
    tests/cli/test_yaml_text.py; anything else (a float, a space, non-ASCII) takes the pure one.
    """
    if isinstance(value, str):
        return _visible_ascii(value)
    if value is None or isinstance(value, int):  # bool is an int
        return True
    if isinstance(value, list):
        return all(map(_libyaml_alike, value))
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and 0 < len(k) <= _LONGEST_ALIKE_KEY and _visible_ascii(k)
            for k in value
        ) and all(map(_libyaml_alike, value.values()))
    return False


def _visible_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


def emit(document: object, output: str) -> None:
    """``document`` on standard output as indented JSON, or as the same document in YAML."""
    if output == "yaml":
        click.echo(yaml_text(document), nl=False)
    else:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))

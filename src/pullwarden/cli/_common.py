"""What every command shares: the one-line error exit and the default data locations."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

__all__ = ["EXIT_USAGE", "default_root", "default_store", "die"]

EXIT_USAGE = 2


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

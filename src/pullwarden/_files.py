"""Crash-safe file replacement: write a draft beside (or near) the target, then rename it over.

A kill at any instant leaves the old file or the new one, never a torn one; at worst a draft
remains, which its owner's start-up sweep removes.

The two small pieces every such writer needs live here too, so that each is written once:
:func:`write_all` (``os.write`` until every byte is out) and :func:`remove_quietly` (the
clean-up of a draft, which must never hide the error that made it necessary).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

__all__ = ["remove_quietly", "write_all", "write_atomically"]


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` (any buffer) to ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def remove_quietly(path: str | os.PathLike[str]) -> None:
    """Remove the file at ``path`` if it can be; a missing file or any other failure is ignored."""
    with contextlib.suppress(OSError):
        os.remove(path)


def write_atomically(
    target: Path,
    data: bytes,
    *,
    workdir: Path | None = None,
    sync: bool = False,
    mode: int = 0o600,
) -> None:
    """Replace ``target`` with ``data``.

    The draft goes to ``workdir`` (default: the target's directory; it must be on the same
    filesystem) under a unique name ending in ``.part``.  ``sync`` fsyncs the draft before the
    rename (for state that must survive a power cut, not just a crash).
    """
    directory = workdir if workdir is not None else target.parent
    directory.mkdir(parents=True, exist_ok=True)
    draft = directory / f".{target.name}.{uuid.uuid4().hex}.part"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(draft, target)
    except BaseException:
        remove_quietly(draft)
        raise

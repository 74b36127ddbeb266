"""The secrets of one registry operation, and the masking of them in every message.

A :class:`Scrubber` is created per operation (one ``get_manifest``, one ``fetch_blobs`` with
all its parallel downloads) holding the caller's credentials; it grows while the operation
runs, as ``Authorization`` values are sent and tokens issued, and it is shared by the threads
of that operation, hence the lock.  :meth:`Scrubber.quotes` tells whether registry-supplied text
quotes a secret (so that callers can leave it out), :meth:`Scrubber.mask` replaces what slipped
through anyway.  Both ignore case, and a piece of a secret counts as quoting it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Set

__all__ = ["Scrubber", "mask_secrets", "quotes_secret"]

_WINDOW = 8  # a piece of a secret this long counts as quoting it
_MIN_MASKED = 3  # shorter secrets would mask half of every message; fields are still checked


class Scrubber:
    """A thread-safe, growing set of secrets; ``repr`` says only how many it holds."""

    __slots__ = ("_lock", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets = {s for s in secrets if s}

    def __repr__(self) -> str:
        return f"<Scrubber of {len(self.secrets())} secrets>"

    def add(self, secret: str) -> None:
        """Treat ``secret`` as a secret from now on (empty text is ignored)."""
        if secret:
            with self._lock:
                self._secrets.add(secret)

    def secrets(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._secrets)

    def quotes(self, text: str) -> bool:
        """True when ``text`` contains a secret or an 8-character piece of one, in any case."""
        return quotes_secret(text, self.secrets())

    def mask(self, text: str) -> str:
        """``text`` with every quoted secret (or piece of one, in any case) replaced by ``***``."""
        return mask_secrets(text, self.secrets())


def _folded(text: str) -> tuple[str, list[int]]:
    """``text`` case-folded, and for each folded character the index it came from.

    Case folding can change lengths (``ß`` folds to ``ss``), hence the map back.
    """
    parts: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = char.casefold()
        parts.append(folded)
        origin.extend([index] * len(folded))
    return "".join(parts), origin


def _secret_spans(text: str, secrets: Set[str], shortest: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of ``text`` that quote a secret, ignoring case.

    A secret quotes when it appears whole, or (when longer than the window) when any
    ``_WINDOW``-character piece of it does.  Secrets shorter than ``shortest`` are ignored.
    """
    folded, origin = _folded(text)
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        want = secret.casefold()
        if len(want) < max(1, shortest):
            continue
        width = min(len(want), _WINDOW)
        for piece in {want[i : i + width] for i in range(len(want) - width + 1)}:
            start = folded.find(piece)
            while start >= 0:
                spans.append((origin[start], origin[start + width - 1] + 1))
                start = folded.find(piece, start + 1)
    return spans


def quotes_secret(text: str, secrets: Set[str]) -> bool:
    """True when ``text`` contains a secret or an 8-character piece of one, in any case."""
    return bool(_secret_spans(text, secrets, 1))


def mask_secrets(text: str, secrets: Set[str]) -> str:
    """``text`` with every quoted secret (or piece of one, in any case) replaced by ``***``."""
    spans = sorted(_secret_spans(text, secrets, _MIN_MASKED))
    if not spans:
        return text
    out: list[str] = []
    position = 0
    for start, end in spans:
        if end <= position:
            continue
        if start > position:
            out.append(text[position:start])
            out.append("***")
        elif not out or out[-1] != "***":
            out.append("***")
        position = end
    out.append(text[position:])
    return "".join(out)

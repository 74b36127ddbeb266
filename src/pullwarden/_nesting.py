"""How deeply a JSON or YAML document may nest: one check for every file pullwarden parses.

Python's :mod:`json` recurses once per level of nesting and raises :class:`RecursionError` near
the interpreter's recursion limit (1000 frames by default); PyYAML's pure-Python composer does
the same, and its libyaml composer recurses on the C stack, which crashes the interpreter at a
few tens of thousands of levels (``[`` * 100000 is enough).  Go's decoders give up at 10,000
levels.  Record files, manifests, docker configs and kubelet configurations are therefore
checked here *before* they are parsed, against :data:`MAX_DEPTH` (256 levels): real Kubernetes
objects nest a few dozen levels at most, and the bound keeps the parsers and our own recursive
code (List items, error messages) far from the recursion limit.

A YAML alias used inside the very node it names (``&a [*a]``) would build an infinitely deep
structure; it is refused the same way (go-yaml refuses it too: "anchor 'a' value contains
itself").

Problems raise :class:`NestingError`, a :class:`ValueError` that carries the position where the
bound was crossed; every reader turns it into its own error type.  Messages never quote the
document.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import yaml

__all__ = ["MAX_DEPTH", "NestingError", "check_json", "check_yaml", "loads_json", "reject_constant"]

MAX_DEPTH: Final = 256
"""The deepest nesting of arrays/objects (JSON) or sequences/mappings (YAML) accepted."""

# A JSON string (skipped whole, so brackets inside it do not count) or a bracket.
_JSON_TOKEN: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[][{}]', re.DOTALL)
# Every YAML collection starts with one of these (flow brackets, block sequence entries, and
# the key indicators of block and flow mappings), so a text with few of them nests shallowly.
_YAML_OPENERS: Final = "[{-:?"


class NestingError(ValueError):
    """A document nests deeper than :data:`MAX_DEPTH`, or a YAML alias is used inside itself.

    ``line`` and ``column`` (1-based) say where, ``document`` (1-based, YAML only; 0 when
    unknown) in which document of a stream.
    """

    def __init__(self, message: str, line: int, column: int, document: int = 0) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.document = document


def _too_deep(limit: int) -> str:
    return f"nested more than {limit} levels deep"


def check_json(text: str, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`NestingError` if the JSON text nests arrays/objects deeper than ``limit``.

    Brackets inside strings do not count.  Cheap for the common case: a text with at most
    ``limit`` opening brackets cannot nest deeper and is not scanned.
    """
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        token = m.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > limit:
                start = m.start()
                line = text.count("\n", 0, start) + 1
                column = start - text.rfind("\n", 0, start)
                raise NestingError(_too_deep(limit), line, column)
        elif token == "]" or token == "}":
            depth -= 1


def reject_constant(name: str) -> Any:
    """A ``parse_constant`` hook for :func:`loads_json`: Go's JSON has no ``NaN``,
    ``Infinity`` or ``-Infinity``."""
    raise ValueError(f"invalid JSON literal {name}")


def loads_json(data: str | bytes, **kwargs: Any) -> Any:
    """:func:`json.loads` after :func:`check_json` (``bytes`` are decoded as json.loads does)."""
    text = data if isinstance(data, str) else data.decode(json.detect_encoding(data))
    check_json(text)
    return json.loads(text, **kwargs)


def check_yaml(text: str, loader: type[Any]) -> None:
    """Raise :class:`NestingError` if a YAML stream nests deeper than :data:`MAX_DEPTH` or uses
    an alias inside the node it names.

    ``loader`` is the Loader class the caller parses with.  Only the event stream is read
    (libyaml's parser keeps its own stack, so this cannot crash); a syntax error ends the check
    quietly, leaving the caller's load to report it with its usual message.
    """
    if "*" not in text and sum(map(text.count, _YAML_OPENERS)) <= MAX_DEPTH:
        return
    import yaml  # only here: the JSON checks, which records use, need no YAML library

    open_anchors: list[str | None] = []
    document = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_anchors) == MAX_DEPTH:
                    raise _yaml_error(_too_deep(MAX_DEPTH), event, document)
                open_anchors.append(event.anchor)
            elif isinstance(event, yaml.CollectionEndEvent):
                open_anchors.pop()
            elif isinstance(event, yaml.AliasEvent) and event.anchor in open_anchors:
                raise _yaml_error("an alias is used inside the node it names", event, document)
            elif isinstance(event, yaml.DocumentStartEvent):
                document += 1
    except yaml.MarkedYAMLError as err:
        # libyaml >= 0.2.6 (PyYAML 6.0.4) has a nesting limit of its own (1,000) that its
        # scanner can hit while looking ahead, before the events at our depth arrive: a
        # document it refuses for that is deeper than ours too.
        if "maximum nesting depth" in str(err.problem or "") and err.problem_mark is not None:
            mark = err.problem_mark
            raise NestingError(
                _too_deep(MAX_DEPTH), mark.line + 1, mark.column + 1, max(document, 1)
            ) from None
        return
    except yaml.YAMLError:
        return


def _yaml_error(message: str, event: yaml.Event, document: int) -> NestingError:
    mark = event.start_mark
    if mark is None:  # pragma: no cover - both parsers mark every event
        return NestingError(message, 0, 0, document)
    return NestingError(message, mark.line + 1, mark.column + 1, document)

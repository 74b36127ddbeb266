"""Configuration files that hold one YAML or JSON document, every failure a ConfigError.

The kubelet's own files (``KubeletConfiguration``, ``CredentialProviderConfig``) are read this
way: UTF-8 text; JSON first when the text starts with ``{`` (YAML parsers refuse some valid JSON,
such as tab indentation), YAML otherwise, or when a file not named ``.json`` starts with ``{``
but is YAML flow style; exactly one document; nesting checked before parsing
(:mod:`pullwarden._nesting`).  Every problem is a :class:`~pullwarden.errors.ConfigError` whose
``source`` is the file and whose message gives the line and column when there is one.

Decoding is strict the way Go's is: JSON ``NaN``/``Infinity`` are refused, YAML timestamps stay
strings (they are JSON strings to the kubelet), and every mapping is a :class:`Members`, which
remembers the keys it held more than once (the last value stands).  What a repeated key means is
each reader's decision: the credential provider configuration refuses it, the kubelet's own
configuration warns about it (the kubelet's strict decoding fails and its lenient one warns).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pullwarden._nesting import NestingError, check_yaml, loads_json, reject_constant
from pullwarden.errors import ConfigError

__all__ = ["Members", "read_document"]


class Members(dict[str, Any]):
    """A decoded mapping that remembers which keys it held more than once (in first-seen order)."""

    __slots__ = ("duplicates",)

    def __init__(self, pairs: Sequence[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for key, value in pairs:
            if key in self and key not in self.duplicates:
                self.duplicates.append(key)
            self[key] = value


class _Loader(yaml.SafeLoader):
    """Safe YAML with timestamps kept as strings and every mapping a :class:`Members`.

    The pure-Python parser, not libyaml's: these files are small, and its marks are exact where
    libyaml's scanner gives up early on a deep document (:func:`pullwarden._nesting.check_yaml`).
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Members:
    loader.flatten_mapping(node)
    pairs = [
        (str(loader.construct_object(k, deep=True)), loader.construct_object(v, deep=True))
        for k, v in node.value
    ]
    return Members(pairs)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_document(path: Path, kind: str) -> Any:
    """The one document of ``path`` (a ``kind`` file), decoded strictly (see the module)."""
    source = str(path)
    text = _read_text(path, source)
    if text.lstrip().startswith("{"):
        try:
            return loads_json(text, object_pairs_hook=Members, parse_constant=reject_constant)
        except NestingError as err:
            problem = f"line {err.line}, column {err.column}: invalid JSON: {err}"
        except json.JSONDecodeError as err:
            problem = f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"
        except ValueError:  # parse_constant refused NaN or Infinity
            problem = "invalid JSON"
        if path.suffix == ".json":
            raise ConfigError(source=source, problems=[problem])
    return _yaml_document(text, source, kind, _Loader)


def _read_text(path: Path, source: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(source=source, problems=[f"cannot read: {reason}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(
            source=source, problems=["cannot read: the file is not UTF-8 text"]
        ) from None


def _yaml_document(text: str, source: str, kind: str, loader: type[Any]) -> Any:
    """The one YAML document ``text`` holds (empty documents do not count)."""
    try:
        check_yaml(text, loader)
        docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except NestingError as err:
        problem = f"line {err.line}, column {err.column}: invalid YAML: {err}"
        raise ConfigError(source=source, problems=[problem]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = f"{where}invalid YAML: {err.problem or err}"
        raise ConfigError(source=source, problems=[problem]) from None
    except yaml.YAMLError as err:
        raise ConfigError(source=source, problems=[f"invalid YAML: {err}"]) from None
    if not docs:
        raise ConfigError(source=source, problems=[f"empty file: expected a {kind} document"])
    if len(docs) > 1:
        problem = f"expected one {kind} document, found {len(docs)}"
        raise ConfigError(source=source, problems=[problem])
    return docs[0]

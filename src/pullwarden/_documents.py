"""Configuration files that hold one YAML or JSON document, every failure a ConfigError.

The kubelet's own files (``KubeletConfiguration``, ``CredentialProviderConfig``) are read this
way: UTF-8 text; JSON first when the text starts with ``{`` (YAML parsers refuse some valid JSON,
such as tab indentation), YAML otherwise, or when a file not named ``.json`` starts with ``{``
but is YAML flow style; exactly one document; nesting checked before parsing
(:mod:`pullwarden._nesting`).  Every problem is a :class:`~pullwarden.errors.ConfigError` whose
``source`` is the file and whose message gives the line and column when there is one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pullwarden._nesting import NestingError, check_yaml, loads_json
from pullwarden.errors import ConfigError

__all__ = ["read_document"]


def read_document(
    path: Path,
    kind: str,
    *,
    yaml_loader: type[Any] = yaml.SafeLoader,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
    parse_constant: Callable[[str], Any] | None = None,
) -> Any:
    """The one document of ``path`` (a ``kind`` file); the hooks shape what JSON gives."""
    source = str(path)
    text = _read_text(path, source)
    if text.lstrip().startswith("{"):
        try:
            return loads_json(
                text, object_pairs_hook=object_pairs_hook, parse_constant=parse_constant
            )
        except NestingError as err:
            problem = f"line {err.line}, column {err.column}: invalid JSON: {err}"
        except json.JSONDecodeError as err:
            problem = f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"
        except ValueError:  # parse_constant refused NaN or Infinity
            problem = "invalid JSON"
        if path.suffix == ".json":
            raise ConfigError(source=source, problems=[problem])
    return _yaml_document(text, source, kind, yaml_loader)


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

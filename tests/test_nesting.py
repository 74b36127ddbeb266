"""The nesting bound every JSON and YAML reader applies before parsing (``pullwarden._nesting``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import yaml

from pullwarden._nesting import MAX_DEPTH, NestingError, check_json, check_yaml, loads_json

LOADERS = [yaml.SafeLoader, yaml.CSafeLoader]


def arrays(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_limit() -> None:
    assert MAX_DEPTH == 256
    check_json(arrays(MAX_DEPTH))
    with pytest.raises(NestingError, match=r"^nested more than 256 levels deep$"):
        check_json(arrays(MAX_DEPTH + 1))
    check_json(arrays(5), limit=5)
    with pytest.raises(NestingError, match="more than 4 levels"):
        check_json(arrays(5), limit=4)


def test_is_a_value_error_with_the_position() -> None:
    with pytest.raises(ValueError) as info:
        check_json('{"a": [1,\n  2, {"b":\n    ' + "[" * 300)
    err = info.value
    assert isinstance(err, NestingError)
    assert (err.line, err.column, err.document) == (3, 5 + 253, 0)


def test_siblings_do_not_add_up() -> None:
    check_json("[" + ",".join([arrays(200)] * 50) + "]")
    check_json('{"a": ' + arrays(255) + ', "b": ' + arrays(255) + "}")


@pytest.mark.parametrize(
    "text",
    [
        '["' + "[" * 1000 + '"]',
        '["\\"' + "{" * 1000 + '"]',
        '["\\\\", "' + "[" * 1000 + '"]',
        '{"' + "[" * 1000 + '": 1}',
    ],
    ids=["plain", "after-escaped-quote", "after-escaped-backslash", "in-a-key"],
)
def test_brackets_in_strings_do_not_count(text: str) -> None:
    check_json(text)
    json.loads(text)  # the samples are valid JSON


def test_loads_json() -> None:
    assert loads_json('{"a": [1]}') == {"a": [1]}
    assert loads_json('{"a": 1}'.encode("utf-16")) == {"a": 1}
    assert loads_json(b"[1.5]", parse_float=str) == ["1.5"]
    with pytest.raises(NestingError):
        loads_json(b"[" * 100_000)
    with pytest.raises(UnicodeDecodeError):
        loads_json(b'["\xff"]')


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    ("make", "where"),
    [
        (lambda n: "[" * n + "]" * n, (1, 257)),
        (lambda n: "x: " + "{a: " * (n - 1) + "1" + "}" * (n - 1), (1, 4 + 4 * 255)),
        (lambda n: "".join(" " * i + "k:\n" for i in range(n)) + " " * n + "v", (257, 257)),
        (lambda n: "- " * n + "x", (1, 1 + 2 * 256)),
        (lambda n: "? " * n + "x", (1, 1 + 2 * 256)),
    ],
    ids=["flow-sequences", "flow-mappings", "block-mappings", "block-sequences", "explicit-keys"],
)
def test_yaml_limit(
    loader: type[yaml.SafeLoader], make: Callable[[int], str], where: tuple[int, int]
) -> None:
    check_yaml(make(MAX_DEPTH), loader)
    with pytest.raises(NestingError, match="nested more than 256 levels deep") as info:
        check_yaml(make(MAX_DEPTH + 1), loader)
    assert (info.value.line, info.value.column, info.value.document) == (*where, 1)


@pytest.mark.parametrize("loader", LOADERS)
def test_yaml_alias_inside_its_own_node(loader: type[yaml.SafeLoader]) -> None:
    for text in ("&a [*a]", "&a {x: [1, *a]}", "a: &b\n  c: *b\n"):
        with pytest.raises(NestingError, match="an alias is used inside the node it names"):
            check_yaml(text, loader)
    # Aliases of finished nodes, however many, are fine.
    check_yaml("a: &x [1, 2]\nb: *x\nc: [*x, *x, {d: *x}]\n", loader)


@pytest.mark.parametrize("loader", LOADERS)
def test_yaml_documents_are_counted(loader: type[yaml.SafeLoader]) -> None:
    with pytest.raises(NestingError) as info:
        check_yaml("a: 1\n---\nb: 2\n---\nc: " + "[" * 300, loader)
    assert (info.value.document, info.value.line) == (3, 5)


@pytest.mark.parametrize("loader", LOADERS)
def test_yaml_syntax_errors_are_left_to_the_loader(loader: type[yaml.SafeLoader]) -> None:
    check_yaml("a: [1\n" + "- " * 300, loader)
    check_yaml("* " * 300, loader)

"""``@frozen`` behaves as ``@dataclass(frozen=True, slots=True)``: each class is built both ways
from the same source and every observable behaviour compared."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import textwrap
from typing import Any

import pytest

from pullwarden._values import frozen

STDLIB = "dataclass(frozen=True, slots=True)"
OURS = "frozen"


def build(source: str, decorator: str, name: str = "Point") -> Any:
    """Define the class of ``source`` (``@DECO`` marks where the decorator goes)."""
    scope: dict[str, Any] = {
        "dataclass": dataclasses.dataclass,
        "field": dataclasses.field,
        "frozen": frozen,
        "__name__": __name__,
    }
    exec(textwrap.dedent(source).replace("@DECO", f"@{decorator}"), scope)
    return scope[name]


def both(source: str, name: str = "Point") -> tuple[Any, Any]:
    return build(source, STDLIB, name), build(source, OURS, name)


POINT = """
    @DECO
    class Point:
        '''A point.'''
        x: int
        y: int = 0
        tags: tuple[str, ...] = ()
        seen: list[int] = field(default_factory=list, compare=False, repr=False)
        note: str = field(default="", hash=False)
    """


def outcome(call: Any) -> tuple[str, str]:
    """What ``call()`` gives: its repr, or the type and message of what it raises."""
    try:
        return ("ok", repr(call()))
    except Exception as err:
        return (type(err).__name__, str(err))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((1,), {}),
        ((1, 2), {}),
        ((1, 2, ("a",)), {"note": "n"}),
        ((), {"x": 3, "tags": ("b",)}),
        ((), {}),
        ((1, 2, (), [], "n", "extra"), {}),
        ((1,), {"x": 2}),
        ((1,), {"nope": 2}),
    ],
)
def test_construction_and_its_errors_match(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    theirs, ours = both(POINT)
    assert outcome(lambda: ours(*args, **kwargs)) == outcome(lambda: theirs(*args, **kwargs))


def test_default_factories_make_a_fresh_value_per_instance() -> None:
    _, ours = both(POINT)
    a, b = ours(1), ours(1)
    assert a.seen == [] and a.seen is not b.seen


def test_equality_and_hash_are_the_stdlibs() -> None:
    theirs, ours = both(POINT)
    samples = [((1,), {}), ((1, 2), {}), ((1, 2, ("a",)), {}), ((1,), {"note": "x"})]
    for args, kwargs in samples:
        mine, stdlib = ours(*args, **kwargs), theirs(*args, **kwargs)
        assert hash(mine) == hash(stdlib)  # the same tuple of fields, hashed the same way
        assert repr(mine) == repr(stdlib)
        for other_args, other_kwargs in samples:
            assert (mine == ours(*other_args, **other_kwargs)) == (
                stdlib == theirs(*other_args, **other_kwargs)
            )
    assert ours(1, seen=[1]) == ours(1, seen=[2])  # compare=False
    assert ours(1, note="a") != ours(1, note="b")  # hash=False still compares
    assert hash(ours(1, note="a")) == hash(ours(1, note="b"))
    assert ours(1) != theirs(1) and ours(1) != (1, 0, (), "")
    assert ours(1).__eq__(theirs(1)) is NotImplemented
    assert {ours(1): "a"}[ours(1)] == "a"


def test_frozen_fields_and_slots_match() -> None:
    theirs, ours = both(POINT)
    assert all(dataclasses.is_dataclass(cls) for cls in (theirs, ours))
    for cls in (theirs, ours):
        assert [f.name for f in dataclasses.fields(cls)] == ["x", "y", "tags", "seen", "note"]
        assert cls.__match_args__ == ("x", "y", "tags", "seen", "note")
        assert cls.__slots__ == ("x", "y", "tags", "seen", "note")
        assert not hasattr(cls(1), "__dict__")
        assert cls.__init__.__qualname__ == "Point.__init__"
    for action in (lambda p: setattr(p, "x", 5), lambda p: delattr(p, "y")):
        assert outcome(lambda act=action: act(ours(1))) == outcome(
            lambda act=action: act(theirs(1))
        )
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'x'"):
        ours(1).x = 2
    # A name that is no field: Python 3.11's slotted frozen dataclass raises a TypeError from
    # super() there (its __setattr__ names the class from before the slots were added).
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'other'"):
        ours(1).other = 5
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'other'"):
        del ours(1).other


def test_replace_pickle_and_copy_work() -> None:
    _, ours = both(POINT)
    p = ours(1, 2, ("a",), [7], "n")
    moved = dataclasses.replace(p, y=5)
    assert (moved.x, moved.y, moved.tags, moved.note) == (1, 5, ("a",), "n")
    assert p.y == 2
    for clone in (copy.copy(p), copy.deepcopy(p)):
        assert clone == p and clone.seen == [7]
    # pickle needs the class importable by name: use one the package defines
    from pullwarden.runtime import AuthConfig

    auth = AuthConfig("u", "p")
    assert pickle.loads(pickle.dumps(auth)) == auth


def test_post_init_runs_after_the_fields_are_set() -> None:
    source = """
    @DECO
    class Point:
        '''Normalised.'''
        x: int
        label: str = ""

        def __post_init__(self) -> None:
            object.__setattr__(self, "label", self.label or f"p{self.x}")
    """
    theirs, ours = both(source)
    assert repr(ours(3)) == repr(theirs(3)) == "Point(x=3, label='p3')"


def test_init_false_fields_get_their_defaults() -> None:
    source = """
    @DECO
    class Point:
        '''Derived fields.'''
        x: int
        cache: dict[str, int] = field(default_factory=dict, init=False)
        kind: str = field(default="p", init=False)
    """
    theirs, ours = both(source)
    assert repr(ours(1)) == repr(theirs(1)) == "Point(x=1, cache={}, kind='p')"
    assert outcome(lambda: ours(1, {})) == outcome(lambda: theirs(1, {}))


def test_methods_a_class_defines_are_kept() -> None:
    source = """
    @DECO
    class Point:
        '''Own methods.'''
        x: int
        secret: str = ""

        def __repr__(self) -> str:
            return f"Point(x={self.x}, secret=<hidden>)"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Point) and other.x == self.x
    """
    theirs, ours = both(source)
    assert repr(ours(1, "s")) == repr(theirs(1, "s")) == "Point(x=1, secret=<hidden>)"
    assert ours(1, "a") == ours(1, "b")
    # __eq__ alone leaves __hash__ None, which the stdlib replaces: both are hashable
    assert hash(ours(1, "a")) == hash(theirs(1, "a"))

    own_hash = """
    @DECO
    class Point:
        '''Own hash.'''
        x: int

        def __hash__(self) -> int:
            return 7
    """
    theirs, ours = both(own_hash)
    assert hash(ours(1)) == hash(theirs(1)) == 7


def test_recursive_values_repr_as_the_stdlib_does() -> None:
    source = """
    @DECO
    class Box:
        '''Holds anything.'''
        items: list[object]
    """
    theirs, ours = both(source, "Box")
    mine, stdlib = ours([]), theirs([])
    mine.items.append(mine)
    stdlib.items.append(stdlib)
    assert repr(mine) == repr(stdlib) == "Box(items=[...])"


def test_a_plain_subclass_can_add_attributes_of_its_own() -> None:
    _, ours = both(POINT)
    sub = type("Sub", (ours,), {})
    s = sub(1)
    s.extra = 1
    assert s.extra == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.x = 2
    del s.extra
    with pytest.raises(dataclasses.FrozenInstanceError):
        del s.x


@pytest.mark.parametrize(
    "source",
    [
        # a mutable default
        "@DECO\nclass Point:\n    x: list[int] = []\n",
        # a required field after a default one
        "@DECO\nclass Point:\n    x: int = 0\n    y: int\n",
    ],
)
def test_bad_classes_fail_as_the_stdlib_does(source: str) -> None:
    assert outcome(lambda: build(source, OURS)) == outcome(lambda: build(source, STDLIB))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "@dataclass\nclass Base:\n    x: int\n@DECO\nclass Point(Base):\n    y: int\n",
            "cannot inherit from a dataclass",
        ),
        (
            "@DECO\nclass Point:\n    x: int = field(kw_only=True)\n",
            "kw_only field 'x'",
        ),
        (
            "@DECO\nclass Point:\n    x: int\n    def __setattr__(self, n, v): pass\n",
            "Cannot overwrite attribute __setattr__",
        ),
    ],
)
def test_what_frozen_does_not_support_is_refused(source: str, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        build(source, OURS)

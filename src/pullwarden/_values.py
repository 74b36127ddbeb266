"""``@frozen``: ``@dataclass(frozen=True, slots=True)`` at a fifth of its import cost.

Python 3.11's :func:`dataclasses.dataclass` compiles six functions from source for every frozen
class (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``),
about 0.6 ms a class on the machines we measure on.  ``pullwarden run`` defines 67 such classes
before it does anything, ~40 ms of a ~170 ms start-up; ``pullwarden pull`` 21.

:func:`frozen` lets :mod:`dataclasses` read the fields (annotations, :func:`dataclasses.field`,
``__slots__``, ``__match_args__``, ``__dataclass_fields__``, so :func:`dataclasses.fields` and
:func:`dataclasses.replace` work) without generating any method, then compiles ``__init__``
alone; equality, hashing, ``repr``, the frozen ``__setattr__``/``__delattr__`` and the pickle
state are shared functions over the fields.  The behaviour is the stdlib's, which
``tests/test_values.py`` checks side by side:

* ``__init__`` takes the ``init`` fields in order, fills ``default_factory`` and ``init=False``
  fields, then calls ``__post_init__`` when the class has one;
* ``==`` compares the ``compare`` fields as a tuple, only against the same class
  (``NotImplemented`` otherwise); ``hash`` is the hash of that tuple (``hash=`` overrides which
  fields count);
* ``repr`` is ``Qualname(a=1, b='x')`` over the ``repr`` fields, ``...`` on recursion;
* assigning or deleting a field raises :class:`dataclasses.FrozenInstanceError` (any other name
  too, where 3.11's slotted dataclass raises a ``TypeError`` from ``super()`` by mistake);
* a method the class defines itself (``__repr__``, ``__eq__``, ``__hash__``) is kept.

Not supported (no class here needs them): inheriting from a dataclass and ``kw_only`` fields,
which :func:`frozen` refuses, and ``InitVar`` fields.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, cast, dataclass_transform

__all__ = ["frozen"]

_T = TypeVar("_T")
_MISSING: Any = dataclasses.MISSING


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen(cls: type[_T]) -> type[_T]:
    """Make ``cls`` a frozen, slotted dataclass (see the module for what it does)."""
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            raise TypeError(f"@frozen class {cls.__qualname__} cannot inherit from a dataclass")
    own = set(cls.__dict__)
    built = dataclasses.dataclass(cls, init=False, repr=False, eq=False, slots=True)
    fields = dataclasses.fields(cast(Any, built))
    for f in fields:
        if f.kw_only:
            raise TypeError(f"@frozen class {cls.__qualname__}: kw_only field {f.name!r}")
    for name in ("__setattr__", "__delattr__"):
        if name in own:
            raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
    hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
    compared = tuple(f.name for f in fields if f.compare)
    every = tuple(f.name for f in fields)
    names = frozenset(every)
    methods: dict[str, Callable[..., Any]] = {
        name: method
        for name, method in (
            ("__init__", _init(built, fields)),
            ("__eq__", _eq(_getter(compared))),
            ("__repr__", _repr(tuple(f.name for f in fields if f.repr))),
            ("__getstate__", _getstate(every)),
            ("__setstate__", _setstate(every)),
        )
        if name not in own
    }
    methods["__setattr__"] = _setattr(built, names)
    methods["__delattr__"] = _delattr(built, names)
    # A class that defines __eq__ but no __hash__ has __hash__ = None, which is replaced.
    if cls.__dict__.get("__hash__") is None:
        methods["__hash__"] = _hash(_getter(hashed))
    for name, method in methods.items():
        method.__qualname__ = f"{built.__qualname__}.{name}"
        setattr(built, name, method)
    return built


def _init(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    """``__init__``, compiled: positional-or-keyword parameters in field order."""
    params: list[str] = []
    body: list[str] = []
    scope: dict[str, Any] = {"_set": object.__setattr__, "_MISSING": _MISSING}
    seen_default = False
    for f in fields:
        default = f"_default_{f.name}"
        factory = f"_factory_{f.name}"
        if f.default is not _MISSING:
            scope[default] = f.default
        if f.default_factory is not _MISSING:
            scope[factory] = f.default_factory
        if f.init:
            if f.default is not _MISSING:
                params.append(f"{f.name}={default}")
                seen_default = True
            elif f.default_factory is not _MISSING:
                params.append(f"{f.name}=_MISSING")
                body.append(f" if {f.name} is _MISSING: {f.name} = {factory}()")
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            else:
                params.append(f.name)
            body.append(f" _set(self, {f.name!r}, {f.name})")
        elif f.default is not _MISSING:
            body.append(f" _set(self, {f.name!r}, {default})")
        elif f.default_factory is not _MISSING:
            body.append(f" _set(self, {f.name!r}, {factory}())")
    if hasattr(cls, "__post_init__"):
        body.append(" self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or " pass")
    local: dict[str, Any] = {}
    exec(source, scope, local)  # field names are identifiers (annotations); defaults by name
    init: Callable[..., None] = local["__init__"]
    return init


def _getter(names: tuple[str, ...]) -> Callable[[object], tuple[Any, ...]]:
    def key(self: object) -> tuple[Any, ...]:
        return tuple([getattr(self, n) for n in names])

    return key


def _eq(key: Callable[[object], tuple[Any, ...]]) -> Callable[[object, object], Any]:
    def __eq__(self: object, other: object) -> Any:
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented

    return __eq__


def _hash(key: Callable[[object], tuple[Any, ...]]) -> Callable[[object], int]:
    def __hash__(self: object) -> int:
        return hash(key(self))

    return __hash__


def _repr(names: tuple[str, ...]) -> Callable[[object], str]:
    @reprlib.recursive_repr()
    def __repr__(self: object) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{self.__class__.__qualname__}({shown})"

    return __repr__


def _setattr(cls: type[Any], names: frozenset[str]) -> Callable[[object, str, Any], None]:
    def __setattr__(self: object, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    return __setattr__


def _delattr(cls: type[Any], names: frozenset[str]) -> Callable[[object, str], None]:
    def __delattr__(self: object, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return __delattr__


def _getstate(names: tuple[str, ...]) -> Callable[[object], list[Any]]:
    def __getstate__(self: object) -> list[Any]:
        return [getattr(self, n) for n in names]

    return __getstate__


def _setstate(names: tuple[str, ...]) -> Callable[[object, list[Any]], None]:
    def __setstate__(self: object, state: list[Any]) -> None:
        for name, item in zip(names, state, strict=True):
            object.__setattr__(self, name, item)

    return __setstate__

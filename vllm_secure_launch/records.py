"""`@record`: a frozen dataclass whose methods are shared closures, not generated source.

`@dataclass(frozen=True)` writes and compiles six methods per class (__init__, __repr__,
__eq__, __hash__, __setattr__, __delattr__): ~0.6 ms each time a module is imported, ~30 ms of
a dry run's 41 classes, more than the whole start may add over the click+psutil floor (issue 9).
`record` collects the fields as dataclasses does (real dataclasses.Field objects, without the
per-field type checks that cost most of a class) and installs closures with the same
behaviour: positional/keyword __init__ with defaults and default factories (and __post_init__
when defined), the dataclass repr, eq/hash over the compared fields, and FrozenInstanceError on
assignment. dataclasses.fields/replace/asdict/is_dataclass work as for any dataclass. Standard
library only; imports nothing of the package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform

T = TypeVar("T", bound=type)
_MISSING: Any = dataclasses.MISSING
# The marker dataclasses.fields() keeps a field by (a private name, the same from 3.7 to 3.13;
# tests/test_records.py compares records with real dataclasses on the running Python).
_FIELD: Any = dataclasses._FIELD  # type: ignore[attr-defined]
_set = object.__setattr__


def _init(cls: type[Any], fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    names = tuple(f.name for f in fields)
    known = frozenset(names)
    defaults = {f.name: f.default for f in fields if f.default is not _MISSING}
    factories: dict[str, Any] = {f.name: f.default_factory for f in fields
                                 if f.default_factory is not _MISSING}
    post_init = getattr(cls, "__post_init__", None)
    where = f"{cls.__qualname__}.__init__()"

    count = len(names)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) == count and not kwargs:  # every field given in order (table rows)
            for name, value in zip(names, args):
                _set(self, name, value)
            if post_init is not None:
                post_init(self)
            return
        if len(args) > len(names):
            raise TypeError(f"{where} takes {len(names) + 1} positional arguments but "
                            f"{len(args) + 1} were given")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in known:
                raise TypeError(f"{where} got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{where} got multiple values for argument {key!r}")
            values[key] = value
        for name in names:
            if name in values:
                _set(self, name, values[name])
            elif name in defaults:
                _set(self, name, defaults[name])
            elif name in factories:
                _set(self, name, factories[name]())
            else:
                raise TypeError(f"{where} missing 1 required positional argument: {name!r}")
        if post_init is not None:
            post_init(self)

    return __init__


def _methods(cls: type[Any], fields: tuple[dataclasses.Field[Any], ...]) -> dict[str, Any]:
    shown = tuple(f.name for f in fields if f.repr)
    compared = tuple(f.name for f in fields if f.compare)
    hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
    names = frozenset(f.name for f in fields)

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self: Any, other: object) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        # tuples, as the generated method compares (identity first, element by element)
        return (tuple(getattr(self, n) for n in compared)
                == tuple(getattr(other, n) for n in compared))

    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, n) for n in hashed))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return {"__init__": _init(cls, fields), "__repr__": __repr__, "__eq__": __eq__,
            "__hash__": __hash__, "__setattr__": __setattr__, "__delattr__": __delattr__}


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):  # `from __future__ import annotations`: the source text
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or getattr(annotation, "__origin__", None) is ClassVar


def _collect(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """The fields as dataclasses collects them (bases first, then the class's own annotations
    in order), without its per-field type resolution: ~5x cheaper, which is most of what a
    class costs at import (issue 9). Fields are real dataclasses.Field objects, so fields(),
    replace() and asdict() read them as their own."""
    found: dict[str, dataclasses.Field[Any]] = {}
    for base in cls.__mro__[-1:0:-1]:  # a dataclass base also lists its ClassVars: not fields
        found.update((n, f) for n, f in base.__dict__.get("__dataclass_fields__", {}).items()
                     if f._field_type is _FIELD)
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        if isinstance(annotation, str) and annotation.startswith(("InitVar", "KW_ONLY")):
            raise TypeError(f"{cls.__name__}.{name}: @record has no {annotation.split('[')[0]}")
        default = cls.__dict__.get(name, _MISSING)
        if isinstance(default, dataclasses.Field):
            f = default
            if f.default is _MISSING:
                delattr(cls, name)  # as dataclass does: the class shows the real default
            else:
                setattr(cls, name, f.default)
        else:
            if default is not _MISSING and type(default).__hash__ is None:
                raise ValueError(f"mutable default {type(default)} for field {name} is not "
                                 "allowed: use default_factory")
            f = dataclasses.field(default=default)
        f.name, f.type = name, annotation
        if f.kw_only is _MISSING:  # as dataclass resolves it (a subclass reads it)
            f.kw_only = False
        f._field_type = _FIELD  # type: ignore[attr-defined]
        found[name] = f
    seen_default = False
    for f in found.values():
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or has_default
    return found


@dataclasses.dataclass(init=False, repr=False, eq=False)
class _Shape:
    """Only for its parameters object: what dataclasses reads to tell a record is frozen."""


_PARAMS: Any = _Shape.__dataclass_params__  # type: ignore[attr-defined]
_PARAMS.init = _PARAMS.repr = _PARAMS.eq = _PARAMS.frozen = True


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: T) -> T:
    """The class as `@dataclass(frozen=True)` would make it, without compiling code."""
    own = dict(cls.__dict__)
    for name in ("__setattr__", "__delattr__"):
        if name in own:
            raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
    # An explicit __hash__ stays, as with dataclass; `__eq__` in the body sets it to None.
    class_hash = own.get("__hash__", _MISSING)
    keep_hash = not (class_hash is _MISSING or (class_hash is None and "__eq__" in own))
    made: Any = cls
    found = _collect(made)
    made.__dataclass_fields__ = found
    # What the class is, for dataclasses (a frozen subclass checks its base is frozen too).
    made.__dataclass_params__ = _PARAMS
    made.__match_args__ = tuple(f.name for f in found.values() if f.init)  # type: ignore[misc]
    if not made.__doc__:  # the text dataclasses builds with inspect.signature (~0.3 ms)
        made.__doc__ = f"{made.__name__}({', '.join(found)})"
    for name, fn in _methods(made, tuple(found.values())).items():
        if name in own and (name != "__hash__" or keep_hash):
            continue  # the class's own method wins, as with dataclass
        fn.__qualname__ = f"{made.__qualname__}.{name}"
        setattr(made, name, fn)
    return cls

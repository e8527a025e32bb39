"""`@record` (records.py) behaves as `@dataclass(frozen=True)` does, without compiling methods:
the same construction (positional, keyword, defaults, factories, errors), repr, equality, hash,
frozenness, and the dataclasses helpers (fields, replace, asdict, match)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar  # at module level: where dataclasses looks a string annotation up

import pytest

from vllm_secure_launch.records import record


def _pair():
    @record
    class R:
        a: int
        b: str = "x"
        c: tuple[int, ...] = ()
        d: dict[str, int] = field(default_factory=dict)
        e: float = field(default=0.0, compare=False, repr=False)

    @dataclass(frozen=True)
    class R2:  # the same class made by dataclasses
        a: int
        b: str = "x"
        c: tuple[int, ...] = ()
        d: dict[str, int] = field(default_factory=dict)
        e: float = field(default=0.0, compare=False, repr=False)

    return R, R2


def test_construction_repr_eq_hash_match_dataclass():
    R, R2 = _pair()
    for args, kw in [((1,), {}), ((1, "y"), {"c": (2,)}), ((), {"a": 3, "e": 2.5})]:
        r, r2 = R(*args, **kw), R2(*args, **kw)
        assert repr(r).replace("R(", "R2(", 1) == repr(r2)
        assert dataclasses.asdict(r) == dataclasses.asdict(r2)
        assert [f.name for f in dataclasses.fields(r)] == [f.name for f in dataclasses.fields(r2)]
    assert R(1, c=(1,)) == R(1, c=(1,)) and R(1) != R(2) and R(1, e=1.0) == R(1, e=2.0)
    assert R(1) != R2(1)  # another class is never equal, as with dataclass
    with pytest.raises(TypeError):
        hash(R(1))  # a dict field: unhashable, as with dataclass
    with pytest.raises(TypeError):
        hash(R2(1))

    @record
    class H:
        a: int
        b: str = field(default="", hash=False)

    assert hash(H(1, "p")) == hash(H(1, "q")) == hash((1,))
    nan = float("nan")
    assert R(nan) == R(nan) and R2(nan) == R2(nan)  # the same object: tuples compare by identity
    assert R(1).d is not R(1).d  # a fresh default per instance
    assert R.__match_args__ == R2.__match_args__
    match R(5, "z"):
        case R(a, b):
            assert (a, b) == (5, "z")


def test_frozen_and_replace():
    R, _ = _pair()
    r = R(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.a = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del r.a  # type: ignore[misc]
    assert dataclasses.replace(r, b="q") == R(1, "q") and r.b == "x"
    assert dataclasses.is_dataclass(r)


@pytest.mark.parametrize("call,needle", [
    (lambda R: R(), "missing 1 required positional argument: 'a'"),
    (lambda R: R(1, "x", (), {}, 0.0, 9), "positional arguments but 7 were given"),
    (lambda R: R(1, zz=2), "unexpected keyword argument 'zz'"),
    (lambda R: R(1, a=2), "multiple values for argument 'a'"),
])
def test_wrong_arguments_are_type_errors_like_dataclass(call, needle):
    R, R2 = _pair()
    with pytest.raises(TypeError, match=needle):
        call(R)
    with pytest.raises(TypeError, match=needle):
        call(R2)


def test_own_methods_and_post_init_are_kept():
    @record
    class S:
        a: int

        def __repr__(self) -> str:
            return "mine"

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    assert repr(S(1)) == "mine"
    with pytest.raises(ValueError):
        S(-1)


def test_field_collection_matches_dataclass():
    """The fields records collects itself: ClassVars skipped, bases first, Field defaults
    replaced on the class, and the definition errors dataclass raises."""
    @record
    class Base:
        a: int
        n: ClassVar[int] = 3

    @record
    class Sub(Base):
        b: str = "x"
        c: list[int] = field(default_factory=list)

    @dataclass(frozen=True)
    class Base2:
        a: int
        n: ClassVar[int] = 3

    @dataclass(frozen=True)
    class Sub2(Base2):
        b: str = "x"
        c: list[int] = field(default_factory=list)

    def shape(cls):
        return [(f.name, f.type, f.default, f.default_factory, f.init, f.repr, f.compare,
                 f.hash, f.kw_only, dict(f.metadata), f._field_type)
                for f in dataclasses.fields(cls)]

    assert shape(Sub) == shape(Sub2)
    assert Sub.__match_args__ == Sub2.__match_args__ == ("a", "b", "c")
    assert Sub.b == Sub2.b == "x" and not hasattr(Sub, "c") and not hasattr(Sub2, "c")
    assert Sub(1) == Sub(1, "x", []) and Sub.n == 3 and dataclasses.asdict(Sub(1)) == {
        "a": 1, "b": "x", "c": []}

    @dataclass(frozen=True)
    class Frozen(Sub):  # a frozen dataclass may extend a record, as it may a frozen dataclass
        d: int = 0

    assert Frozen(1, d=2).d == 2

    @record
    class OnDataclass(Base2):  # a dataclass base's ClassVar is not a field of the record
        b: str = "x"

    assert [f.name for f in dataclasses.fields(OnDataclass)] == ["a", "b"]
    assert OnDataclass(1) == OnDataclass(1, "x") and OnDataclass.n == 3
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        @record
        class Bad:
            a: int = 0
            b: int
    with pytest.raises(ValueError, match="mutable default"):
        @record
        class Mutable:
            a: list[int] = []  # noqa: RUF008

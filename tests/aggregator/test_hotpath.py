from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, field, replace
from typing import Any

import pytest

from aggregator.hotpath import computed_once, frozen_init


@dataclass(frozen=True)
class _Counted:
    value: int

    @computed_once
    def doubled(self) -> int:
        """Twice the value."""
        _calls.append(self.value)
        return self.value * 2


_calls: list[int] = []


def test_computed_on_first_read_only_and_per_instance() -> None:
    _calls.clear()
    first, second = _Counted(2), _Counted(5)
    assert (first.doubled, first.doubled, second.doubled) == (4, 4, 10)
    assert _calls == [2, 5]
    assert first.__dict__["doubled"] == 4


def test_the_class_attribute_is_the_descriptor_and_equality_ignores_the_cache() -> None:
    assert isinstance(_Counted.__dict__["doubled"], computed_once)
    assert _Counted.doubled.__doc__ == "Twice the value."
    read = _Counted(3)
    assert read.doubled == 6
    assert read == _Counted(3)


@frozen_init
@dataclass(frozen=True)
class _Record:
    name: str
    count: int = 3
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Plain:
    name: str
    count: int = 3
    tags: list[str] = field(default_factory=list)


def test_frozen_init_builds_what_the_dataclass_init_builds() -> None:
    cases: list[Callable[[Any], Any]] = [
        lambda cls: cls("a"), lambda cls: cls("a", 5), lambda cls: cls(name="b", tags=["x"])]
    for make in cases:
        fast, plain = make(_Record), make(_Plain)
        assert (fast.name, fast.count, fast.tags) == (plain.name, plain.count, plain.tags)
    first, second = _Record("a"), _Record("a")
    assert first == second and first.tags is not second.tags  # a fresh list each
    assert replace(first, count=9) == _Record("a", 9)
    assert pickle.loads(pickle.dumps(first)) == first
    with pytest.raises(FrozenInstanceError):
        first.name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        _Record()  # type: ignore[call-arg]


def test_frozen_init_refuses_what_it_would_get_wrong() -> None:
    @dataclass
    class Mutable:
        name: str

    @dataclass(frozen=True)
    class Checked:
        name: str

        def __post_init__(self) -> None:
            raise AssertionError("would be skipped")

    @dataclass(frozen=True, slots=True)
    class Slotted:
        name: str

    @dataclass(frozen=True)
    class Keywords:
        name: str = field(kw_only=True)

    @dataclass(frozen=True)
    class Clashing:
        _fields: int

    for cls in (Mutable, Checked, Slotted, Keywords, Clashing, int):
        with pytest.raises(TypeError):
            frozen_init(cls)


def test_frozen_init_takes_a_field_named_self_and_one_named_d() -> None:
    @frozen_init
    @dataclass(frozen=True)
    class Odd:
        self: int
        d: str = "x"

    assert (Odd(1).self, Odd(1).d, Odd(self=2, d="y").d) == (1, "x", "y")

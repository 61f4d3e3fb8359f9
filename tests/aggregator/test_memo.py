from __future__ import annotations

from dataclasses import dataclass

from aggregator.memo import computed_once


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

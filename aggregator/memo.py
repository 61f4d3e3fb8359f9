"""`computed_once`: a value computed on first read and kept in the instance's dict.

`functools.cached_property` does the same, but on Python 3.11 it takes a lock on every
first read (3.12 dropped the lock), which costs more than the SHA-256 it guards on the
node's hot path (a device record's digest, a batch's body hash: each read once or twice
per batch).  The owner must have a `__dict__` (a frozen dataclass without slots does):
the value is written there directly, so a later read finds it before this descriptor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class computed_once(Generic[T]):
    """A non-data descriptor: the first read calls `compute(instance)` and stores it."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self._compute = compute
        self._name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> computed_once[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object, owner: type | None = None) -> T | computed_once[T]:
        if instance is None:
            return self
        value = self._compute(instance)
        instance.__dict__[self._name] = value
        return value

"""Two stand-ins for standard-library conveniences that cost too much per batch on 3.11.

The node builds a handful of small immutable records for every batch it admits and
commits, and reads a hash or two off each.  These two helpers do exactly what the
standard ones do for those records, for a third to a quarter of the time:

    computed_once    for `functools.cached_property`, which on Python 3.11 takes a lock
                     on every first read (3.12 dropped it): that lock cost more than the
                     SHA-256 it guarded (a device record's digest, a batch's body hash).
                     The value is written into the instance's `__dict__`, so a later
                     read finds it there before reaching this descriptor.
    frozen_init      for the `__init__` of a frozen dataclass, which sets each field
                     through `object.__setattr__` (a call per field, ~0.15 µs each): the
                     replacement writes the fields into the instance's `__dict__`.  The
                     class stays frozen (its `__setattr__` still refuses), and keeps its
                     signature, defaults, equality, `replace()` and pickling.

Both need instances with a `__dict__` (no `__slots__`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
C = TypeVar("C", bound=type)


class computed_once(Generic[T]):  # lower case: used as a decorator, like property
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


_NO_VALUE = object()


def frozen_init(cls: C) -> C:
    """Give the frozen dataclass `cls` an `__init__` that fills `__dict__` directly.

    Generated from the fields like the dataclass's own (same parameters, defaults and
    default factories).  Refuses a class it would get wrong: not a frozen dataclass, or
    one with slots, a `__post_init__`, keyword-only or init=False fields."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    fields = dataclasses.fields(cls)
    if ("__slots__" in cls.__dict__ or hasattr(cls, "__post_init__")
            or any(f.kw_only or not f.init for f in fields)):
        raise TypeError(f"{cls.__name__}: slots, __post_init__, kw_only or init=False")
    names = {f.name for f in fields}
    if names & {"_NO_VALUE", "_fields"} or any(n.startswith(("_default_", "_factory_"))
                                               for n in names):
        raise TypeError(f"{cls.__name__}: a field name the generated __init__ uses itself")
    this = "__dataclass_self__" if "self" in names else "self"  # as dataclasses does
    scope: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    signature, body = [this], [f"    _fields = {this}.__dict__"]
    for f in fields:
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = f.default
            signature.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            signature.append(f"{f.name}=_NO_VALUE")
            body.append(f"    if {f.name} is _NO_VALUE: {f.name} = _factory_{f.name}()")
        else:
            signature.append(f.name)
        body.append(f"    _fields[{f.name!r}] = {f.name}")
    source = f"def __init__({', '.join(signature)}):\n" + "\n".join(body) + "\n"
    exec(source, scope)  # code built above from the class's own field names only
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls

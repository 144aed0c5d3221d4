"""Bases of the package's immutable dataclasses: their methods written once, here.

``@dataclass(frozen=True)`` compiles five or six methods for every class when its module is
imported (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``,
``__delattr__``): about 1 ms a class, some 20 ms of every pytest run for the classes that even a
cached rerun of one test imports. The package's own records are declared
``@dataclass(init=False, repr=False, eq=False)`` on one of these bases and write their
``__init__`` (filling the instance's ``__dict__``); the dataclass machinery then only lists the
fields, so ``dataclasses.fields``, ``replace`` and ``asdict`` work as before, and so does what
the generated methods did:

- setting or deleting an attribute raises :class:`dataclasses.FrozenInstanceError`;
- ``repr`` is ``Name(field=value, ...)`` over the fields declared with ``repr=True``;
- :class:`FrozenValue` instances are equal when they are of the same class and their
  ``compare=True`` fields are equal, and hash by those fields; :class:`Frozen` ones compare
  by identity (``eq=False``).

See ``docs/decisions.md#fixed-cost``.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from typing import Any

__all__ = ["Frozen", "FrozenValue"]


class Frozen:
    """An immutable dataclass, equal only to itself."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{type(self).__qualname__}({shown})"


class FrozenValue(Frozen):
    """An immutable dataclass, equal to another of its class with equal fields."""

    __slots__ = ()

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._compared() == other._compared()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._compared())

"""Fan-in: ``gather("stage")`` declarations and the items a gathering stage receives.

Pure data, no I/O. :func:`gather` is the default of a stage parameter; the planner turns it into
the instances it names (every instance the declarations produce, in declaration order), and
:func:`name_coords` / :func:`group_by` decide which sweep fields an item's ``.coords`` show and
how ``over=`` splits the instances into one gather per remaining point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_physpipe.frozen import FrozenValue

__all__ = ["Coord", "Gather", "Gathered", "coord_names", "gather", "group_by", "name_coords"]


@dataclass(init=False, repr=False, eq=False)
class Gather(FrozenValue):
    """What ``gather(...)`` declared: the stage to gather, and the fields to gather along."""

    stage: str
    over: tuple[str, ...] | None = None

    def __init__(self, stage: str, over: tuple[str, ...] | None = None) -> None:
        self.__dict__.update(stage=stage, over=over)  # see pytest_physpipe.frozen

    def __repr__(self) -> str:
        over = "" if self.over is None else f", over={list(self.over)!r}"
        return f"gather({self.stage!r}{over})"


def gather(stage: str, *, over: Sequence[str] | None = None) -> Any:
    """Default of a stage parameter that receives every instance of ``stage``.

    ``def convergence(errors=gather("error"))``: ``errors`` is a tuple of :class:`Gathered`
    items (``.coords``, ``.value``, ``.key``) in declaration order. With ``over=["level"]`` the
    stage gathers along ``level`` only and fans out over the other sweep fields.
    """
    if not isinstance(stage, str) or not stage.isidentifier():
        raise TypeError(f"gather() takes the name of a stage, got {stage!r}")
    if over is not None:
        if isinstance(over, str) or not all(isinstance(f, str) for f in over):
            raise TypeError(f"gather({stage!r}, over=...) takes a list of field names")
        return Gather(stage, tuple(over))
    return Gather(stage)


@dataclass(init=False, repr=False, eq=False)
class Gathered(FrozenValue):
    """One gathered instance: its sweep coordinates, its value (as stored), its key.

    Immutable; equal to another with equal fields; its ``repr`` leaves the value out.
    """

    coords: Mapping[str, Any]
    value: Any = field(repr=False)
    key: str

    def __init__(self, coords: Mapping[str, Any], value: Any, key: str) -> None:
        self.__dict__.update(coords=coords, value=value, key=key)  # see pytest_physpipe.frozen


#: A coordinate before naming: (stage name, field name).
Coord = tuple[str, str]


def _varying(points: Sequence[Mapping[Coord, Any]]) -> list[Coord]:
    order: list[Coord] = []
    for point in points:
        order.extend(c for c in point if c not in order)
    return [c for c in order if len({repr(p.get(c)) for p in points}) > 1]


def coord_names(points: Sequence[Mapping[Coord, Any]]) -> dict[Coord, str]:
    """The fields that vary across ``points``, each with its name: the field's, or
    ``stage.field`` where two varying fields share a name."""
    varying = _varying(points)
    counts: dict[str, int] = {}
    for _stage, name in varying:
        counts[name] = counts.get(name, 0) + 1
    return {c: c[1] if counts[c[1]] == 1 else f"{c[0]}.{c[1]}" for c in varying}


def name_coords(points: Sequence[Mapping[Coord, Any]]) -> list[dict[str, Any]]:
    """Per point, the fields that vary across ``points``, named as :func:`coord_names` says."""
    names = coord_names(points)
    return [{name: p[c] for c, name in names.items() if c in p} for p in points]


def group_by(
    coords: Sequence[Mapping[str, Any]], over: Iterable[str] | None
) -> list[tuple[dict[str, Any], list[int]]]:
    """Split points into gathers: along ``over`` (all fields when ``None``), one gather per
    value of the remaining fields, in order of first appearance. Each group: (its fixed
    coordinates, the indices of its points)."""
    if over is None:
        return [({}, list(range(len(coords))))]
    along = set(over)
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for index, point in enumerate(coords):
        fixed = {k: v for k, v in point.items() if k not in along}
        groups.setdefault(repr(sorted(fixed.items())), (fixed, []))[1].append(index)
    return list(groups.values())

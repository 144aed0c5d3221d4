"""Element-by-element comparison of two arrays of the same shape: which elements fail, and how.

Pure numpy, no I/O; :mod:`pytest_physpipe.tolerance` builds its array leaves on it. Guarantees:

* memory stays bounded: arrays are compared in blocks of ``BLOCK`` elements, so checking a
  gigabyte golden needs megabytes of scratch memory, and identical blocks cost one equality pass;
* the report counts every failing element and keeps the ``WORST_SHOWN`` worst ones (largest
  error relative to its allowance; a NaN where a number was expected ranks first) with their
  indices, plus the largest absolute and relative error among the failing elements. Exact
  comparisons (integers, strings, ...) keep the first differing elements instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BLOCK",
    "WORST_SHOWN",
    "ArrayDiff",
    "Element",
    "close_elements",
    "failing_mask",
    "unequal_elements",
]

#: Elements per comparison block: the temporaries stay in cache.
BLOCK = 1 << 18
#: How many failing elements a report lists.
WORST_SHOWN = 10


@dataclass(frozen=True)
class Element:
    """One failing element: where it is, both values, and its errors (None when exact)."""

    index: tuple[int, ...]
    expected: object
    actual: object
    abs_err: float | None = None
    rel_err: float | None = None


@dataclass(frozen=True)
class ArrayDiff:
    """How two arrays differ: ``failing`` of ``size`` elements; the listed ones worst first."""

    failing: int
    size: int
    elements: tuple[Element, ...]
    max_abs_err: float | None = None
    max_rel_err: float | None = None


def _unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape)) if shape else ()


def _block_outside(
    ew: np.ndarray, aw: np.ndarray, rtol: float, atol: float, equal_nan: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one block: indices outside tolerance, how far outside (error/bound), and the errors."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(aw - ew)
        bound = np.abs(ew)
        bound *= rtol
        bound += atol
        ok = diff <= bound  # a NaN on either side is False here
        nonfinite = ~np.isfinite(ew)
        if nonfinite.any():
            # An infinite golden has an infinite bound: infinities pass only by equality
            # (inf - inf is NaN, but inf == inf), NaN goldens only as NaN with equal_nan.
            ok &= ~nonfinite
            ok |= ew == aw
            if equal_nan:
                ok |= np.isnan(ew) & np.isnan(aw)
        bad = np.flatnonzero(~ok)
        errors = diff[bad]
        excess = errors / bound[bad]
    # A NaN error (NaN on one side) is the worst kind of failure; rank it first.
    return bad, np.where(np.isnan(excess), np.inf, excess), errors


def _rel(abs_err: float, expected: float) -> float:
    if math.isnan(abs_err):
        return math.nan
    return abs_err / abs(expected) if expected != 0 else (0.0 if abs_err == 0 else math.inf)


def _nanmax(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else None


def close_elements(
    e: np.ndarray, a: np.ndarray, rtol: float, atol: float, equal_nan: bool
) -> ArrayDiff | None:
    """Float/complex arrays of one shape: None when every element is within tolerance."""
    # float16/float32 are widened so the bound itself is not rounded; long double stays.
    work = np.result_type(e.dtype, np.float64)
    flat_e, flat_a = e.reshape(-1), a.reshape(-1)
    failing = 0
    worst: list[tuple[float, int]] = []  # (excess, flat index), at most WORST_SHOWN
    max_abs: list[float] = []
    max_rel: list[float] = []
    for start in range(0, flat_e.size, BLOCK):
        eb, ab = flat_e[start : start + BLOCK], flat_a[start : start + BLOCK]
        if np.array_equal(eb, ab):  # the common case in a regression suite: one cheap pass
            continue
        ew = np.asarray(eb, dtype=work)
        bad, excess, errors = _block_outside(ew, np.asarray(ab, dtype=work), rtol, atol, equal_nan)
        if not bad.size:
            continue
        failing += int(bad.size)
        top = np.argsort(-excess, kind="stable")[:WORST_SHOWN]
        worst = sorted(
            [*worst, *((float(excess[i]), start + int(bad[i])) for i in top)],
            key=lambda pair: (-pair[0], pair[1]),
        )[:WORST_SHOWN]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            finite = errors[~np.isnan(errors)]
            if finite.size:
                max_abs.append(float(finite.max()))
                scale = np.abs(ew[bad])[~np.isnan(errors)]
                rel = np.where(scale > 0, finite / np.where(scale > 0, scale, 1), np.inf)
                rel[(scale == 0) & (finite == 0)] = 0.0
                max_rel.append(float(rel.max()))
    if not failing:
        return None
    elements = []
    for _, flat in worst:
        e_val, a_val = flat_e[flat], flat_a[flat]
        if np.isnan(e_val) or np.isnan(a_val):
            abs_err = math.nan
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                abs_err = float(np.abs(np.asarray(a_val, work) - np.asarray(e_val, work)))
        rel_err = _rel(abs_err, float(np.abs(e_val)))
        elements.append(Element(_unravel(flat, e.shape), e_val, a_val, abs_err, rel_err))
    return ArrayDiff(failing, int(e.size), tuple(elements), _nanmax(max_abs), _nanmax(max_rel))


def unequal_elements(e: np.ndarray, a: np.ndarray) -> ArrayDiff | None:
    """Arrays compared exactly (integers, strings, ...): None when equal; else the first ones."""
    flat_e, flat_a = e.reshape(-1), a.reshape(-1)
    failing = 0
    first: list[int] = []
    for start in range(0, flat_e.size, BLOCK):
        eb, ab = flat_e[start : start + BLOCK], flat_a[start : start + BLOCK]
        differ = np.asarray(eb != ab)
        if e.dtype.kind in "Mm":  # NaT != NaT, like NaN; a missing time in both is no change
            differ &= ~(np.isnat(eb) & np.isnat(ab))
        bad = np.flatnonzero(differ)
        failing += int(bad.size)
        first.extend(start + int(i) for i in bad[: WORST_SHOWN - len(first)])
    if not failing:
        return None
    elements = tuple(Element(_unravel(i, e.shape), flat_e[i], flat_a[i]) for i in first)
    return ArrayDiff(failing, int(e.size), elements)


def failing_mask(
    e: np.ndarray, a: np.ndarray, tolerance: tuple[float, float, bool] | None
) -> np.ndarray:
    """Which elements of two same-shape arrays fail: outside ``(rtol, atol, equal_nan)`` for
    float/complex arrays, different when ``tolerance`` is None (compared exactly).

    The same rule as :func:`close_elements` and :func:`unequal_elements`, element by element:
    an update keeps the golden value of every element this mask leaves False.
    """
    mask = np.zeros(e.size, dtype=bool)
    flat_e, flat_a = e.reshape(-1), a.reshape(-1)
    for start in range(0, flat_e.size, BLOCK):
        eb, ab = flat_e[start : start + BLOCK], flat_a[start : start + BLOCK]
        if tolerance is None or e.dtype.kind not in "fc":
            differ = np.asarray(eb != ab)
            if e.dtype.kind in "Mm":
                differ &= ~(np.isnat(eb) & np.isnat(ab))
            mask[start : start + eb.size] = differ
            continue
        if np.array_equal(eb, ab):
            continue
        work = np.result_type(e.dtype, np.float64)
        rtol, atol, equal_nan = tolerance
        bad, _, _ = _block_outside(
            np.asarray(eb, dtype=work), np.asarray(ab, dtype=work), rtol, atol, equal_nan
        )
        mask[start + bad] = True
    return mask.reshape(e.shape)


def same_dtype(expected: np.dtype[Any], actual: np.dtype[Any]) -> bool:
    """Whether two arrays' dtypes count as the same for a golden comparison.

    Byte order does not count (a golden read on another machine may be big-endian), and neither
    does the length of string dtypes (``<U5`` vs ``<U7`` is a data change, not a type change).
    """
    if expected.kind in "US" or actual.kind in "US":
        return expected.kind == actual.kind
    return bool(expected.newbyteorder("=") == actual.newbyteorder("="))

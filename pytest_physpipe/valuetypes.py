"""The compound values a physicist compares, reduced to arrays: tables, masked arrays, long lists.

Pure and import-free beyond numpy: pandas is never imported here; a pandas object is
recognised by its class and read through its public methods. Each adapter either returns the
canonical form :mod:`pytest_physpipe.tolerance` compares, or raises ``TypeError`` saying what
to convert the value to.

* A pandas ``DataFrame`` or ``Series`` becomes a :class:`Frame`: its index and each column as a
  numpy array, columns by label (their order does not count), so each column compares with
  its own tolerance (``tolerances={"T [K]": {"rtol": 1e-6}}``).
* A ``numpy.ma.MaskedArray`` becomes a :class:`Masked`: the mask, compared exactly, and the data
  with masked elements set to zero, since what a mask hides is not a result.
* A ``numpy.matrix`` becomes its 2-D ndarray.
* A list or tuple of more than ``LONG_SEQUENCE`` numbers becomes a float64 array (int64 when
  all are ints): compared in one vectorised pass and stored compactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LONG_SEQUENCE", "Frame", "Masked", "as_frame", "as_masked", "numeric_sequence"]

#: Lists and tuples of numbers longer than this compare (and are stored) as arrays.
LONG_SEQUENCE = 64


@dataclass(frozen=True, eq=False)
class Frame:
    """A pandas table as compared: ``kind`` is "DataFrame" or "Series"."""

    kind: str
    index: np.ndarray
    columns: dict[object, np.ndarray]


@dataclass(frozen=True, eq=False)
class Masked:
    """A masked array as compared: data (masked elements zeroed) and mask."""

    data: np.ndarray
    mask: np.ndarray


def _pandas_class(value: object) -> str | None:
    for klass in type(value).__mro__:
        if klass.__module__.split(".")[0] == "pandas" and klass.__name__ in (
            "DataFrame",
            "Series",
        ):
            return klass.__name__
    return None


def _column_array(column: object, what: str) -> np.ndarray:
    if getattr(column, "nlevels", 1) > 1:
        raise TypeError(
            f"{what} is a MultiIndex: flatten it first (reset_index() or to_flat_index())"
        )
    array = np.asarray(column.to_numpy())  # type: ignore[attr-defined]
    if array.dtype.hasobject:
        items = array.tolist()
        if all(isinstance(item, str) for item in items):
            return np.array(items, dtype=str) if items else np.array([], dtype="<U1")
        dtype = getattr(column, "dtype", array.dtype)
        raise TypeError(
            f"{what} holds Python objects (dtype {dtype}), which a golden cannot store: convert "
            "it to a numeric, string or datetime64 dtype (nullable integers with missing "
            "values: .astype(float))"
        )
    return array


def as_frame(value: object) -> Frame | None:
    """The :class:`Frame` of a pandas DataFrame or Series, None for anything else."""
    kind = _pandas_class(value)
    if kind is None:
        return None
    index = _column_array(value.index, "the index")  # type: ignore[attr-defined]
    if kind == "Series":
        name = value.name  # type: ignore[attr-defined]
        label = "values" if name is None else name
        return Frame(kind, index, {label: _column_array(value, f"the Series {label!r}")})
    columns = value.columns  # type: ignore[attr-defined]
    if columns.nlevels > 1:
        raise TypeError("the DataFrame has MultiIndex columns: flatten them first")
    if not columns.is_unique:
        raise TypeError("the DataFrame has duplicate column labels: make them unique first")
    return Frame(
        kind,
        index,
        {
            (label.item() if isinstance(label, np.generic) else label): _column_array(
                value[label],  # type: ignore[index]
                f"column {label!r}",
            )
            for label in columns
        },
    )


def as_masked(value: object) -> Masked | None:
    """The :class:`Masked` form of a ``numpy.ma.MaskedArray``, None for anything else."""
    if not isinstance(value, np.ma.MaskedArray):
        return None
    if value.dtype.names is not None:
        raise TypeError("a masked structured array cannot be stored; compare its fields one by one")
    mask = np.ma.getmaskarray(value)
    data = np.array(np.ma.getdata(value), copy=True)
    data[mask] = np.zeros((), dtype=data.dtype)
    return Masked(data, mask)


def numeric_sequence(items: Sequence[object]) -> np.ndarray | None:
    """A long list or tuple of numbers as a 1-d float64 (or int64) array; None otherwise.

    numpy's own conversion decides, in one pass in C: floats (ints mixed in included) give
    float64, ints alone int64; anything else (strings, None, nested or ragged items, integers
    beyond int64) is not a list of numbers and stays a list.
    """
    if len(items) <= LONG_SEQUENCE or type(items[0]) not in (float, int, np.float64):
        return None
    try:
        array = np.asarray(items)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.ndim != 1 or array.dtype not in (np.dtype(np.float64), np.dtype(np.int64)):
        return None
    return array

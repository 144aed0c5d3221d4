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
* A list or tuple of more than ``LONG_SEQUENCE`` floats becomes a float64 array (of ints, an
  int64 array): compared in one vectorised pass and stored compactly.

:func:`view` classifies any value for the comparison and returns it in canonical form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "KIND_NAMES",
    "LONG_SEQUENCE",
    "Frame",
    "Kind",
    "Masked",
    "as_frame",
    "as_masked",
    "numeric_sequence",
    "view",
]

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


def numeric_sequence(
    items: Sequence[object], longer_than: int = LONG_SEQUENCE
) -> np.ndarray | None:
    """A list or tuple of numbers as a 1-d float64 (or int64) array; None otherwise.

    Only lists longer than ``longer_than`` whose items are all floats (float64 array) or all
    ints (int64 array) qualify: a list compares as its array only where that changes nothing, so
    an int among floats or a bool among ints stays the type difference it is in a short list.
    Anything else (strings, None, nested items, integers beyond int64) stays a list.
    """
    if len(items) <= max(longer_than, 0) or not items:
        return None
    kinds = set(map(type, items))
    if kinds <= {float, np.float64}:
        dtype: type = np.float64
    elif kinds == {int}:
        dtype = np.int64
    else:
        return None
    try:
        return np.asarray(items, dtype=dtype)
    except OverflowError:
        return None


# -- how the comparison sees a value ----------------------------------------------------------

Kind = Literal[
    "mapping",
    "sequence",
    "array",
    "frame",
    "masked",
    "bool",
    "int",
    "float",
    "complex",
    "str",
    "bytes",
    "none",
]

KIND_NAMES: dict[str, str] = {
    "mapping": "a mapping",
    "sequence": "a list/tuple",
    "array": "an array",
    "frame": "a pandas table",
    "masked": "a masked array",
    "bool": "a bool",
    "int": "an integer",
    "float": "a float",
    "complex": "a complex number",
    "str": "a string",
    "bytes": "bytes",
    "none": "None",
}


def view(value: object) -> tuple[Kind, Any]:
    """Classify a value for comparison and return it in canonical form.

    Mappings, pydantic models and dataclass instances become ``("mapping", dict)``; lists and
    tuples ``("sequence", list)``, except long ones of numbers, which become arrays; numpy
    scalars and 0-d arrays the matching Python scalar, except those no Python scalar holds
    exactly (long double, datetimes, structured), which become 0-d arrays; pandas tables
    ``("frame", Frame)``, masked arrays ``("masked", Masked)``, ``np.matrix`` an ndarray
    (:mod:`pytest_physpipe.valuetypes`).
    Anything else raises ``TypeError``.
    """
    if value is None:
        return "none", None
    if isinstance(value, (bool, np.bool_)):
        return "bool", bool(value)
    if isinstance(value, (int, np.integer)):
        return "int", int(value)
    if isinstance(value, np.ndarray):
        masked = as_masked(value)
        if masked is not None:
            return "masked", masked
        if type(value) is not np.ndarray:  # np.matrix and other subclasses: the plain array
            value = np.asarray(value)
        if value.ndim == 0 and not value.dtype.hasobject:
            # numpy hands out 0-d arrays and scalars interchangeably (``a.sum()`` vs
            # ``np.asarray(x)``); both mean one number, so both compare as one.
            return view(value[()])
        return "array", value
    if isinstance(value, np.generic):
        if isinstance(value, np.floating) and value.dtype.itemsize <= 8:
            return "float", float(value)
        if isinstance(value, np.complexfloating) and value.dtype.itemsize <= 16:
            return "complex", complex(value)
        if isinstance(value, np.str_):
            return "str", str(value)
        if isinstance(value, np.bytes_):
            return "bytes", bytes(value)
        return "array", np.asarray(value)
    if isinstance(value, float):
        return "float", value
    if isinstance(value, complex):
        return "complex", value
    if isinstance(value, str):
        return "str", value
    if isinstance(value, (bytes, bytearray)):
        return "bytes", bytes(value)
    if isinstance(value, Mapping):
        return "mapping", dict(value)
    if isinstance(value, (list, tuple)):
        array = numeric_sequence(value)
        if array is not None:
            return "array", array
        return "sequence", list(value)
    if isinstance(value, (Frame, Masked)):
        return ("frame" if isinstance(value, Frame) else "masked"), value
    frame = as_frame(value)
    if frame is not None:
        return "frame", frame
    fields = getattr(type(value), "model_fields", None)  # a pydantic v2 model
    if isinstance(fields, Mapping) and hasattr(value, "model_dump"):
        # getattr, not model_dump(): model_dump would turn nested models into dicts but
        # would also copy arrays held with arbitrary_types_allowed; we want them as they are.
        return "mapping", {name: getattr(value, name) for name in fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "mapping", {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(
        f"cannot compare a {type(value).__module__}.{type(value).__qualname__}: use numbers, "
        "strings, None, numpy arrays (masked and structured too), pandas DataFrames/Series, or "
        "dicts/lists/tuples/pydantic models/dataclasses of them"
    )

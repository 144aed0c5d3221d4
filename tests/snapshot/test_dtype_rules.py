"""The dtype rules of docs/snapshots.md, over every path a value can take to a golden.

Each case is a golden and a result that differ only in dtype (or shape); each path wraps them
the way a user's value reaches the comparison: a scalar, inline and sidecar arrays, a long list,
a pandas column, the data of a masked array, a field of a structured array, a nested dict. The
golden goes through the real encoder, the JSON text and the decoder (with its sidecars) before it
is compared, so the storage of each path is part of the rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_physpipe.snapshot.document import emit
from pytest_physpipe.snapshot.encoding import Decoder, Encoder
from pytest_physpipe.snapshot.files import sidecar_loader
from pytest_physpipe.tolerance import Tolerance, compare

pd = pytest.importorskip("pandas")

F = [0.5, 1.5, -2.0, 4.0, 0.25, 8.0, 3.0, -1.0]  # exact in every float width
N = [1, 0, 3, 7, 2, 5, 1, 0]

#: name: (golden, result, verdict for arrays, verdict for numbers outside arrays). A number
#: outside an array (a scalar, an item of a list) has no width: it is a Python int, float or
#: complex, so only its kind counts.
CASES: dict[str, tuple[np.ndarray, np.ndarray, bool, bool]] = {
    "float64 same": (np.array(F), np.array(F), True, True),
    "float64 within tolerance": (np.array(F), np.array(F) * (1 + 1e-12), True, True),
    "float64 outside tolerance": (np.array(F), np.array(F) * (1 + 1e-6), False, False),
    "float64 -> float32": (np.array(F), np.array(F, dtype=np.float32), False, True),
    "float32 -> float16": (
        np.array(F, dtype=np.float32),
        np.array(F, dtype=np.float16),
        False,
        True,
    ),
    "int64 -> float64": (np.array(N), np.array(N, dtype=float), False, False),
    "float64 -> int64": (np.array(N, dtype=float), np.array(N), False, False),
    "int64 -> int32": (np.array(N), np.array(N, dtype=np.int32), False, True),
    "int64 -> uint8": (np.array(N), np.array(N, dtype=np.uint8), False, True),
    "bool -> int64": (np.array(N, dtype=bool), np.array(N, dtype=bool).astype(int), False, False),
    "bool same": (np.array(N, dtype=bool), np.array(N, dtype=bool), True, True),
    "complex128 -> float64": (np.array(F, dtype=complex), np.array(F), False, False),
    "complex128 -> complex64": (
        np.array(F, dtype=complex),
        np.array(F, dtype=np.complex64),
        False,
        True,
    ),
    "complex128 within tolerance": (
        np.array(F, dtype=complex) * 1j,
        np.array(F, dtype=complex) * 1j * (1 + 1e-12),
        True,
        True,
    ),
    "str width": (
        np.array(["ab", "c"] * 4, dtype="<U2"),
        np.array(["ab", "c"] * 4, dtype="<U7"),
        True,
        True,
    ),
    "str changed": (np.array(["ab", "c"] * 4), np.array(["xb", "c"] * 4), False, False),
    "str -> bytes": (np.array(["ab"] * 8), np.array([b"ab"] * 8), False, False),
    "byte order": (np.array(F, dtype="<f8"), np.array(F, dtype=">f8"), True, True),
    "datetime64 same": (
        np.arange(8).astype("datetime64[s]"),
        np.arange(8).astype("datetime64[s]"),
        True,
        True,
    ),
    "datetime64 unit": (
        np.arange(8).astype("datetime64[s]"),
        np.arange(8).astype("datetime64[s]").astype("datetime64[ms]"),
        False,
        False,
    ),
    "shape": (np.array(F), np.array(F[:7]), False, False),
}

Wrap = Callable[[np.ndarray], object]


def _frame(a: np.ndarray) -> object:
    return pd.DataFrame({"c": a})


def _structured(a: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape, dtype=[("n", "i8"), ("c", a.dtype)])
    out["c"] = a
    return out


#: name: (wrap, inline_max for the golden, holds the dtype, accepts this case)
PATHS: dict[str, tuple[Wrap, int, bool, Callable[[np.ndarray], bool]]] = {
    "scalar": (lambda a: a[0] if a.size == 8 else a, 64, False, lambda a: True),
    "nested scalar": (
        lambda a: {"x": {"y": a[0] if a.size == 8 else a}},
        64,
        False,
        lambda a: True,
    ),
    "inline array": (lambda a: a, 64, True, lambda a: True),
    "sidecar array": (lambda a: a, 0, True, lambda a: True),
    "nested array": (lambda a: {"x": [{"y": a}]}, 64, True, lambda a: True),
    "long list": (
        lambda a: np.resize(a, 100 if a.size == 8 else 99).tolist(),
        64,
        False,
        lambda a: a.dtype.kind != "M",  # datetime64 items are not numbers
    ),
    # pandas keeps bytes as Python objects (refused), and big-endian data as it is.
    "pandas column": (_frame, 64, True, lambda a: a.dtype.byteorder != ">" and a.dtype.kind != "S"),
    "masked data": (lambda a: np.ma.array(a, mask=[False] * a.size), 64, True, lambda a: True),
    "structured field": (_structured, 64, True, lambda a: True),
}


def _golden(value: object, inline_max: int, tmp_path: Path) -> object:
    encoder = Encoder(inline_max=inline_max)
    node = json.loads(emit(encoder.encode(value, "")))
    for name, array in encoder.sidecars.items():
        np.save(tmp_path / name, array, allow_pickle=False)
    return Decoder(sidecar_loader(tmp_path)).decode(node)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("path", list(PATHS))
def test_dtype_rules_hold_on_every_path(path: str, case: str, tmp_path: Path) -> None:
    golden, result, array_verdict, number_verdict = CASES[case]
    wrap, inline_max, holds_dtype, accepts = PATHS[path]
    if not (accepts(golden) and accepts(result)):
        pytest.skip(f"{path} cannot hold {golden.dtype}/{result.dtype}")
    expected = array_verdict if holds_dtype else number_verdict
    stored = _golden(wrap(golden), inline_max, tmp_path)
    comparison = compare(stored, wrap(result), Tolerance(rtol=1e-9, atol=0.0))
    assert comparison.ok is expected, "\n".join(comparison.describe())


def test_a_list_and_an_array_of_the_same_numbers_are_the_same_value(tmp_path: Path) -> None:
    for n in (3, 100):  # below and above the length at which lists are stored as arrays
        floats = [0.5 * i for i in range(n)]
        assert compare(_golden(floats, 64, tmp_path), np.array(floats)).ok
        assert compare(_golden(np.array(floats), 64, tmp_path), floats).ok
        assert not compare(_golden(floats, 64, tmp_path), np.array(floats, np.float32)).ok
        ints = list(range(n))
        assert not compare(_golden(ints, 64, tmp_path), np.array(ints, dtype=float)).ok


def test_a_long_list_keeps_the_kind_of_each_item(tmp_path: Path) -> None:
    floats = [0.5 * i for i in range(100)]
    # An int among floats, a bool among ints: a type difference, as in a short list.
    result = [*floats[:99], 49]
    comparison = compare(_golden(floats, 64, tmp_path), result)
    assert [d.path for d in comparison.differences] == ["[99]"]
    ints = list(range(100))
    comparison = compare(_golden(ints, 64, tmp_path), [True, *ints[1:]])
    assert [d.path for d in comparison.differences] == ["[0]"]

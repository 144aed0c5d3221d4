"""Semantic cases shared with pytest-regressions: a golden, a new result, and which tool checks it.

Each case is ``name -> (tool, golden, actual)``; ``tool`` is the pytest-regressions fixture
(``ndarrays``, ``num`` or ``data``) whose verdict physics_snapshot's is compared with, both at
``TOL`` (data_regression has no tolerance: it compares YAML text). ``INTENDED`` lists the
cases where physics_snapshot decides differently on purpose, with the reason.

This file is written beside a generated test module by test_regressions_parity.py: it imports
only numpy and pandas.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TOL = {"rtol": 1e-6, "atol": 1e-12}

Value = Callable[[], object]
CASES: dict[str, tuple[str, Value, Value]] = {}


def case(name: str, tool: str, golden: Value, actual: Value) -> None:
    CASES[name] = (tool, golden, actual)


def rng_array(n: int = 100, dtype: str = "f8") -> np.ndarray:
    return np.random.default_rng(7).standard_normal(n).astype(dtype)


def _wrap(make: Callable[[], np.ndarray]) -> Value:
    return lambda: {"a": make()}


# -- ndarrays_regression: dicts of arrays ----------------------------------------------------------

_ARRAYS: dict[str, Callable[[], np.ndarray]] = {
    "f8": rng_array,
    "f8_2d": lambda: rng_array(120).reshape(20, 6),
    "f4": lambda: rng_array(50, "f4"),
    "c16": lambda: rng_array(40) + 1j * rng_array(40)[::-1],
    "i8": lambda: np.arange(-30, 30, dtype="i8"),
    "u1": lambda: np.arange(200, dtype="u1"),
    "bool": lambda: np.arange(30) % 3 == 0,
    "str": lambda: np.array(["ab", "cd", "ef"]),
}


def _scaled(make: Callable[[], np.ndarray], factor: float) -> Callable[[], dict[str, np.ndarray]]:
    def value() -> dict[str, np.ndarray]:
        a = make()
        return {"a": (a * np.asarray(factor, dtype=a.dtype)).astype(a.dtype)}

    return value


for _kind in ("f8", "f8_2d", "f4", "c16"):
    _make = _ARRAYS[_kind]
    case(f"nd-{_kind}-identical", "ndarrays", _scaled(_make, 1.0), _scaled(_make, 1.0))
    case(f"nd-{_kind}-within-rtol", "ndarrays", _scaled(_make, 1.0), _scaled(_make, 1 + 1e-7))
    case(f"nd-{_kind}-outside-rtol", "ndarrays", _scaled(_make, 1.0), _scaled(_make, 1 + 1e-4))
    case(f"nd-{_kind}-sign-flip", "ndarrays", _scaled(_make, 1.0), _scaled(_make, -1.0))
for _kind in ("i8", "u1", "bool", "str"):
    _make = _ARRAYS[_kind]
    case(f"nd-{_kind}-identical", "ndarrays", _wrap(_make), _wrap(_make))


def _poke(make: Callable[[], np.ndarray], index: int, value: object) -> Value:
    def actual() -> dict[str, np.ndarray]:
        a = make().copy()
        a.flat[index] = value
        return {"a": a}

    return actual


for _kind, _new in (("i8", 99), ("u1", 7), ("bool", True), ("str", "zz")):
    _make = _ARRAYS[_kind]
    case(
        f"nd-{_kind}-one-element-differs",
        "ndarrays",
        _wrap(_make),
        _poke(_make, 1, _new),
    )

_f8 = _ARRAYS["f8"]
case("nd-f8-one-element-outside", "ndarrays", lambda: {"a": _f8()}, _poke(_f8, 17, 5.0))
case("nd-f8-nan-both", "ndarrays", _poke(_f8, 3, np.nan), _poke(_f8, 3, np.nan))
case("nd-f8-nan-appears", "ndarrays", lambda: {"a": _f8()}, _poke(_f8, 3, np.nan))
case("nd-f8-nan-disappears", "ndarrays", _poke(_f8, 3, np.nan), lambda: {"a": _f8()})
case("nd-f8-inf-both", "ndarrays", _poke(_f8, 3, np.inf), _poke(_f8, 3, np.inf))
case("nd-f8-inf-sign", "ndarrays", _poke(_f8, 3, np.inf), _poke(_f8, 3, -np.inf))
case("nd-f8-inf-appears", "ndarrays", lambda: {"a": _f8()}, _poke(_f8, 3, np.inf))
case(
    "nd-zeros-within-atol",
    "ndarrays",
    lambda: {"a": np.zeros(10)},
    lambda: {"a": np.full(10, 1e-13)},
)
case(
    "nd-zeros-outside-atol",
    "ndarrays",
    lambda: {"a": np.zeros(10)},
    lambda: {"a": np.full(10, 1e-9)},
)
case("nd-shape-1d-longer", "ndarrays", lambda: {"a": np.zeros(10)}, lambda: {"a": np.zeros(11)})
case("nd-shape-reshaped", "ndarrays", lambda: {"a": np.zeros(12)}, lambda: {"a": np.zeros((3, 4))})
case(
    "nd-shape-transposed",
    "ndarrays",
    lambda: {"a": np.zeros((3, 4))},
    lambda: {"a": np.zeros((4, 3))},
)
case("nd-dtype-f8-to-f4", "ndarrays", lambda: {"a": np.ones(5)}, lambda: {"a": np.ones(5, "f4")})
case("nd-dtype-f8-to-i8", "ndarrays", lambda: {"a": np.ones(5)}, lambda: {"a": np.ones(5, "i8")})
case(
    "nd-dtype-i8-to-i4",
    "ndarrays",
    lambda: {"a": np.ones(5, "i8")},
    lambda: {"a": np.ones(5, "i4")},
)
case("nd-dtype-str-to-f8", "ndarrays", lambda: {"a": np.array(["1"])}, lambda: {"a": np.ones(1)})
case("nd-str-longer", "ndarrays", lambda: {"a": np.array(["ab"])}, lambda: {"a": np.array(["abc"])})
case(
    "nd-key-added",
    "ndarrays",
    lambda: {"a": np.ones(3)},
    lambda: {"a": np.ones(3), "b": np.ones(3)},
)
case(
    "nd-key-removed",
    "ndarrays",
    lambda: {"a": np.ones(3), "b": np.ones(3)},
    lambda: {"a": np.ones(3)},
)
case("nd-key-renamed", "ndarrays", lambda: {"a": np.ones(3)}, lambda: {"b": np.ones(3)})
case(
    "nd-two-keys-one-changes",
    "ndarrays",
    lambda: {"a": np.ones(3), "b": np.ones(3)},
    lambda: {"a": np.ones(3), "b": np.full(3, 2.0)},
)
case("nd-empty-identical", "ndarrays", lambda: {"a": np.zeros(0)}, lambda: {"a": np.zeros(0)})
case("nd-empty-becomes-one", "ndarrays", lambda: {"a": np.zeros(0)}, lambda: {"a": np.zeros(1)})
case(
    "nd-scalar-array",
    "ndarrays",
    lambda: {"a": np.array([2.5])},
    lambda: {"a": np.array([2.5 * (1 + 1e-9)])},
)
case(
    "nd-large-identical",
    "ndarrays",
    lambda: {"a": rng_array(100_000)},
    lambda: {"a": rng_array(100_000)},
)
case(
    "nd-large-one-outside",
    "ndarrays",
    lambda: {"a": rng_array(100_000)},
    lambda: {"a": np.where(np.arange(100_000) == 99_999, 9.0, rng_array(100_000))},
)
case(
    "nd-3d-identical",
    "ndarrays",
    lambda: {"a": rng_array(60).reshape(3, 4, 5)},
    lambda: {"a": rng_array(60).reshape(3, 4, 5)},
)
case(
    "nd-3d-within",
    "ndarrays",
    lambda: {"a": rng_array(60).reshape(3, 4, 5)},
    lambda: {"a": rng_array(60).reshape(3, 4, 5) * (1 + 1e-8)},
)

# -- num_regression: dicts of 1-d columns of one length -------------------------------------------


def _COL() -> np.ndarray:
    return np.linspace(0.5, 2.0, 30)


case("num-identical", "num", lambda: {"x": _COL()}, lambda: {"x": _COL()})
case("num-within-rtol", "num", lambda: {"x": _COL()}, lambda: {"x": _COL() * (1 + 1e-7)})
case("num-outside-rtol", "num", lambda: {"x": _COL()}, lambda: {"x": _COL() * (1 + 1e-4)})
case(
    "num-one-value-outside",
    "num",
    lambda: {"x": _COL()},
    lambda: {"x": np.where(np.arange(30) == 4, 9.0, _COL())},
)
case(
    "num-nan-both",
    "num",
    lambda: {"x": np.array([1.0, np.nan])},
    lambda: {"x": np.array([1.0, np.nan])},
)
case(
    "num-nan-appears",
    "num",
    lambda: {"x": np.array([1.0, 2.0])},
    lambda: {"x": np.array([1.0, np.nan])},
)
case("num-int-identical", "num", lambda: {"n": np.arange(5)}, lambda: {"n": np.arange(5)})
case("num-int-differs", "num", lambda: {"n": np.arange(5)}, lambda: {"n": np.arange(1, 6)})
case(
    "num-two-columns-one-changes",
    "num",
    lambda: {"x": _COL(), "y": _COL()},
    lambda: {"x": _COL(), "y": _COL() + 1},
)
case("num-column-added", "num", lambda: {"x": _COL()}, lambda: {"x": _COL(), "y": _COL()})
case("num-column-removed", "num", lambda: {"x": _COL(), "y": _COL()}, lambda: {"x": _COL()})
case("num-longer", "num", lambda: {"x": _COL()}, lambda: {"x": np.linspace(0.5, 2.0, 31)})
case("num-shorter", "num", lambda: {"x": _COL()}, lambda: {"x": _COL()[:-1]})
case("num-zeros-within-atol", "num", lambda: {"x": np.zeros(4)}, lambda: {"x": np.full(4, 1e-13)})
case("num-zeros-outside-atol", "num", lambda: {"x": np.zeros(4)}, lambda: {"x": np.full(4, 1e-6)})
case("num-float-to-int", "num", lambda: {"x": np.ones(4)}, lambda: {"x": np.ones(4, "i8")})
case("num-negative-within", "num", lambda: {"x": -_COL()}, lambda: {"x": -_COL() * (1 + 1e-7)})
case(
    "num-large-values-within",
    "num",
    lambda: {"x": _COL() * 1e12},
    lambda: {"x": _COL() * 1e12 * (1 + 1e-7)},
)
case("num-tiny-values-outside", "num", lambda: {"x": _COL() * 1e-12}, lambda: {"x": _COL() * 2e-12})
case(
    "num-inf-both",
    "num",
    lambda: {"x": np.array([np.inf, 1.0])},
    lambda: {"x": np.array([np.inf, 1.0])},
)

# -- data_regression: plain data compared as YAML text ---------------------------------------------

case(
    "data-identical",
    "data",
    lambda: {"a": 1, "b": "x", "c": [1, 2]},
    lambda: {"a": 1, "b": "x", "c": [1, 2]},
)
case("data-int-differs", "data", lambda: {"a": 1}, lambda: {"a": 2})
case("data-str-differs", "data", lambda: {"b": "x"}, lambda: {"b": "y"})
case("data-bool-differs", "data", lambda: {"flag": True}, lambda: {"flag": False})
case("data-none-to-value", "data", lambda: {"v": None}, lambda: {"v": 0})
case("data-list-longer", "data", lambda: {"c": [1, 2]}, lambda: {"c": [1, 2, 3]})
case("data-list-order", "data", lambda: {"c": [1, 2]}, lambda: {"c": [2, 1]})
case("data-key-added", "data", lambda: {"a": 1}, lambda: {"a": 1, "z": 2})
case("data-key-removed", "data", lambda: {"a": 1, "z": 2}, lambda: {"a": 1})
case("data-key-order", "data", lambda: {"a": 1, "b": 2}, lambda: {"b": 2, "a": 1})
case("data-nested-differs", "data", lambda: {"o": {"p": {"q": 1}}}, lambda: {"o": {"p": {"q": 3}}})
case("data-float-identical", "data", lambda: {"e": 0.1}, lambda: {"e": 0.1})
case("data-float-ulp", "data", lambda: {"e": 0.1}, lambda: {"e": 0.1 + 2**-56})
case("data-float-outside", "data", lambda: {"e": 0.1}, lambda: {"e": 0.2})
case("data-int-to-float", "data", lambda: {"n": 1}, lambda: {"n": 1.0})
case("data-str-to-int", "data", lambda: {"n": "1"}, lambda: {"n": 1})
case("data-unicode", "data", lambda: {"s": "Å"}, lambda: {"s": "Å"})
case("data-empty", "data", lambda: {}, lambda: {})
case(
    "data-list-of-dicts",
    "data",
    lambda: {"r": [{"x": 1}, {"x": 2}]},
    lambda: {"r": [{"x": 1}, {"x": 5}]},
)

#: Where physics_snapshot decides differently from pytest-regressions on purpose.
INTENDED = {
    "data-float-ulp": "data_regression compares YAML text; floats here compare within rtol",
    "nd-dtype-f8-to-f4": "a dtype change is a difference (precision silently lost)",
    "nd-dtype-f8-to-i8": "a dtype change is a difference (a metric became a count)",
    "nd-dtype-i8-to-i4": "a dtype change is a difference (range silently narrowed)",
    "num-float-to-int": "a dtype change is a difference (a metric became a count)",
    "num-column-removed": "num_regression checks only the result's columns; a dropped one fails",
}

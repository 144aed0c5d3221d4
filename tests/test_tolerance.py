"""Unit and property tests of the pure tolerance module (no syrupy, no pytester)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import BaseModel, ConfigDict

from pytest_physpipe.tolerance import (
    Comparison,
    Tolerance,
    ToleranceRules,
    child_path,
    compare,
    index_path,
)

# -- Tolerance ------------------------------------------------------------------------------


def test_tolerance_defaults_and_text() -> None:
    tol = Tolerance()
    assert (tol.rtol, tol.atol, tol.equal_nan) == (1e-9, 1e-12, True)
    assert str(tol) == "rtol=1e-09, atol=1e-12"
    assert str(Tolerance(rtol=0, atol=1, equal_nan=False)) == "rtol=0, atol=1, equal_nan=False"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rtol": -1.0}, ValueError, "rtol must be a finite number >= 0"),
        ({"atol": math.inf}, ValueError, "atol must be a finite number >= 0"),
        ({"rtol": math.nan}, ValueError, "rtol"),
        ({"rtol": True}, TypeError, "rtol must be a number"),
        ({"atol": "1e-3"}, TypeError, "atol must be a number"),
        ({"equal_nan": 1}, TypeError, "equal_nan must be True or False"),
    ],
)
def test_tolerance_rejects_bad_values(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Tolerance(**kwargs)  # type: ignore[arg-type]


def test_tolerance_dict_form_keeps_unspecified_fields() -> None:
    base = Tolerance(rtol=1e-6, atol=1e-8, equal_nan=False)
    assert base.updated({"rtol": 1e-12}) == Tolerance(rtol=1e-12, atol=1e-8, equal_nan=False)
    with pytest.raises(ValueError, match=r"unknown tolerance field.*'rtl'.*rtol, atol, equal_nan"):
        base.updated({"rtl": 1.0})


def test_rules_build_validates_and_converts() -> None:
    rules = ToleranceRules.build(Tolerance(rtol=1e-6), {"energy": {"atol": 1.0}})
    rule = rules.match("energy")
    assert rule is not None
    assert rule.tolerance == Tolerance(rtol=1e-6, atol=1.0)
    with pytest.raises(TypeError, match=r"tolerances\['x'\] must be a Tolerance or a dict"):
        ToleranceRules.build(Tolerance(), {"x": 1e-3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"tolerances\['x'\]: rtol must be a finite number"):
        ToleranceRules.build(Tolerance(), {"x": {"rtol": -1}})
    with pytest.raises(TypeError, match="non-empty path strings"):
        ToleranceRules.build(Tolerance(), {"": {"rtol": 1}})


# -- paths and per-path rules ----------------------------------------------------------------


def test_paths_read_like_python() -> None:
    assert child_path("", "energy") == "energy"
    assert child_path("fields", "E") == "fields.E"
    assert child_path("fields", "a.b") == 'fields["a.b"]'
    assert child_path("", 3) == "[3]"
    assert index_path("orbits", 0) == "orbits[0]"


def _tol(rules: ToleranceRules, data: object, path: str) -> Tolerance:
    """The tolerance that applied at ``path``: perturb that leaf only and read the failure."""
    comparison = compare(data, _perturbed(data, path), rules)
    (mismatch,) = comparison.mismatches
    assert mismatch.tolerance is not None
    return mismatch.tolerance


def _perturbed(data: object, path: str) -> object:
    out = copy.deepcopy(data)
    node: object = out
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part) if part.isdigit() else part]  # type: ignore[index]
    last = parts[-1]
    key: object = int(last) if last.isdigit() else last
    node[key] = node[key] + 1.0  # type: ignore[index]
    return out


def test_rule_precedence() -> None:
    data = {
        "energy": 1.0,
        "fields": {"E": 1.0, "B": 1.0, "sub": {"E": 1.0}},
        "orbits": [{"energy": 1.0}],
    }
    loose, tight, mid, glob2 = (Tolerance(rtol=r) for r in (1.0, 1e-12, 1e-3, 0.5))
    rules = ToleranceRules.build(
        Tolerance(),
        {
            "fields.*": mid,  # a glob, listed first ...
            "fields.E": tight,  # ... but a literal path beats a glob at the same depth
            "fields": loose,
            "**.energy": glob2,
        },
    )
    assert _tol(rules, data, "energy") == Tolerance()  # '**' needs at least one dot before
    assert _tol(rules, data, "fields.E") == tight
    assert _tol(rules, data, "fields.B") == mid  # deepest match wins over 'fields'
    assert _tol(rules, data, "fields.sub.E") == mid  # inherits from 'fields.sub'
    assert _tol(rules, data, "orbits[0].energy") == glob2


def test_glob_star_stays_within_one_name() -> None:
    rules = ToleranceRules.build(Tolerance(), {"a.*.c": {"rtol": 1.0}})
    assert rules.match("a.b.c") is not None
    assert rules.match("a.b.x.c") is None
    assert rules.match("a[0].c") is None  # no dot after 'a': not this pattern
    literal = ToleranceRules.build(Tolerance(), {"orbits[0]": {"rtol": 1.0}})
    assert literal.match("orbits[0]") is not None  # brackets are literal, not a class
    assert literal.match("orbits0") is None


def test_unmatched_patterns_are_reported() -> None:
    rules = ToleranceRules.build(Tolerance(), {"enrgy": {"rtol": 1}, "energy": {"rtol": 1}})
    result = compare({"energy": 1.0}, {"energy": 1.0}, rules)
    assert result.ok
    assert result.unmatched_patterns == ("enrgy",)
    assert "'enrgy' matched no value" in "\n".join(result.describe())


# -- leaves -------------------------------------------------------------------------------------


def test_float_within_and_outside_tolerance() -> None:
    tol = Tolerance(rtol=1e-6, atol=0.0)
    assert compare(1.0, 1.0 + 1e-7, tol).ok
    result = compare({"energy": 1.0}, {"energy": 1.1}, tol)
    assert not result.ok
    (m,) = result.mismatches
    assert (m.path, m.expected, m.actual) == ("energy", 1.0, 1.1)
    assert m.abs_err == pytest.approx(0.1)
    assert m.rel_err == pytest.approx(0.1)
    assert m.describe() == (
        "energy: expected 1.0, got 1.1 (abs err 0.1, rel err 0.1; allowed rtol=1e-06, atol=0)"
    )


def test_tolerance_is_relative_to_the_golden() -> None:
    tol = Tolerance(rtol=0.5, atol=0.0)
    assert compare(2.0, 1.0, tol).ok  # |1 - 2| <= 0.5 * 2
    assert not compare(1.0, 2.0, tol).ok  # |2 - 1| > 0.5 * 1


def test_nan_and_inf() -> None:
    assert compare(math.nan, math.nan).ok
    assert not compare(math.nan, math.nan, Tolerance(equal_nan=False)).ok
    assert compare(math.inf, math.inf).ok
    assert compare(-math.inf, -math.inf).ok
    assert not compare(math.inf, -math.inf).ok
    assert not compare(math.inf, 1e308).ok
    assert not compare(1.0, math.nan).ok
    result = compare(np.array([1.0, np.nan, np.inf]), np.array([1.0, np.nan, np.inf]))
    assert result.ok
    result = compare(np.array([1.0, np.nan, np.inf]), np.array([1.0, 2.0, np.inf]))
    (m,) = result.mismatches
    assert (m.index, m.failing, m.size) == ((1,), 1, 3)
    strict = compare(np.array([np.nan]), np.array([np.nan]), Tolerance(equal_nan=False))
    assert not strict.ok


def test_integers_strings_bools_none_compare_exactly() -> None:
    loose = Tolerance(rtol=1.0, atol=1.0)
    assert not compare(1000, 1001, loose).ok
    assert not compare("a", "b", loose).ok
    assert not compare(True, False, loose).ok
    assert compare(None, None, loose).ok
    assert compare(np.int64(3), 3, loose).ok
    assert not compare(np.arange(3), np.arange(3) + 1, loose).ok
    (m,) = compare([1, 2], [1, 3]).mismatches
    assert m.describe() == "[1]: expected 2, got 3 (compared exactly)"


def test_kinds_must_match() -> None:
    result = compare({"n": 1.0}, {"n": 1})
    (d,) = result.differences
    assert d.describe() == "n: type differs: golden is a float (1.0), result is an integer (1)"
    # A list of floats and a float64 array holding them are one value; other lists are
    # compared item by item with the array's elements.
    assert compare([1.0], np.array([1.0])).ok
    (d,) = compare(["a"], np.array([1.0])).differences
    assert d.describe() == "[0]: type differs: golden is a string ('a'), result is a float (1.0)"
    (d,) = compare([1.0], np.array(1.0)).differences
    assert "golden is a list/tuple, result is a float (1.0)" in d.message


def test_numpy_scalars_compare_as_python_scalars() -> None:
    assert compare(np.float32(0.5), 0.5).ok
    assert compare(0.5, np.float64(0.5)).ok
    assert compare(np.complex64(1 + 2j), 1 + 2j).ok
    assert compare(np.bool_(True), True).ok
    assert compare(np.str_("a"), "a").ok


def test_complex_tolerance_uses_modulus() -> None:
    assert compare(1 + 1j, 1 + 1.0000001j, Tolerance(rtol=1e-6)).ok
    assert not compare(1 + 1j, 1 + 1.1j, Tolerance(rtol=1e-6)).ok
    assert compare(np.array([1 + 1j]), np.array([1 + 1j + 1e-12]), Tolerance(rtol=1e-9)).ok


# -- structure ------------------------------------------------------------------------------------


def test_key_differences_are_plain() -> None:
    result = compare({"a": 1, "b": 2.0, "c": 3}, {"a": 1, "c": 3, "d": 4})
    (d,) = result.differences
    assert d.path == ""
    assert d.message == "keys differ; missing from the result: 'b'; not in the golden: 'd'"
    assert result.passed == 2
    assert result.failed_paths == frozenset({""})


def test_length_shape_and_dtype_differences() -> None:
    (d,) = compare({"xs": [1, 2]}, {"xs": [1, 2, 3]}).differences
    assert d.describe() == "xs: length differs: golden has 2 items, result has 3"
    (d,) = compare({"u": np.zeros((2, 3))}, {"u": np.zeros((3, 2))}).differences
    assert d.describe() == "u: shape differs: golden (2, 3), result (3, 2)"
    (d,) = compare({"u": np.zeros(3)}, {"u": np.zeros(3, dtype=np.float32)}).differences
    assert d.describe() == "u: dtype differs: golden float64, result float32"
    # Byte order and string width are not dtype changes.
    assert compare(np.zeros(2, ">f8"), np.zeros(2, "<f8")).ok
    assert compare(np.array(["ab"]), np.array(["ab"], dtype="<U7")).ok


def test_array_report_names_worst_element() -> None:
    golden = np.zeros((3, 4))
    actual = golden.copy()
    actual[1, 2] = 1e-3
    actual[2, 3] = 5e-3
    result = compare({"u": golden}, {"u": actual}, Tolerance(rtol=0, atol=1e-4))
    (m,) = result.mismatches
    assert (m.index, m.failing, m.size) == ((2, 3), 2, 12)
    assert m.describe().startswith(
        "u: 2 of 12 elements outside tolerance; worst u[2, 3]: expected 0.0, got 0.005"
    )


def test_models_and_dataclasses_compare_as_mappings() -> None:
    class Orbit(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        energy: float
        state: np.ndarray

    @dataclass
    class Point:
        x: float

    golden = {"energy": -0.5, "state": np.ones(2)}
    assert compare(golden, Orbit(energy=-0.5, state=np.ones(2))).ok
    assert compare({"x": 1.0}, Point(1.0)).ok
    result = compare(golden, Orbit(energy=-0.4, state=np.ones(2)))
    assert result.failed_paths == frozenset({"energy"})


def test_unsupported_type_names_the_path() -> None:
    with pytest.raises(TypeError, match=r"at a\[0\]: cannot compare a builtins.object"):
        compare({"a": [1]}, {"a": [object()]})


def test_describe_summarises() -> None:
    result = compare({"a": 1.0, "b": 2.0, "k": 1}, {"a": 1.0, "b": 3.0, "j": 1})
    lines = result.describe()
    assert lines[0] == "1 of 2 values outside tolerance (1 passed); 1 structural difference(s)"
    assert lines[1].startswith("  (the whole value): keys differ")
    assert lines[2].startswith("  b: expected 2.0, got 3.0")


# -- properties -----------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
float_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    elements={"allow_nan": True, "allow_infinity": True},
)
leaves = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers()
    | st.booleans()
    | st.text(max_size=4)
    | st.none()
    | float_arrays
    | hnp.arrays(np.int64, hnp.array_shapes(max_dims=2, max_side=3))
)
nested = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)


def _leaf_count(value: object) -> int:
    if isinstance(value, dict):
        return sum(_leaf_count(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_leaf_count(v) for v in value)
    return 1


@settings(max_examples=150, deadline=None)
@given(nested)
def test_anything_matches_itself_and_its_copy(value: object) -> None:
    for other in (value, copy.deepcopy(value)):
        result = compare(value, other, Tolerance(rtol=0.0, atol=0.0))
        assert result.ok, result.describe()
        assert result.passed == _leaf_count(value)


@settings(max_examples=200, deadline=None)
@given(finite, finite, st.floats(0, 1), st.floats(0, 1))
def test_scalar_verdict_is_numpy_isclose(e: float, a: float, rtol: float, atol: float) -> None:
    tol = Tolerance(rtol=rtol, atol=atol)
    with np.errstate(over="ignore"):
        expected = bool(np.isclose(a, e, rtol=rtol, atol=atol))
    assert compare(e, a, tol).ok == expected
    assert compare(np.array([e]), np.array([a]), tol).ok == expected


@settings(max_examples=100, deadline=None)
@given(st.data(), float_arrays, st.floats(0, 0.1), st.floats(0, 1e-3), st.booleans())
def test_array_failures_match_isclose(
    data: st.DataObject, golden: np.ndarray, rtol: float, atol: float, equal_nan: bool
) -> None:
    small = {"allow_nan": False, "min_value": -1.0, "max_value": 1.0}
    noise = data.draw(hnp.arrays(golden.dtype, golden.shape, elements=small))
    noise *= data.draw(st.sampled_from([0.0, 1e-9, 1e-3, 1.0]))
    actual = golden + noise
    tol = Tolerance(rtol=rtol, atol=atol, equal_nan=equal_nan)
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.isclose(
            actual.astype(np.float64),
            golden.astype(np.float64),
            rtol=rtol,
            atol=atol,
            equal_nan=equal_nan,
        )
    result = compare(golden, actual, tol)
    assert result.ok == bool(close.all())
    if not result.ok and golden.ndim:  # a 0-d array compares as a scalar
        (m,) = result.mismatches
        assert m.failing == int((~close).sum())
        assert m.index is not None
        assert not close[m.index]


@settings(max_examples=100, deadline=None)
@given(finite, finite, st.floats(0, 1), st.floats(0, 1), st.floats(1, 10))
def test_wider_tolerance_never_fails_more(
    e: float, a: float, rtol: float, atol: float, factor: float
) -> None:
    if compare(e, a, Tolerance(rtol=rtol, atol=atol)).ok:
        assert compare(e, a, Tolerance(rtol=rtol * factor, atol=atol * factor)).ok


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z]{1,3}", fullmatch=True), finite, min_size=1))
def test_perturbing_one_leaf_fails_exactly_that_path(values: dict[str, float]) -> None:
    key = sorted(values)[0]
    changed = dict(values)
    changed[key] = values[key] + max(1.0, abs(values[key]))
    result = compare(values, changed, Tolerance(rtol=1e-9, atol=1e-12))
    assert isinstance(result, Comparison)
    assert result.failed_paths == frozenset({key})
    assert result.passed == len(values) - 1

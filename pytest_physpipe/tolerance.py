"""Leaf-by-leaf comparison of nested physics data within tolerances.

This module is pure: no syrupy, no pytest, no I/O. :mod:`pytest_physpipe.snapshot` builds the
golden-file machinery on top of it, and anything else (a stage's self-check, a notebook) can
use :func:`compare` directly::

    >>> import numpy as np
    >>> from pytest_physpipe.tolerance import Tolerance, ToleranceRules, compare
    >>> rules = ToleranceRules.build(Tolerance(rtol=1e-9), {"energy": {"rtol": 1e-3}})
    >>> golden = {"energy": -0.5, "state": np.array([1.0, 0.0])}
    >>> compare(golden, {"energy": -0.5001, "state": np.array([1.0, 0.0])}, rules).ok
    True
    >>> compare(golden, {"energy": -0.6, "state": np.array([1.0, 0.0])}, rules).failed_paths
    frozenset({'energy'})

What counts as "close": a float or complex value passes when
``|actual - expected| <= atol + rtol * |expected|`` (numpy's ``isclose`` convention: the error is
relative to the *golden*, so swapping the two sides can change the verdict); equal values always
pass (this is how matching infinities pass); two NaNs pass when ``equal_nan``. Integers, bools,
strings, bytes and None compare exactly, and so do arrays of those dtypes.
"""

from __future__ import annotations

import cmath
import dataclasses
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from pytest_physpipe.elementwise import (
    ArrayDiff,
    Element,
    close_elements,
    same_dtype,
    unequal_elements,
)
from pytest_physpipe.valuetypes import KIND_NAMES, Frame, numeric_sequence, view

__all__ = [
    "Comparison",
    "Difference",
    "Mismatch",
    "Tolerance",
    "ToleranceLike",
    "ToleranceRules",
    "child_path",
    "compare",
    "index_path",
    "same_dtype",
]

_TOLERANCE_FIELDS = ("rtol", "atol", "equal_nan")
#: A failure report lists at most this many leaves; the rest are counted.
MAX_LISTED = 20


def _check_bound(name: str, value: object) -> float:
    # bool is an int subclass; rtol=True is a typo, not a tolerance.
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class Tolerance:
    """How close a float (or complex) value must be to its golden value.

    A value passes when ``|actual - expected| <= atol + rtol * |expected|``, when it equals the
    golden value exactly, or when both are NaN and ``equal_nan`` is true.
    """

    rtol: float = 1e-9
    atol: float = 1e-12
    equal_nan: bool = True

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise through object.__setattr__ (ints become floats).
        object.__setattr__(self, "rtol", _check_bound("rtol", self.rtol))
        object.__setattr__(self, "atol", _check_bound("atol", self.atol))
        if not isinstance(self.equal_nan, (bool, np.bool_)):
            raise TypeError(f"equal_nan must be True or False, got {self.equal_nan!r}")
        object.__setattr__(self, "equal_nan", bool(self.equal_nan))

    def updated(self, overrides: Mapping[str, object]) -> Tolerance:
        """This tolerance with some fields replaced, from the user's dict form.

        ``{"rtol": 1e-12}`` keeps this tolerance's ``atol`` and ``equal_nan``.
        """
        unknown = sorted(str(k) for k in overrides if k not in _TOLERANCE_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown tolerance field(s) {', '.join(map(repr, unknown))}: "
                f"a tolerance takes {', '.join(_TOLERANCE_FIELDS)}"
            )
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]

    def __str__(self) -> str:
        text = f"rtol={self.rtol:g}, atol={self.atol:g}"
        return text if self.equal_nan else f"{text}, equal_nan=False"


#: What users may write where a tolerance is expected: a :class:`Tolerance`, or its dict form
#: ``{"rtol": ..., "atol": ..., "equal_nan": ...}`` with any subset of the fields.
ToleranceLike: TypeAlias = "Tolerance | Mapping[str, float | bool]"


def _coerce(value: object, base: Tolerance, where: str) -> Tolerance:
    if isinstance(value, Tolerance):
        return value
    if isinstance(value, Mapping):
        try:
            return base.updated(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"tolerances[{where!r}]: {exc}") from None
    raise TypeError(
        f"tolerances[{where!r}] must be a Tolerance or a dict such as {{'rtol': 1e-12}}, "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class _Rule:
    pattern: str
    tolerance: Tolerance
    regex: re.Pattern[str] | None  # None: the pattern is a literal path


def _glob(pattern: str) -> re.Pattern[str]:
    # Only '*' is special, so paths such as 'orbits[0]' can be written literally.
    parts = re.split(r"(\*\*|\*)", pattern)
    body = "".join(
        ".*" if part == "**" else "[^.]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(body + r"\Z")


@dataclass(frozen=True)
class ToleranceRules:
    """A default :class:`Tolerance` plus per-path overrides.

    Override patterns name a value by its path in the compared data (``"energy"``,
    ``"fields.E"``, ``"orbits[0].energy"``) and apply to everything below it. In a pattern,
    ``*`` matches within one dotted name (``"fields.*"``) and ``**`` matches anything
    (``"**.energy"``). When several patterns apply to a value, the one naming the deepest node
    wins; at the same depth a literal path beats a glob, and among globs the first listed wins.
    """

    default: Tolerance = field(default_factory=Tolerance)
    rules: tuple[_Rule, ...] = ()

    @classmethod
    def build(
        cls, default: Tolerance, tolerances: Mapping[str, ToleranceLike] | None = None
    ) -> ToleranceRules:
        """Rules from the user's ``tolerances={"energy": {"rtol": 1e-12}, ...}``.

        A dict value fills its missing fields from ``default`` (the call's rtol/atol/equal_nan).
        """
        rules: list[_Rule] = []
        for pattern, value in (tolerances or {}).items():
            if not isinstance(pattern, str) or not pattern:
                raise TypeError(f"tolerances keys must be non-empty path strings, got {pattern!r}")
            regex = _glob(pattern) if "*" in pattern else None
            rules.append(_Rule(pattern, _coerce(value, default, pattern), regex))
        # Literal paths first: at equal depth they beat globs (see the class docstring).
        rules.sort(key=lambda rule: rule.regex is not None)
        return cls(default=default, rules=tuple(rules))

    def unused_patterns(self, value: object) -> tuple[str, ...]:
        """The override patterns that name no node of ``value`` (most likely typos)."""
        left = {rule.pattern: rule for rule in self.rules}
        for path in iter_paths(value):
            for pattern in [p for p, rule in left.items() if self._hits(rule, path)]:
                del left[pattern]
            if not left:
                break
        return tuple(left)

    @staticmethod
    def _hits(rule: _Rule, path: str) -> bool:
        return rule.pattern == path if rule.regex is None else bool(rule.regex.match(path))

    def match(self, path: str) -> _Rule | None:
        """The rule naming exactly this node, if any."""
        for rule in self.rules:
            if self._hits(rule, path):
                return rule
        return None


def child_path(parent: str, key: object) -> str:
    """The path of ``parent[key]`` for a mapping key or a model field, as shown to users."""
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", key):
        return f"{parent}.{key}" if parent else key
    text = json.dumps(key) if isinstance(key, str) else repr(key)
    return f"{parent}[{text}]"


def index_path(parent: str, index: int) -> str:
    """The path of item ``index`` of a list or tuple."""
    return f"{parent}[{index}]"


def _display_path(path: str) -> str:
    return path or "(the whole value)"


@dataclass(frozen=True)
class Mismatch:
    """A leaf whose value is outside its tolerance (or differs, for exact leaves).

    For an array, ``expected``/``actual``/``abs_err``/``rel_err`` describe its worst element,
    at ``index``; ``failing`` of ``size`` elements are outside the tolerance.
    ``tolerance`` is None when the leaf compares exactly (integers, strings, ...).
    """

    path: str
    expected: object
    actual: object
    abs_err: float | None = None
    rel_err: float | None = None
    tolerance: Tolerance | None = None
    index: tuple[int, ...] | None = None
    failing: int | None = None
    size: int | None = None
    #: For an array: the worst failing elements (up to 10), worst first; the first is ``index``.
    elements: tuple[Element, ...] = ()
    max_abs_err: float | None = None
    max_rel_err: float | None = None

    def lines(self) -> list[str]:
        """The report of this leaf: :meth:`describe`, then for an array the other elements."""
        lines = [self.describe()]
        if self.index is None:
            return lines
        where = _display_path(self.path)
        if self.tolerance is not None:
            lines.append(
                f"  max abs err {_err(self.max_abs_err)}, max rel err {_err(self.max_rel_err)} "
                f"over the {self.failing} failing elements"
                + (f"; the next {len(self.elements) - 1} worst:" if len(self.elements) > 1 else "")
            )
        elif len(self.elements) > 1:
            lines.append(f"  the next {len(self.elements) - 1} that differ:")
        for element in self.elements[1:]:
            text = (
                f"    {where}[{', '.join(map(str, element.index))}]: "
                f"expected {_show(element.expected)}, got {_show(element.actual)}"
            )
            if self.tolerance is not None:
                text += f" (abs err {_err(element.abs_err)}, rel err {_err(element.rel_err)})"
            lines.append(text)
        return lines

    def describe(self) -> str:
        """One line of a failure report (the worst element, for an array)."""
        where = _display_path(self.path)
        head = ""
        if self.index is not None:
            verdict = "differ; first" if self.tolerance is None else "outside tolerance; worst"
            head = f"{where}: {self.failing} of {self.size} elements {verdict} "
            where = f"{where}[{', '.join(map(str, self.index))}]"
        text = f"{head}{where}: expected {_show(self.expected)}, got {_show(self.actual)}"
        if self.tolerance is None:
            return f"{text} (compared exactly)"
        return (
            f"{text} (abs err {_err(self.abs_err)}, rel err {_err(self.rel_err)}; "
            f"allowed {self.tolerance})"
        )


@dataclass(frozen=True)
class Difference:
    """A structural difference: keys, lengths, shapes, dtypes or types that do not match."""

    path: str
    message: str

    def describe(self) -> str:
        return f"{_display_path(self.path)}: {self.message}"


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`."""

    passed: int
    mismatches: tuple[Mismatch, ...] = ()
    differences: tuple[Difference, ...] = ()
    unmatched_patterns: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.differences

    @property
    def failed_paths(self) -> frozenset[str]:
        """Every path at which something failed (a leaf, or a container whose keys differ)."""
        return frozenset(m.path for m in self.mismatches) | {d.path for d in self.differences}

    def describe(self) -> list[str]:
        """A report a physicist can act on: what differs, by how much, and what was allowed."""
        total = self.passed + len(self.mismatches)
        lines = [
            f"{len(self.mismatches)} of {total} values outside tolerance ({self.passed} passed)"
            + (f"; {len(self.differences)} structural difference(s)" if self.differences else "")
        ]
        lines.extend(f"  {difference.describe()}" for difference in self.differences[:MAX_LISTED])
        shown = self.mismatches[: max(MAX_LISTED - len(self.differences), 0)]
        for mismatch in shown:
            lines.extend(f"  {line}" for line in mismatch.lines())
        hidden = (
            len(self.differences)
            + len(self.mismatches)
            - min(len(self.differences), MAX_LISTED)
            - len(shown)
        )
        if hidden:
            lines.append(
                f"  ... and {hidden} more (the first {MAX_LISTED} are listed; "
                "compare() returns them all)"
            )
        if self.unmatched_patterns:
            lines.append(
                "  note: tolerances pattern(s) "
                + ", ".join(map(repr, self.unmatched_patterns))
                + " matched no value"
            )
        return lines


def _err(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _show(value: object) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# -- the walk -------------------------------------------------------------------------------


def _sort_key(key: object) -> tuple[str, str]:
    return type(key).__name__, repr(key)


class _Walk:
    def __init__(self, rules: ToleranceRules) -> None:
        self.rules = rules
        self.passed = 0
        self.mismatches: list[Mismatch] = []
        self.differences: list[Difference] = []
        self.used: set[str] = set()

    def tolerance_at(self, path: str, inherited: Tolerance, alias: str | None = None) -> Tolerance:
        rule = self.rules.match(path)
        if rule is None and alias is not None:
            rule = self.rules.match(alias)
        if rule is None:
            return inherited
        self.used.add(rule.pattern)
        return rule.tolerance

    def walk(
        self,
        expected: object,
        actual: object,
        path: str,
        inherited: Tolerance,
        alias: str | None = None,
    ) -> None:
        tol = self.tolerance_at(path, inherited, alias)
        e_kind, e = view(expected)
        try:
            a_kind, a = view(actual)
        except TypeError as exc:
            raise TypeError(f"at {_display_path(path)}: {exc}") from None
        if {e_kind, a_kind} == {"sequence", "array"}:
            self.list_and_array(e, a, e_kind == "sequence", path, tol)
            return
        if e_kind != a_kind:
            self.type_differs(e_kind, e, a_kind, a, path)
            return
        if e_kind == "mapping":
            self.walk_mapping(e, a, path, tol)
        elif e_kind == "sequence":
            if len(e) != len(a):
                self.differences.append(
                    Difference(
                        path,
                        f"length differs: golden has {len(e)} items, result has {len(a)}",
                    )
                )
            for index, (e_item, a_item) in enumerate(zip(e, a, strict=False)):
                self.walk(e_item, a_item, index_path(path, index), tol)
        elif e_kind == "array":
            self.compare_arrays(e, a, path, tol)
        elif e_kind == "frame":
            self.compare_frames(e, a, path, tol)
        elif e_kind == "masked":
            self.walk(e.mask, a.mask, child_path(path, "mask"), tol)
            self.walk(e.data, a.data, child_path(path, "data"), tol)
        elif e_kind in ("float", "complex"):
            self.compare_numbers(e, a, path, tol)
        elif e == a:
            self.passed += 1
        else:
            self.mismatches.append(Mismatch(path, e, a))

    def type_differs(self, e_kind: str, e: Any, a_kind: str, a: Any, path: str) -> None:
        self.differences.append(
            Difference(
                path,
                f"type differs: golden is {_describe_value(e_kind, e)}, "
                f"result is {_describe_value(a_kind, a)}",
            )
        )

    def list_and_array(
        self, e: Any, a: Any, golden_is_list: bool, path: str, tol: Tolerance
    ) -> None:
        """A list against an array: the same value when the list holds those numbers.

        A list of floats (ints) is a float64 (int64) array whatever its length; any other list
        is compared item by item with the array's elements, so an int among floats is a type
        difference at its index, as between two lists.
        """
        items, array = (e, a) if golden_is_list else (a, e)
        e_kind, a_kind = ("sequence", "array") if golden_is_list else ("array", "sequence")
        as_array = numeric_sequence(items, 0)
        if as_array is not None:
            if golden_is_list:
                self.compare_arrays(as_array, a, path, tol)
            else:
                self.compare_arrays(e, as_array, path, tol)
            return
        if array.ndim == 0 or array.dtype.names is not None or len(items) != len(array):
            self.type_differs(e_kind, e, a_kind, a, path)
            return
        for index, (e_item, a_item) in enumerate(zip(e, a, strict=True)):
            self.walk(e_item, a_item, index_path(path, index), tol)

    def walk_mapping(
        self, e: dict[object, object], a: dict[object, object], path: str, tol: Tolerance
    ) -> None:
        missing = [k for k in e if k not in a]
        extra = [k for k in a if k not in e]
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing from the result: " + _keys(missing))
            if extra:
                parts.append("not in the golden: " + _keys(extra))
            self.differences.append(Difference(path, "keys differ; " + "; ".join(parts)))
        for key in sorted((k for k in e if k in a), key=_sort_key):
            self.walk(e[key], a[key], child_path(path, key), tol, _alias(path, key))

    def compare_frames(self, e: Frame, a: Frame, path: str, tol: Tolerance) -> None:
        if e.kind != a.kind:
            self.differences.append(
                Difference(path, f"type differs: golden is a {e.kind}, result is a {a.kind}")
            )
            return
        self.walk(e.index, a.index, child_path(path, "index"), tol)
        self.walk_mapping(dict(e.columns), dict(a.columns), path, tol)

    def compare_numbers(self, e: complex, a: complex, path: str, tol: Tolerance) -> None:
        if e == a:
            self.passed += 1
            return
        e_nan, a_nan = cmath.isnan(e), cmath.isnan(a)
        abs_err = abs(a - e) if not (e_nan or a_nan) else math.nan
        if e_nan or a_nan:
            close = tol.equal_nan and e_nan and a_nan
        else:
            # An infinite golden would make the bound infinite; infinities must match exactly.
            close = cmath.isfinite(e) and abs_err <= tol.atol + tol.rtol * abs(e)
        if close:
            self.passed += 1
            return
        rel_err = abs_err / abs(e) if e != 0 else math.inf
        self.mismatches.append(Mismatch(path, e, a, abs_err, rel_err, tol))

    def compare_arrays(self, e: np.ndarray, a: np.ndarray, path: str, tol: Tolerance) -> None:
        if e.shape != a.shape:
            self.differences.append(
                Difference(path, f"shape differs: golden {e.shape}, result {a.shape}")
            )
            return
        if e.dtype.names is not None or a.dtype.names is not None:
            self.compare_fields(e, a, path, tol)
            return
        if not same_dtype(e.dtype, a.dtype):
            self.differences.append(
                Difference(path, f"dtype differs: golden {e.dtype}, result {a.dtype}")
            )
            return
        if e.dtype.kind in "fc":
            diff = close_elements(e, a, tol.rtol, tol.atol, tol.equal_nan)
            mismatch = _array_mismatch(path, diff, tol)
        else:
            mismatch = _array_mismatch(path, unequal_elements(e, a), None)
        if mismatch is None:
            self.passed += 1
        else:
            self.mismatches.append(mismatch)

    def compare_fields(self, e: np.ndarray, a: np.ndarray, path: str, tol: Tolerance) -> None:
        """Structured arrays: field by field, each with the tolerance at its own path."""
        if e.dtype.names != a.dtype.names:
            self.differences.append(
                Difference(
                    path,
                    f"fields differ: golden {list(e.dtype.names or ())}, "
                    f"result {list(a.dtype.names or ())}",
                )
            )
            return
        for name in e.dtype.names or ():
            sub = child_path(path, name)
            self.compare_arrays(
                e[name], a[name], sub, self.tolerance_at(sub, tol, _alias(path, name))
            )


def _alias(parent: str, key: object) -> str | None:
    """The plain spelling of a key that paths quote (``P [bar]`` for ``["P [bar]"]``)."""
    if not isinstance(key, str):
        return None
    plain = f"{parent}.{key}" if parent else key
    return plain if child_path(parent, key) != plain else None


def _keys(keys: list[object]) -> str:
    return ", ".join(repr(k) for k in sorted(keys, key=_sort_key))


def _describe_value(kind: str, value: object) -> str:
    if kind == "array":
        assert isinstance(value, np.ndarray)
        return f"an array ({value.dtype}, shape {value.shape})"
    if kind in ("mapping", "sequence"):
        return KIND_NAMES[kind]
    return f"{KIND_NAMES[kind]} ({_show(value)})"


def _array_mismatch(path: str, diff: ArrayDiff | None, tol: Tolerance | None) -> Mismatch | None:
    if diff is None:
        return None
    worst = diff.elements[0]
    return Mismatch(
        path,
        worst.expected,
        worst.actual,
        worst.abs_err,
        worst.rel_err,
        tol,
        index=worst.index,
        failing=diff.failing,
        size=diff.size,
        elements=diff.elements,
        max_abs_err=diff.max_abs_err,
        max_rel_err=diff.max_rel_err,
    )


def compare(
    expected: object,
    actual: object,
    rules: ToleranceRules | Tolerance | None = None,
) -> Comparison:
    """Compare ``actual`` with the golden ``expected``, leaf by leaf.

    Raises ``TypeError`` (naming the path) for a value of a type that cannot be compared.
    """
    if rules is None:
        rules = ToleranceRules()
    elif isinstance(rules, Tolerance):
        rules = ToleranceRules(default=rules)
    walk = _Walk(rules)
    walk.walk(expected, actual, "", rules.default)
    unmatched = tuple(r.pattern for r in rules.rules if r.pattern not in walk.used)
    return Comparison(
        passed=walk.passed,
        mismatches=tuple(walk.mismatches),
        differences=tuple(walk.differences),
        unmatched_patterns=unmatched,
    )


def iter_paths(value: object, path: str = "", alias: str | None = None) -> Iterator[str]:
    """Every node path in ``value``, parents before children (for messages about patterns).

    A key that paths quote is also given in its plain spelling (``P [bar]``).
    """
    yield path
    if alias is not None:
        yield alias
    kind, canonical = view(value)
    if kind == "frame":
        yield child_path(path, "index")
        kind, canonical = "mapping", canonical.columns
    elif kind == "masked":
        yield from (child_path(path, "mask"), child_path(path, "data"))
    elif kind == "array" and canonical.dtype.names:
        for name in canonical.dtype.names:
            yield from iter_paths(canonical[name], child_path(path, name), _alias(path, name))
    if kind == "mapping":
        for key in sorted(canonical, key=_sort_key):
            yield from iter_paths(canonical[key], child_path(path, key), _alias(path, key))
    elif kind == "sequence":
        items: Sequence[object] = canonical
        for index, item in enumerate(items):
            yield from iter_paths(item, index_path(path, index))

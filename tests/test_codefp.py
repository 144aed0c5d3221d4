"""Code fingerprints follow project code: every edit a stage reaches counts, nothing else does.

A unit-level mutation suite (many edits, each checked against a fresh import) and pytester
runs that show the same as users see it: an edit recomputes, or the store serves a hit.
"""

from __future__ import annotations

import importlib
import linecache
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from physpipe_testing import CallLog

from pytest_physpipe.codefp import code_of

PHYSICS = '''\
"""Physics helpers."""
import functools

from numerics import smooth

ALPHA = 0.5
LIMITS = (0.0, 1.0)
SCALE = 3


def step(u):
    """Advance one step."""
    # explicit Euler
    return u * ALPHA + smooth(u)


def unreached(u):
    return u - 1


def scaled(u, factor=SCALE):
    return u * factor


class Solver:
    """A solver."""

    TOL = 1e-6

    def __init__(self, n):
        self.n = n

    def run(self):
        return step(self.n) + self.extra() + self.TOL

    def extra(self):
        return 1.0


def twice(f):
    @functools.wraps(f)
    def wrapper(*args):
        return f(*args)

    return wrapper


@twice
def decorated(x):
    return x * 3


class Form:
    def __init__(self, form):
        self.form = form

    def __call__(self, *args):
        return self.form(*args)


@Form
def bilinear(u, v):
    return u * v
'''

NUMERICS = """\
import math

GAIN = 2
KERNEL = lambda u: u * 2  # noqa: E731


def smooth(u):
    return _kernel(u) / GAIN


def _kernel(u):
    return KERNEL(u) + math.sqrt(abs(u))


def noise(u):
    return 0.0
"""

DEEP = """\
def deep(u):
    return u + 0.25
"""

STAGES = """\
import pkgdeep.sub
import physics
from physics import LIMITS, Solver, bilinear, decorated, scaled


def make(k):
    def heat(x):
        lo, hi = LIMITS
        total = physics.step(x) + k + decorated(1) + bilinear(1, 2) + Solver(3).run()
        return total + scaled(lo) + hi + pkgdeep.sub.deep(x)

    return heat


heat = make(2)
"""

FILES = {
    "physics.py": PHYSICS,
    "numerics.py": NUMERICS,
    "pkgdeep/__init__.py": "",
    "pkgdeep/sub.py": DEEP,
    "stages.py": STAGES,
}

#: (what, file, old text, new text, must the key change?)
MUTATIONS = [
    ("helper body", "physics.py", "u * ALPHA +", "u * ALPHA * 2 +", True),
    ("module constant", "physics.py", "ALPHA = 0.5", "ALPHA = 0.25", True),
    ("tuple constant imported by name", "physics.py", "(0.0, 1.0)", "(0.0, 2.0)", True),
    ("helper in another module", "numerics.py", "/ GAIN", "* GAIN", True),
    ("constant in another module", "numerics.py", "GAIN = 2", "GAIN = 3", True),
    ("helper of a helper", "numerics.py", "KERNEL(u) +", "KERNEL(u) -", True),
    ("lambda constant", "numerics.py", "u * 2  #", "u * 3  #", True),
    ("stdlib call changed", "numerics.py", "math.sqrt(", "math.exp(", True),
    ("method of a project class", "physics.py", "+ self.extra()", "- self.extra()", True),
    ("second method", "physics.py", "return 1.0", "return 2.0", True),
    ("constructor", "physics.py", "self.n = n", "self.n = n + 1", True),
    ("class attribute", "physics.py", "TOL = 1e-6", "TOL = 1e-7", True),
    ("decorated function", "physics.py", "return x * 3", "return x * 4", True),
    ("decorator's wrapper", "physics.py", "return f(*args)", "return 2 * f(*args)", True),
    ("function in a decorator object", "physics.py", "return u * v", "return u + v", True),
    ("closure value", "stages.py", "heat = make(2)", "heat = make(3)", True),
    ("stage body", "stages.py", "+ k +", "- k +", True),
    ("default argument", "physics.py", "SCALE = 3", "SCALE = 4", True),
    ("default's helper body", "physics.py", "return u * factor", "return u / factor", True),
    ("attribute chain pkg.sub.deep", "pkgdeep/sub.py", "u + 0.25", "u + 0.5", True),
    ("comment in a helper", "physics.py", "    # explicit Euler\n", "    # implicit?\n", False),
    ("docstring of a helper", "physics.py", "Advance one step.", "Advance one step of dt.", False),
    (
        "formatting of a helper",
        "physics.py",
        "u * ALPHA + smooth(u)",
        "(u*ALPHA\n            + smooth(u))",
        False,
    ),
    ("unreached function", "physics.py", "return u - 1", "return u - 2", False),
    ("unreached function elsewhere", "numerics.py", "return 0.0", "return 1.0", False),
    (
        "new function",
        "physics.py",
        "class Form:",
        "def added():\n    return 5\n\n\nclass Form:",
        False,
    ),
    ("new unrelated constant", "physics.py", "SCALE = 3", "SCALE = 3\nOTHER = 9", False),
    ("class docstring", "physics.py", '"""A solver."""', '"""A better solver."""', False),
    ("module docstring", "physics.py", '"""Physics helpers."""', '"""Helpers."""', False),
    ("unused import", "physics.py", "import functools\n", "import functools\nimport os\n", False),
    ("constant reformatted", "numerics.py", "GAIN = 2", "GAIN = (\n    2\n)", False),
    (
        "comment in the stage module",
        "stages.py",
        "heat = make(2)",
        "# the heat stage\nheat = make(2)",
        False,
    ),
]


def _digest(folder: Path, files: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Write ``files``, import ``stages`` afresh (as a new process would) and fingerprint."""
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    names = ("stages", "physics", "numerics", "pkgdeep", "pkgdeep.sub")
    for name in names:
        sys.modules.pop(name, None)
    linecache.clearcache()
    sys.path.insert(0, str(folder))
    # No bytecode cache: an edit made within the second of the last import that keeps the
    # file's size (2 -> 3) would otherwise load the stale .pyc (its check is mtime + size).
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        module = importlib.import_module("stages")
        found = code_of(module.heat)
        return found.digest, found.parts
    finally:
        sys.dont_write_bytecode = writes_bytecode
        sys.path.remove(str(folder))
        for name in names:
            sys.modules.pop(name, None)


def test_mutation_suite(tmp_path: Path) -> None:
    base, parts = _digest(tmp_path, FILES)
    # What the fingerprint covered, by name: every helper the stage reaches, nothing else.
    assert {"physics.step", "numerics.smooth", "numerics._kernel", "numerics.GAIN",
            "physics.ALPHA", "physics.Solver", "physics.decorated", "physics.bilinear",
            "pkgdeep.sub.deep", "numerics.<lambda>"} <= set(parts)  # fmt: skip
    assert not {"physics.unreached", "numerics.noise"} & set(parts)
    table: Counter[str] = Counter()
    wrong = []
    for what, rel, old, new, changes in MUTATIONS:
        assert FILES[rel].count(old) == 1, what
        digest, _ = _digest(tmp_path, {**FILES, rel: FILES[rel].replace(old, new)})
        changed = digest != base
        table["must change" if changes else "must not change"] += 1
        if changed and changes:
            table["detected"] += 1
        if changed and not changes:
            table["false invalidation"] += 1
        if changed != changes:
            wrong.append(what)
    print(f"\nmutation suite: {dict(table)}")
    assert not wrong, f"wrong verdicts: {wrong}"
    assert table["must change"] >= 20
    assert _digest(tmp_path, FILES)[0] == base  # same files, fresh import: same fingerprint


# -- as users see it ------------------------------------------------------------------------------

TEST_FILE = """
from physlog import log
from pytest_physpipe import stage
import stages

@stage
def heat():
    log("heat")
    return stages.heat(1.0)

def test_heat(heat):
    assert heat > 0
"""

RUNS = [m for m in MUTATIONS if m[0] in {
    "helper body", "module constant", "helper in another module", "method of a project class",
    "decorated function", "function in a decorator object", "closure value",
    "comment in a helper", "docstring of a helper", "unreached function",
}]  # fmt: skip


@pytest.mark.parametrize(("what", "rel", "old", "new", "changes"), RUNS, ids=[m[0] for m in RUNS])
def test_edit_recomputes_exactly_when_reached(
    pytester: pytest.Pytester,
    calls: CallLog,
    what: str,
    rel: str,
    old: str,
    new: str,
    changes: bool,
) -> None:
    for name, text in FILES.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    pytester.makepyfile(test_heat=textwrap.dedent(TEST_FILE))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert calls.take() == Counter({"heat": 1})
    (pytester.path / rel).write_text(FILES[rel].replace(old, new))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert calls.take() == (Counter({"heat": 1}) if changes else Counter()), what


def test_track_accepts_a_decorator_object_holding_the_function(tmp_path: Path) -> None:
    # scikit-fem's @BilinearForm returns an object holding the function; track=[form] of such
    # an object (from a library, so not followed automatically) fingerprints that function.
    form_source = "class Form:\n    def __init__(self, f):\n        self.form = f\n"
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "formlib.py").write_text(form_source)
    sys.path.insert(0, str(site))
    try:
        formlib = importlib.import_module("formlib")

        def product(u: float, v: float) -> float:
            return u * v

        def total(u: float, v: float) -> float:
            return u + v

        keyed = [code_of(_plain, track=[formlib.Form(f)]).digest for f in (product, total)]
        assert keyed[0] != keyed[1]  # the held function's code is what counts
        assert code_of(_plain, track=[formlib.Form(product)]).digest == keyed[0]
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("formlib", None)


def _plain() -> int:
    return 1

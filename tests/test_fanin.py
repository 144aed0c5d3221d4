"""Fan-in: ``gather("stage")`` over a sweep, as a convergence study uses it (pytester)."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from pytest_physpipe.fanin import coord_names, group_by, name_coords

if TYPE_CHECKING:
    from physpipe_testing import CallLog

HEADER = """
import math

import pytest
from physlog import log
from pytest_physpipe import StageConfig, gather, stage, sweep


class MeshConfig(StageConfig):
    element: str = "P1"
    level: int = 3
"""

#: A convergence study: one error per level, the order fitted from all of them.
STUDY = """
@stage(params=sweep(MeshConfig, level=LEVELS))
def solve(config: MeshConfig) -> float:
    log(f"solve {{config.level}}")
    h = 2.0 ** -config.level
    return 3.0 * h**2


@stage
def convergence(errors=gather("solve")) -> dict:
    log(f"convergence {{len(errors)}}")
    levels = [e.coords["level"] for e in errors]
    assert levels == sorted(levels)
    first, last = errors[0], errors[-1]
    rate = math.log(first.value / last.value) / math.log(2.0 ** (levels[-1] - levels[0]))
    return {{"order": rate, "levels": levels, "keys": [e.key for e in errors]}}


def test_order(convergence):
    assert convergence["order"] == pytest.approx(2.0)
    assert convergence["levels"] == LEVELS


def test_level(solve, physpipe):
    assert physpipe.config("solve").level in LEVELS
"""


def study(pytester: pytest.Pytester, levels: list[int], extra: str = "") -> None:
    body = f"LEVELS = {levels!r}\n" + STUDY.format() + textwrap.dedent(extra)
    pytester.makepyfile(test_study=HEADER + body)


# -- pure parts ---------------------------------------------------------------------------------


def test_coords_name_the_varying_fields_and_qualify_clashes() -> None:
    points = [
        {("mesh", "level"): 3, ("mesh", "element"): "P1", ("solve", "level"): 1},
        {("mesh", "level"): 4, ("mesh", "element"): "P1", ("solve", "level"): 2},
    ]
    assert coord_names(points) == {
        ("mesh", "level"): "mesh.level",
        ("solve", "level"): "solve.level",
    }
    assert name_coords(points)[1] == {"mesh.level": 4, "solve.level": 2}
    assert group_by([{"a": 1, "b": 1}, {"a": 2, "b": 1}, {"a": 1, "b": 2}], ["a"]) == [
        ({"b": 1}, [0, 1]),
        ({"b": 2}, [2]),
    ]
    assert group_by([{"a": 1}, {"a": 2}], None) == [({}, [0, 1])]


# -- gather ----------------------------------------------------------------------------------


def test_gather_over_four_then_five_levels_computes_the_new_point_and_the_gather(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    study(pytester, [3, 4, 5, 6])
    result = pytester.runpytest("--physpipe-report=report.json")
    result.assert_outcomes(passed=5)
    assert calls.take() == Counter(
        {"solve 3": 1, "solve 4": 1, "solve 5": 1, "solve 6": 1, "convergence 4": 1}
    )
    report = json.loads((pytester.path / "report.json").read_text())
    assert Counter(s["name"] for s in report["stages"]) == Counter({"solve": 4, "convergence": 1})

    pytester.runpytest().assert_outcomes(passed=5)
    assert calls.take() == Counter()  # all hits

    study(pytester, [3, 4, 5, 6, 7])
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=6)
    assert calls.take() == Counter({"solve 7": 1, "convergence 5": 1})


def test_gather_receives_instances_no_selected_test_uses(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    study(pytester, [3, 4, 5])
    result = pytester.runpytest("-k", "test_order")
    result.assert_outcomes(passed=1)
    assert calls.take() == Counter({"solve 3": 1, "solve 4": 1, "solve 5": 1, "convergence 3": 1})


def test_gather_over_a_field_fans_the_gathering_stage_out(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makepyfile(
        test_over=HEADER
        + """
@stage(params=sweep(MeshConfig, element=["P1", "P2"], level=[3, 4, 5]))
def mesh(config: MeshConfig) -> dict:
    log(f"mesh {config.element} {config.level}")
    return {"h": 2.0 ** -config.level, "p": int(config.element[1])}


@stage
def error(mesh):
    return mesh["h"] ** (mesh["p"] + 1)


@stage
def order(errors=gather("error", over=["level"])) -> dict:
    log("order")
    coords = [dict(e.coords) for e in errors]
    assert coords == [{"level": 3}, {"level": 4}, {"level": 5}]
    return {"order": math.log2(errors[0].value / errors[1].value)}


@stage
def table(orders=gather("order")) -> list:
    log("table")
    return [(dict(o.coords), round(o.value["order"])) for o in orders]


def test_order(order, physpipe):
    assert order["order"] in (pytest.approx(2.0), pytest.approx(3.0))


def test_table(table):
    assert table == [({"element": "P1"}, 2), ({"element": "P2"}, 3)]
"""
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*test_order?element=P1? PASSED*",
            "*test_order?element=P2? PASSED*",
            "*test_table PASSED*",
        ]
    )
    found = calls.take()
    assert found["order"] == 2
    assert found["table"] == 1
    assert sum(v for k, v in found.items() if k.startswith("mesh")) == 6
    assert set(found.values()) == {1, 2}


def test_gather_under_xdist_computes_each_instance_once(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    study(
        pytester,
        [3, 4, 5, 6],
        """
        @stage
        def summary(errors=gather("solve")) -> int:
            log("summary")
            return len(errors)

        def test_summary(summary):
            assert summary == 4
        """,
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=6)
    assert calls.take() == Counter(
        {
            "solve 3": 1,
            "solve 4": 1,
            "solve 5": 1,
            "solve 6": 1,
            "convergence 4": 1,
            "summary": 1,
        }
    )


def test_gather_in_the_plan_and_cached_only(pytester: pytest.Pytester, calls: CallLog) -> None:
    study(pytester, [3, 4, 5])
    pytester.runpytest("-k", "test_level and 3").assert_outcomes(passed=1)
    assert calls.take() == Counter({"solve 3": 1})

    result = pytester.runpytest("--physpipe-plan", "-k", "test_order")
    result.stdout.fnmatch_lines(
        [
            "solve[[]level=3[]] *cached*",
            "solve[[]level=4[]] *missing*",
            "solve[[]level=5[]] *missing*",
            "convergence *missing*",
            "4 stage instance(s): 1 cached, 3 missing",
        ]
    )
    result = pytester.runpytest("--physpipe-cached-only", "-rs")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(
        ["*cached-only: stage solve[[]level=4[]]*solve[[]level=5[]]*convergence*"]
    )
    assert calls.take() == Counter()

    pytester.runpytest().assert_outcomes(passed=4)
    calls.take()
    result = pytester.runpytest("--physpipe-cached-only", "--physpipe-graph=dag.dot")
    result.assert_outcomes(passed=4)
    assert calls.take() == Counter()
    dot = (pytester.path / "dag.dot").read_text()
    assert dot.count("[style=dashed]") == 3  # one gather edge per level


def test_physpipe_set_applies_to_every_gathered_instance(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    study(pytester, [3, 4])
    pytester.runpytest("--physpipe-set", "solve.element=P2").assert_outcomes(passed=3)
    assert calls.take() == Counter({"solve 3": 1, "solve 4": 1, "convergence 2": 1})
    result = pytester.runpytest("--physpipe-set", "solve.level=9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--physpipe-set solve.level: stage 'solve' sweeps 'level' over its params= (3, 4)*"]
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            """
            @stage
            def fit(errors=gather("nosuch")):
                return 1
            """,
            "*parameter 'errors' is gather('nosuch'), but there is no stage named 'nosuch'*",
        ),
        (
            """
            @stage
            def a(bs=gather("b")):
                return 1

            @stage
            def b(a):
                return 2
            """,
            "*cycle*",
        ),
        (
            """
            @stage(params=sweep(MeshConfig, level=[1, 2]))
            def m(config: MeshConfig):
                return 1

            @stage
            def fit(ms=gather("m", over=["element"])):
                return 1
            """,
            "*gathers along 'element', which is not a field that varies across the instances of "
            "'m' (fields that vary: level)*",
        ),
    ],
    ids=["unknown", "cycle", "unknown-field"],
)
def test_gather_errors_are_clear(
    pytester: pytest.Pytester, calls: CallLog, body: str, message: str
) -> None:
    test = "\n\ndef test_it(TARGET):\n    pass\n".replace(
        "TARGET", "fit" if "def fit" in body else "a"
    )
    pytester.makepyfile(test_broken=HEADER + textwrap.dedent(body) + test)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()

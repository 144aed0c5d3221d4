"""Marks per instance: ``pytest.param(config, marks=...)`` and ``sweep(..., marks=...)``.

The marks go to that instance and everything downstream of it (stages, gathers, tests): ``-m``
selects exactly those tests and computes nothing the deselected ones alone need; ``skip`` and
``xfail`` behave as in pytest. Test ids stay pytest's; ``-k "level:5"`` selects by coordinate.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from physpipe_testing import CallLog

HEADER = """
import pytest
from physlog import log
from pytest_physpipe import StageConfig, gather, stage, sweep


class MeshConfig(StageConfig):
    level: int = 3
"""

#: The finest level is slow, by pytest.param or by sweep(marks=...).
PARAMS = {
    "param": """[
        MeshConfig(level=3),
        MeshConfig(level=4),
        pytest.param(MeshConfig(level=5), marks=pytest.mark.slow, id="level=5"),
    ]""",
    "sweep": """sweep(
        MeshConfig, level=[3, 4, 5], marks=lambda c: [pytest.mark.slow] if c.level == 5 else []
    )""",
}

BODY = """
@stage(params={params})
def mesh(config: MeshConfig) -> int:
    log(f"mesh {{config.level}}")
    return config.level


@stage
def error(mesh) -> float:
    log(f"error {{mesh}}")
    return 2.0 ** -mesh


@stage
def study(errors=gather("error")) -> int:
    log("study")
    return len(errors)


def test_error(error, physpipe):
    assert error == 2.0 ** -physpipe.config("mesh").level


def test_study(study):
    assert study == 3
"""


def marked(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile(
        test_marked=HEADER + textwrap.dedent(BODY.format(params=textwrap.dedent(PARAMS[how])))
    )


@pytest.mark.parametrize("how", ["param", "sweep"])
def test_slow_instance_is_deselected_by_not_slow_and_run_by_slow(
    pytester: pytest.Pytester, calls: CallLog, how: str
) -> None:
    marked(pytester, how)
    result = pytester.runpytest("-m", "not slow", "-v")
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines(
        ["*test_error?level=3? PASSED*", "*test_error?level=4? PASSED*"], consecutive=False
    )
    assert calls.take() == Counter({"mesh 3": 1, "mesh 4": 1, "error 3": 1, "error 4": 1})

    result = pytester.runpytest("-m", "slow", "-v")
    # The slow instance's own test, and the study that gathers it.
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines(
        ["*test_error?level=5? PASSED*", "*test_study PASSED*"], consecutive=False
    )
    assert calls.take() == Counter({"mesh 5": 1, "error 5": 1, "study": 1})

    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_marked.py::test_error[[]level=5[]]"], consecutive=False)


def test_marks_are_recorded_on_the_instance_and_in_the_plan(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    marked(pytester, "param")
    result = pytester.runpytest("--physpipe-plan", "--physpipe-backend=slurm")
    result.stdout.fnmatch_lines(
        [
            "mesh[[]level=4[]] *missing*local *",
            "mesh[[]level=5[]] *missing*slurm (slow)*",
            "error[[]level=5[]] *missing*local *",
        ],
        consecutive=False,
    )


def test_skip_and_xfail_per_instance_behave_as_in_pytest(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makepyfile(
        test_skips=HEADER
        + """
@stage(
    params=[
        MeshConfig(level=3),
        pytest.param(MeshConfig(level=4), marks=pytest.mark.skip(reason="too coarse")),
        pytest.param(MeshConfig(level=5), marks=pytest.mark.xfail(reason="known", strict=True)),
    ]
)
def mesh(config: MeshConfig) -> int:
    log(f"mesh {config.level}")
    return config.level


@stage
def error(mesh) -> float:
    return 2.0 ** -mesh


def test_error(error):
    assert error > 0.1
"""
    )
    result = pytester.runpytest("-rsx")
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*too coarse*", "*known*"], consecutive=False)
    # A skipped instance is never computed; an xfail one runs (and fails) as in pytest.
    assert calls.take() == Counter({"mesh 3": 1, "mesh 5": 1})


def test_k_selects_by_coordinate(pytester: pytest.Pytester, calls: CallLog) -> None:
    marked(pytester, "sweep")
    result = pytester.runpytest("-k", "level:4", "-v")
    result.assert_outcomes(passed=1, deselected=3)
    result.stdout.fnmatch_lines(["*test_error?level=4? PASSED*"])
    assert calls.take() == Counter({"mesh 4": 1, "error 4": 1})


def test_param_errors(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(
        test_bad=HEADER
        + """
@stage(params=[pytest.param(MeshConfig(), MeshConfig(level=4))])
def mesh(config: MeshConfig) -> int:
    return 1


def test_it(mesh):
    pass
"""
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*params[[]0[]] is pytest.param with 2 values*"])

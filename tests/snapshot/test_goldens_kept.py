"""Goldens are never lost by accident (pytester, real pytest runs).

A golden may be removed only when its test ran to completion and no longer asserts it, or when
the test is gone from the source. Every other run (a stage fixture that fails, a test that
crashes before its assertion, tests deselected by ``-m``/``-k``, ``--physpipe-plan``) leaves the
golden files byte-identical, with and without ``--snapshot-update``.
"""

from __future__ import annotations

import sys

import pytest

LEAN = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


@pytest.fixture(autouse=True)
def _fresh_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    # Under an outer `pytest -n`, syrupy would take the in-process runs for xdist workers.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def golden_files(pytester: pytest.Pytester) -> dict[str, bytes]:
    root = pytester.path / "__snapshots__"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


SUITE = """
import os
import numpy as np
import pytest
from pytest_physpipe import StageConfig, stage

class FieldConfig(StageConfig):
    # FAIL_STAGE also changes the config: a cached result would not run the stage again.
    n: int = 81 if os.environ.get("FAIL_STAGE") else 80

@stage
def field(config: FieldConfig) -> np.ndarray:
    if os.environ.get("FAIL_STAGE"):
        raise RuntimeError("the solver diverged")
    return np.linspace(0.0, 1.0, config.n)

def test_field(field, physics_snapshot):
    assert {"u": field, "total": float(field.sum())} == physics_snapshot

def test_two_goldens(physics_snapshot):
    if os.environ.get("CRASH"):
        raise ZeroDivisionError("crashed before the assertion")
    assert {"a": 1.0} == physics_snapshot(name="first")
    if os.environ.get("CRASH_BETWEEN"):
        raise ZeroDivisionError("crashed between two assertions")
    assert {"b": np.arange(100.0)} == physics_snapshot(name="second")

@pytest.mark.parametrize(
    "n", [1, 2, pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)]
)
def test_sweep(physics_snapshot, n):
    assert {"x": np.arange(float(30 * n))} == physics_snapshot
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> dict[str, bytes]:
    """The suite with its goldens written; returns the golden files' bytes."""
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=6)
    files = golden_files(pytester)
    assert "test_suite.physics" in files
    assert len([f for f in files if f.endswith(".npy")]) == 4
    return files


@pytest.mark.parametrize("update", [False, True], ids=["check", "update"])
def test_a_failing_stage_fixture_keeps_its_goldens(
    pytester: pytest.Pytester,
    suite: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    update: bool,
) -> None:
    monkeypatch.setenv("FAIL_STAGE", "1")
    result = run(pytester, *(["--snapshot-update"] if update else []))
    result.assert_outcomes(passed=5, errors=1)
    assert golden_files(pytester) == suite
    result.stdout.no_fnmatch_line("*unused*")


@pytest.mark.parametrize("env", ["CRASH", "CRASH_BETWEEN"])
def test_a_crash_before_the_assertion_keeps_the_goldens(
    pytester: pytest.Pytester, suite: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.setenv(env, "1")
    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=5, failed=1)
    assert golden_files(pytester) == suite
    result.stdout.no_fnmatch_line("*unused*")


@pytest.mark.parametrize(
    "select",
    [("-m", "not slow"), ("-k", "not sweep"), ("-k", "sweep and not 3"), ("-m", "slow")],
    ids=["m-not-slow", "k-not-sweep", "k-one-param", "m-slow"],
)
@pytest.mark.parametrize("update", [False, True], ids=["check", "update"])
def test_deselected_tests_keep_their_goldens(
    pytester: pytest.Pytester, suite: dict[str, bytes], select: tuple[str, str], update: bool
) -> None:
    result = run(pytester, *select, *(["--snapshot-update"] if update else []))
    assert result.ret == 0, result.stdout.str()
    assert golden_files(pytester) == suite
    result.stdout.no_fnmatch_line("*unused*")


@pytest.mark.parametrize("update", [False, True], ids=["check", "update"])
def test_the_plan_leaves_goldens_alone(
    pytester: pytest.Pytester, suite: dict[str, bytes], update: bool
) -> None:
    result = run(pytester, "--physpipe-plan", *(["--snapshot-update"] if update else []))
    assert result.ret == 0, result.stdout.str()
    assert golden_files(pytester) == suite


def test_the_plan_leaves_goldens_alone_under_xdist(
    pytester: pytest.Pytester, suite: dict[str, bytes]
) -> None:
    result = pytester.runpytest_subprocess(*LEAN, "-n", "2", "--physpipe-plan", "--snapshot-update")
    assert result.ret == 0, result.stdout.str()
    assert golden_files(pytester) == suite


def test_goldens_of_completed_or_deleted_tests_are_still_removed(
    pytester: pytest.Pytester, suite: dict[str, bytes]
) -> None:
    # test_two_goldens ran to completion without its second golden; test_sweep is gone.
    source = SUITE.replace(
        '    assert {"b": np.arange(100.0)} == physics_snapshot(name="second")\n', ""
    )
    pytester.makepyfile(test_suite=source.split("@pytest.mark.parametrize", maxsplit=1)[0])
    result = run(pytester)
    assert result.ret == 1  # unused goldens fail a run, as in syrupy
    result.stdout.fnmatch_lines(["*5 snapshots unused.*"])
    assert golden_files(pytester) == suite

    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*5 unused snapshots deleted.*"])
    assert len([f for f in golden_files(pytester) if f.endswith(".npy")]) == 1
    assert run(pytester).ret == 0


def test_under_xdist_errors_keep_goldens_and_unused_ones_go(
    pytester: pytest.Pytester, suite: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_STAGE", "1")
    monkeypatch.setenv("CRASH", "1")
    result = pytester.runpytest_subprocess(*LEAN, "-n", "2", "--snapshot-update")
    result.assert_outcomes(passed=4, failed=1, errors=1)
    assert golden_files(pytester) == suite

    monkeypatch.delenv("FAIL_STAGE")
    monkeypatch.delenv("CRASH")
    pytester.makepyfile(test_suite=SUITE.split("@pytest.mark.parametrize", maxsplit=1)[0])
    result = pytester.runpytest_subprocess(*LEAN, "-n", "2", "--snapshot-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*4 unused snapshots deleted.*"])

"""What physpipe adds to every test of a run: no hook wrappers where nothing needs one, no
logger for pytest's log capture to visit at every phase, and the plain paragraph of a physpipe
error as the failure report of any phase."""

from __future__ import annotations

import json
from typing import Any

import pytest
from physpipe_testing import LEAN

pytestmark = pytest.mark.usefixtures("fresh_imports")


# Writes, per per-test hook, the physpipe hookimpls registered when the session ends.
HOOKS_CONFTEST = """
import json, logging, os

PER_TEST = ("pytest_runtest_protocol", "pytest_runtest_setup", "pytest_runtest_call",
            "pytest_runtest_teardown", "pytest_runtest_makereport", "pytest_runtest_logreport",
            "pytest_pyfunc_call")

def pytest_sessionfinish(session):
    pm = session.config.pluginmanager
    out = {}
    for hook in PER_TEST:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            name = pm.get_name(impl.plugin) or ""
            if "physpipe" in name:
                wrapper = bool(impl.wrapper or impl.hookwrapper)
                out.setdefault(hook, []).append([name, wrapper])
    loggers = logging.root.manager.loggerDict
    out["loggers"] = sorted(name for name in loggers if "physpipe" in name)
    with open(os.environ["HOOKS_OUT"], "w") as handle:
        json.dump(out, handle)
"""

STAGES = """
from pytest_physpipe import StageConfig, stage

class PointConfig(StageConfig):
    i: int = 0

@stage(params=[PointConfig(i=i) for i in range(3)])
def point(config: PointConfig):
    return {"i": config.i}

def test_point(point):
    assert point["i"] in (0, 1, 2)
"""

SNAPSHOTS = """
def test_golden(physics_snapshot):
    assert {"x": 1.0} == physics_snapshot
"""


def _hooks(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    out = pytester.path / "hooks.json"
    monkeypatch.setenv("HOOKS_OUT", str(out))
    result = pytester.runpytest_subprocess(*LEAN, "--snapshot-update")
    assert result.ret == 0, result.stdout.str()
    hooks: dict[str, list[Any]] = json.loads(out.read_text())
    return hooks


def test_a_run_without_goldens_wraps_no_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(HOOKS_CONFTEST)
    pytester.makepyfile(test_stages=STAGES)
    _hooks(pytester, monkeypatch)  # computes and stores: the second run is all hits
    hooks = _hooks(pytester, monkeypatch)
    # pytest's log capture visits every registered logger at each phase of each test: a
    # run that logs nothing registers none.
    assert hooks.pop("loggers") == []
    wrappers = [name for impls in hooks.values() for name, wrapper in impls if wrapper]
    assert wrappers == []
    # What is left per test is plain: the isolation of arguments, the error reports, and
    # the bookkeeping of passed tests that keeps goldens.
    assert set(hooks) == {
        "pytest_pyfunc_call",
        "pytest_runtest_makereport",
        "pytest_runtest_logreport",
    }


def test_a_run_with_goldens_flushes_them_per_module(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(HOOKS_CONFTEST)
    pytester.makepyfile(test_stages=STAGES, test_goldens=SNAPSHOTS)
    hooks = _hooks(pytester, monkeypatch)
    assert ["physpipe-golden-flush", True] in hooks["pytest_runtest_protocol"]
    assert (pytester.path / "__snapshots__" / "test_goldens.physics").exists()


ERRORS = """
import pytest
from pytest_physpipe import stage

@stage
def energy():
    return 1.0

@pytest.fixture
def broken_teardown(physpipe):
    yield
    physpipe.record("teardown_missing")

def test_call(physpipe, energy):
    physpipe.record("call_missing")

def test_setup(physpipe, energy, request):
    request.getfixturevalue("broken_teardown")

@pytest.mark.xfail(reason="known", strict=True)
def test_xfail(physpipe, energy):
    physpipe.record("xfail_missing")

def test_own_error(energy):
    raise ValueError("the stage's own")
"""


def test_a_physpipe_error_reads_as_its_paragraph_in_every_phase(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_errors=ERRORS)
    result = pytester.runpytest_subprocess(*LEAN, "-rA")
    result.assert_outcomes(passed=1, failed=2, errors=1, xfailed=1)
    out = result.stdout.str()
    for name in ("call_missing", "teardown_missing"):
        # The paragraph alone: its class and message, no traceback through the plugin.
        result.stdout.fnmatch_lines([f"PhyspipeError: physpipe.record('{name}'): test *"])
    assert "session.py" not in out
    assert "raise PhyspipeError(" not in out
    # A test's own exception keeps its traceback; an expected failure stays expected.
    result.stdout.fnmatch_lines(['*raise ValueError("the stage\'s own")*', "*XFAIL*known*"])

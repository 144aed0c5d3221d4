"""Under --snapshot-update, compared arrays are not held until the session ends (pytester)."""

from __future__ import annotations

import sys

import pytest

HELD = """
import gc
import weakref

import numpy as np
import pytest

@pytest.mark.parametrize("i", range(3))
def test_big(physics_snapshot, i):
    a = np.arange(1000.0) * (i + 1)
    b = np.full((30, 30), float(i))  # 900 elements: a sidecar too
    refs = [weakref.ref(a), weakref.ref(b)]
    assert {"a": a, "b": b} == physics_snapshot
    del a, b
    gc.collect()
    assert [ref() is None for ref in refs] == [True, True], "a compared array is still held"
"""


@pytest.mark.parametrize("state", ["new", "matching", "failing"])
def test_compared_arrays_are_released_after_the_assertion(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(test_held=HELD)
    if state != "new":
        pytester.runpytest("-p", "no:cacheprovider", "--snapshot-update").assert_outcomes(passed=3)
    if state == "failing":
        pytester.makepyfile(test_held=HELD.replace("* (i + 1)", "* (i + 2)"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--snapshot-update")
    result.assert_outcomes(passed=3)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)

"""`--snapshot-update` of a partially failing array rewrites only the elements that moved.

Inline arrays keep the golden text of every element within tolerance, so the diff of the golden
file shows only what moved; a sidecar is rewritten with only those elements changed, and its
summary in the readable file keeps every statistic that stayed within tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_physpipe.snapshot.document import emit
from pytest_physpipe.snapshot.encoding import Decoder, Encoder
from pytest_physpipe.snapshot.merge import ArrayMerge, merge_values
from pytest_physpipe.tolerance import Tolerance, compare

pytestmark = pytest.mark.usefixtures("fresh_imports")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def golden_text(pytester: pytest.Pytester, module: str) -> str:
    return (pytester.path / "__snapshots__" / f"{module}.physics").read_text()


def sidecars(pytester: pytest.Pytester, module: str) -> list[Path]:
    return sorted((pytester.path / "__snapshots__" / f"{module}.arrays").glob(".*.npy"))


# The result: every element moves by a relative 1e-12 (within tolerance, but different bits);
# elements 5 and 17 double (outside tolerance) when MOVE is set.
ARRAYS = """
import os
import numpy as np

def values(n):
    x = np.linspace(0.5, 1.5, n)
    if os.environ.get("MOVE"):
        x = x * (1 + 1e-12)
        x[[5, 17]] *= 2
    return x

def test_inline(physics_snapshot):
    assert {"x": values(40), "scale": 2.0} == physics_snapshot(rtol=1e-9, atol=0.0)

def test_sidecar(physics_snapshot):
    assert {"x": values(1000), "scale": 2.0} == physics_snapshot(rtol=1e-9, atol=0.0)
"""


def test_an_inline_array_update_rewrites_only_the_elements_that_moved(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_arrays=ARRAYS)
    run(pytester, "--snapshot-update", "-k", "inline").assert_outcomes(passed=1)
    before = golden_text(pytester, "test_arrays").splitlines()

    monkeypatch.setenv("MOVE", "1")
    run(pytester, "--snapshot-update", "-k", "inline").assert_outcomes(passed=1)
    after = golden_text(pytester, "test_arrays").splitlines()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    # One element per line: exactly the two elements outside tolerance changed.
    old_x = np.linspace(0.5, 1.5, 40)
    new_x = old_x * (1 + 1e-12)
    assert [(old.strip(), new.strip()) for old, new in changed] == [
        (f"{float(old_x[i])!r},", f"{float(new_x[i] * 2)!r},") for i in (5, 17)
    ]
    run(pytester, "-k", "inline").assert_outcomes(passed=1)
    result = run(pytester, "--snapshot-update", "-k", "inline")
    result.stdout.fnmatch_lines(["*1 snapshot passed.*"])
    assert golden_text(pytester, "test_arrays").splitlines() == after


def test_a_sidecar_update_changes_only_the_moved_elements_and_their_summary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_arrays=ARRAYS)
    run(pytester, "--snapshot-update", "-k", "sidecar").assert_outcomes(passed=1)
    before = golden_text(pytester, "test_arrays")
    (old_file,) = sidecars(pytester, "test_arrays")
    old_array = np.load(old_file)

    monkeypatch.setenv("MOVE", "1")
    run(pytester, "--snapshot-update", "-k", "sidecar").assert_outcomes(passed=1)
    (new_file,) = sidecars(pytester, "test_arrays")  # the old sidecar is gone
    new_array = np.load(new_file)
    moved = np.zeros(1000, dtype=bool)
    moved[[5, 17]] = True
    # Within tolerance: the golden's bits, not the result's; outside: the result's.
    assert np.array_equal(new_array[~moved], old_array[~moved])
    assert np.array_equal(new_array[moved], old_array[moved] * (1 + 1e-12) * 2)

    old_node = json.loads(before)["snapshots"]["test_sidecar"]["value"]["x"]
    new_node = json.loads(golden_text(pytester, "test_arrays"))["snapshots"]["test_sidecar"]
    new_node = new_node["value"]["x"]
    # min and max did not move beyond tolerance: their text is kept; the sidecar name, mean
    # and norm did.
    assert {k for k in old_node if old_node[k] != new_node[k]} == {"sidecar", "mean", "norm"}
    changed = [
        (old, new)
        for old, new in zip(
            before.splitlines(), golden_text(pytester, "test_arrays").splitlines(), strict=True
        )
        if old != new
    ]
    assert len(changed) == 3
    run(pytester, "-k", "sidecar").assert_outcomes(passed=1)


TYPES = """
import os
import numpy as np
import pandas as pd

def test_types(physics_snapshot):
    move = bool(os.environ.get("MOVE"))
    x = np.linspace(1.0, 2.0, 30)
    y = x * (1 + 1e-12) if move else x
    rec = np.zeros(30, dtype=[("u", "f8"), ("n", "i8")])
    rec["u"] = y
    masked = np.ma.array(y.copy(), mask=np.arange(30) % 4 == 0)
    frame = pd.DataFrame({"T": y.copy(), "P": x.copy()})
    if move:
        rec["u"][3] = 10.0
        masked[5] = 10.0
        frame.loc[7, "T"] = 10.0
    assert {"rec": rec, "masked": masked, "frame": frame, "long": list(y)} == physics_snapshot
"""


def test_tables_masked_and_structured_arrays_update_element_by_element(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pandas")
    pytester.makepyfile(test_types=TYPES)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    before = json.loads(golden_text(pytester, "test_types"))["snapshots"]["test_types"]["value"]
    monkeypatch.setenv("MOVE", "1")
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    after = json.loads(golden_text(pytester, "test_types"))["snapshots"]["test_types"]["value"]
    x = np.linspace(1.0, 2.0, 30)
    masked_data = after["masked"]["$masked"]["data"]
    assert masked_data[5] == 10.0
    assert [v for i, v in enumerate(masked_data) if i != 5] == [
        0.0 if i % 4 == 0 else x[i] for i in range(30) if i != 5
    ]
    assert after["masked"]["mask"] == before["masked"]["mask"]
    columns = dict((label, node) for label, node in after["frame"]["columns"])
    assert columns["T"]["data"] == [10.0 if i == 7 else x[i] for i in range(30)]
    assert after["frame"]["index"] == before["frame"]["index"]
    assert after["long"] == before["long"]  # within tolerance (only 1e-12 moves)
    # The structured array's sidecar holds the golden's 'u' except the moved element.
    (file,) = sidecars(pytester, "test_types")
    rec = np.load(file)
    assert rec["u"][3] == 10.0
    assert np.array_equal(np.delete(rec["u"], 3), np.delete(x, 3))
    run(pytester).assert_outcomes(passed=1)


def test_merge_replaces_arrays_whose_shape_or_dtype_changed() -> None:
    golden = {"a": np.zeros(4), "b": np.zeros(4), "c": np.arange(4)}
    actual = {"a": np.ones(5), "b": np.ones(4, dtype=np.float32), "c": np.array([0, 9, 2, 3])}
    encoder = Encoder()
    g_node = json.loads(emit(encoder.encode(golden, "")))
    a_node = json.loads(emit(Encoder().encode(actual, "")))
    comparison = compare(golden, actual, Tolerance())
    merge = ArrayMerge(
        {m.path: m.tolerance for m in comparison.mismatches},
        lambda name, dtype, shape: encoder.sidecars[name],
        {},
    )
    merged = merge_values(g_node, a_node, "", comparison.failed_paths, merge)
    assert isinstance(merged, dict)
    assert merged["a"] == a_node["a"]  # shape changed: whole
    assert merged["b"] == a_node["b"]  # dtype changed: whole
    assert merged["c"]["data"] == [0, 9, 2, 3]  # integers: the differing element
    assert Decoder().decode(merged["c"]).tolist() == [0, 9, 2, 3]  # type: ignore[attr-defined]

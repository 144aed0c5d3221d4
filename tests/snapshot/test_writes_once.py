"""Under --snapshot-update each golden file is written once per module, not once per new golden,
and a crash or an interrupt never leaves a golden file half-written or drops other goldens."""

from __future__ import annotations

import json

import pytest
from physpipe_testing import LEAN

pytestmark = pytest.mark.usefixtures("fresh_imports")


# Counts every replace of a golden file (the one writer, files.write_atomic), per file.
COUNTING_CONFTEST = """
import collections, json, os
import pytest_physpipe.snapshot.files as files

WRITES = collections.Counter()
_write_atomic = files.write_atomic

def counting(path, write):
    if path.suffix == ".physics":
        WRITES[path.name] += 1
    return _write_atomic(path, write)

files.write_atomic = counting

def pytest_unconfigure(config):
    with open(os.environ["WRITES_OUT"], "w") as handle:
        json.dump(dict(WRITES), handle)
"""

MANY = """
import numpy as np
import pytest

@pytest.mark.parametrize("i", range(40))
def test_many(physics_snapshot, i):
    assert {"x": float(i), "a": np.arange(100.0) + i} == physics_snapshot
"""


def test_each_golden_file_is_written_once_per_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile(test_one=MANY, test_two=MANY.replace("range(40)", "range(3)"))
    out = pytester.path / "writes.json"
    monkeypatch.setenv("WRITES_OUT", str(out))

    result = pytester.runpytest_subprocess(*LEAN, "--snapshot-update")
    result.assert_outcomes(passed=43)
    result.stdout.fnmatch_lines(["*43 snapshots generated.*"])
    assert json.loads(out.read_text()) == {"test_one.physics": 1, "test_two.physics": 1}
    doc = json.loads((pytester.path / "__snapshots__" / "test_one.physics").read_text())
    assert len(doc["snapshots"]) == 40
    assert len(list((pytester.path / "__snapshots__" / "test_one.arrays").iterdir())) == 40

    pytester.runpytest_subprocess(*LEAN).assert_outcomes(passed=43)
    assert json.loads(out.read_text()) == {}

    # Under xdist each worker writes each file once (at most), merging with the others'.
    for path in (pytester.path / "__snapshots__").rglob("*.physics"):
        path.unlink()
    result = pytester.runpytest_subprocess(*LEAN, "-n", "2", "--snapshot-update")
    result.assert_outcomes(passed=43)
    doc = json.loads((pytester.path / "__snapshots__" / "test_one.physics").read_text())
    assert len(doc["snapshots"]) == 40
    pytester.runpytest_subprocess(*LEAN, "-n", "2").assert_outcomes(passed=43)


MODULE_A = """
def test_a1(physics_snapshot):
    assert 1.0 == physics_snapshot

def test_a2(physics_snapshot):
    assert 2.0 == physics_snapshot
"""

MODULE_B = """
import os
import numpy as np

def test_b1(physics_snapshot):
    assert {"kept": 1.0} == physics_snapshot

def test_b2(physics_snapshot):
    assert {"new": np.arange(100.0) * float(os.environ.get("B2", "1"))} == physics_snapshot

def test_b3(physics_snapshot):
    how = os.environ.get("CRASH")
    if how == "exit":
        os._exit(3)  # a hard crash: no teardown, no session finish
    if how == "interrupt":
        raise KeyboardInterrupt
    assert 3.0 == physics_snapshot
"""


@pytest.mark.parametrize("how", ["exit", "interrupt"])
def test_a_crash_never_leaves_a_golden_file_half_written(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pytester.makepyfile(test_a=MODULE_A, test_b=MODULE_B.split("def test_b2", maxsplit=1)[0])
    pytester.runpytest_subprocess(*LEAN, "--snapshot-update").assert_outcomes(passed=3)
    golden_b = pytester.path / "__snapshots__" / "test_b.physics"
    before_b = golden_b.read_bytes()

    pytester.makepyfile(test_b=MODULE_B)
    (pytester.path / "__snapshots__" / "test_a.physics").unlink()  # module a: all new
    monkeypatch.setenv("CRASH", how)
    monkeypatch.setenv("B2", "2")
    result = pytester.runpytest_subprocess(*LEAN, "--snapshot-update")
    # Module a was complete before module b started: its goldens are on disk, whole.
    doc_a = json.loads((pytester.path / "__snapshots__" / "test_a.physics").read_text())
    assert sorted(doc_a["snapshots"]) == ["test_a1", "test_a2"]
    doc_b = json.loads(golden_b.read_text())
    if how == "exit":
        # The pending golden of test_b2 is lost, but the file is whole and test_b1's is kept.
        assert result.ret == 3
        assert golden_b.read_bytes() == before_b
    else:
        # Ctrl-C: the session finishes and writes what completed.
        assert sorted(doc_b["snapshots"]) == ["test_b1", "test_b2"]
    assert not list((pytester.path / "__snapshots__").glob(".*.tmp"))

    # The next session heals: goldens written, the crash's unreferenced sidecar collected.
    monkeypatch.delenv("CRASH")
    monkeypatch.setenv("B2", "1")
    result = pytester.runpytest_subprocess(*LEAN, "--snapshot-update")
    result.assert_outcomes(passed=5)
    doc_b = json.loads(golden_b.read_text())
    assert sorted(doc_b["snapshots"]) == ["test_b1", "test_b2", "test_b3"]
    assert len(list((pytester.path / "__snapshots__" / "test_b.arrays").iterdir())) == 1
    pytester.runpytest_subprocess(*LEAN).assert_outcomes(passed=5)

"""The physics_snapshot fixture end to end (pytester), plus its file format and messages."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pytest_physpipe.snapshot.document import emit
from pytest_physpipe.snapshot.encoding import Decoder, Encoder
from pytest_physpipe.snapshot.files import sidecar_loader
from pytest_physpipe.snapshot.provenance import explain_changes
from pytest_physpipe.tolerance import Tolerance, compare


@pytest.fixture(autouse=True)
def _fresh_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process runs re-import rewritten test modules; a .pyc validated by mtime (whole
    # seconds) and size could hand back the old module.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    # Under an outer `pytest -n`, syrupy would take the in-process runs for xdist workers.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


#: Worker start-up dominates a ``-n 2`` run; unrelated plugins only slow it down.
LEAN = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


def golden_files(pytester: pytest.Pytester) -> dict[str, bytes]:
    root = pytester.path / "__snapshots__"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def golden_doc(pytester: pytest.Pytester, module: str = "test_orbit") -> dict[str, object]:
    text = (pytester.path / "__snapshots__" / f"{module}.physics").read_text()
    doc = json.loads(text)
    assert isinstance(doc, dict)
    return doc


ORBIT = """
import os
import numpy as np

def metrics():
    e = float(os.environ.get("E_SCALE", "1"))
    t = float(os.environ.get("T_SCALE", "1"))
    return {
        "energy": -0.5 * e,
        "state": np.array([1.0, 0.0, 0.5, -0.25]),
        "trajectory": np.linspace(0.0, 1.0, 300).reshape(100, 3) * t,
        "steps": 1000,
        "label": "kepler",
    }

def test_orbit(physics_snapshot):
    assert metrics() == physics_snapshot(rtol=1e-6, atol=0.0)
"""


def test_update_then_pass_then_tolerance(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_orbit=ORBIT)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*No golden for this snapshot yet*--snapshot-update*"])

    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 snapshot generated.*"])
    files = golden_files(pytester)
    sidecars = [name for name in files if name.startswith("test_orbit.arrays/.")]
    assert len(sidecars) == 1
    assert sidecars[0].endswith(".npy")
    entry = golden_doc(pytester)["snapshots"]["test_orbit"]  # type: ignore[index]
    trajectory = entry["value"]["trajectory"]
    assert trajectory["$array"] == "float64"
    assert trajectory["shape"] == [100, 3]
    assert set(trajectory) >= {"sidecar", "min", "max", "mean", "norm"}
    assert trajectory["max"] == 1.0
    assert entry["value"]["state"]["data"] == [1.0, 0.0, 0.5, -0.25]

    run(pytester).assert_outcomes(passed=1)

    # Within tolerance: passes, and --snapshot-update does not touch a byte.
    monkeypatch.setenv("E_SCALE", str(1 + 1e-8))
    monkeypatch.setenv("T_SCALE", str(1 + 1e-8))
    run(pytester).assert_outcomes(passed=1)
    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 snapshot passed.*"])
    assert golden_files(pytester) == files

    # Outside tolerance: fails, naming each path with its errors and tolerance.
    monkeypatch.setenv("E_SCALE", "1.001")
    monkeypatch.setenv("T_SCALE", "1.001")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            # Provenance first: pytest truncates long explanations from the end.
            "*records no physpipe stages and the platform is unchanged*",
            "*2 of 5 values outside tolerance (3 passed)",
            "*energy: expected -0.5, got -0.5005 (abs err 0.0005, rel err 0.001;"
            " allowed rtol=1e-06, atol=0)",
            "*trajectory: 299 of 300 elements outside tolerance; worst trajectory[[]*]:*",
            "*max abs err 0.001, max rel err 0.001 over the 299 failing elements; the next 9*",
        ]
    )
    assert golden_files(pytester) == files


def test_update_rewrites_only_values_outside_tolerance(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_orbit=ORBIT)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    before = golden_files(pytester)
    doc_before = golden_doc(pytester)

    monkeypatch.setenv("E_SCALE", "2")  # out of tolerance
    monkeypatch.setenv("T_SCALE", str(1 + 1e-9))  # within tolerance: must be kept as is
    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 snapshot updated.*"])
    after = golden_files(pytester)
    assert [k for k in after if k.endswith(".npy")] == [k for k in before if k.endswith(".npy")]
    entry_before = doc_before["snapshots"]["test_orbit"]  # type: ignore[index]
    entry_after = golden_doc(pytester)["snapshots"]["test_orbit"]  # type: ignore[index]
    assert entry_after["value"]["energy"] == -1.0
    assert entry_after["value"]["trajectory"] == entry_before["value"]["trajectory"]
    # Only the changed leaf's line differs in the readable file.
    old_lines = before["test_orbit.physics"].decode().splitlines()
    new_lines = after["test_orbit.physics"].decode().splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert changed == [('        "energy": -0.5,', '        "energy": -1.0,')]
    run(pytester).assert_outcomes(passed=1)


STRUCTURE = """
import os
import numpy as np

def test_orbit(physics_snapshot):
    variant = os.environ.get("VARIANT", "")
    out = {
        "state": np.zeros(4, dtype=np.float32 if variant == "dtype" else np.float64),
        "trajectory": np.zeros((101 if variant == "shape" else 100, 3)),
        "label" if variant != "keys" else "name": "kepler",
        "orbits": [1.0, 2.0, 3.0] if variant == "length" else [1.0, 2.0],
    }
    assert out == physics_snapshot
"""


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("shape", "*trajectory: shape differs: golden (100, 3), result (101, 3)"),
        ("dtype", "*state: dtype differs: golden float64, result float32"),
        (
            "keys",
            "*(the whole value): keys differ; missing from the result: 'label';"
            " not in the golden: 'name'",
        ),
        ("length", "*orbits: length differs: golden has 2 items, result has 3"),
    ],
)
def test_structure_changes_fail_with_a_plain_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, variant: str, message: str
) -> None:
    pytester.makepyfile(test_orbit=STRUCTURE)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    monkeypatch.setenv("VARIANT", variant)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*structural difference(s)", message])


NAN_INF = """
import os
import numpy as np

def values():
    finite = os.environ.get("FINITE") == "1"
    big = np.linspace(0.0, 1.0, 1000)
    big[7] = np.nan
    big[8] = 5.0 if finite else np.inf
    return {
        "small": np.array([np.nan, np.inf, -np.inf, 1.0]),
        "big": big,
        "scalar_nan": float("nan"),
        "scalar_inf": 3.0 if finite else float("inf"),
    }

def test_nan(physics_snapshot):
    assert values() == physics_snapshot(equal_nan=os.environ.get("EQUAL_NAN", "1") == "1")
"""


def test_nan_and_inf_are_handled(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_nan=NAN_INF)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    entry = golden_doc(pytester, "test_nan")["snapshots"]["test_nan"]  # type: ignore[index]
    assert entry["value"]["small"]["data"] == ["nan", "inf", "-inf", 1.0]
    assert entry["value"]["scalar_nan"] == {"$float": "nan"}
    assert entry["value"]["big"]["nonfinite"] == 2
    assert entry["value"]["big"]["max"] == 1.0  # summaries skip the non-finite values
    run(pytester).assert_outcomes(passed=1)

    monkeypatch.setenv("EQUAL_NAN", "0")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*3 of 4 values outside tolerance*"])

    monkeypatch.setenv("EQUAL_NAN", "1")
    monkeypatch.setenv("FINITE", "1")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*big: 1 of 1000 elements outside tolerance; worst big[[]8]: expected inf, got 5.0*",
            "*scalar_inf: expected inf, got 3.0*",
        ]
    )


TWO_TESTS = """
import numpy as np

def test_kept(physics_snapshot):
    assert {"x": 1.0} == physics_snapshot

def test_dropped(physics_snapshot):
    assert {"big": np.arange(100.0)} == physics_snapshot
"""


def test_unused_goldens_are_reported_then_deleted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_orbit=TWO_TESTS)
    run(pytester, "--snapshot-update").assert_outcomes(passed=2)
    assert len([f for f in golden_files(pytester) if f.endswith(".npy")]) == 1

    pytester.makepyfile(test_orbit=TWO_TESTS.split("def test_dropped", maxsplit=1)[0])
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert result.ret == 1  # syrupy fails a run that leaves goldens unused
    result.stdout.fnmatch_lines(["*1 snapshot unused.*", "*--snapshot-update to delete*"])

    result = run(pytester, "--snapshot-update")
    result.stdout.fnmatch_lines(["*1 unused snapshot deleted.*"])
    assert list(golden_files(pytester)) == ["test_orbit.physics"]  # its sidecar went too
    assert not (pytester.path / "__snapshots__" / "test_orbit.arrays").exists()
    run(pytester).assert_outcomes(passed=1)


def test_regeneration_is_byte_identical(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_orbit=ORBIT, test_nan=NAN_INF)
    run(pytester, "--snapshot-update").assert_outcomes(passed=2)
    first = golden_files(pytester)
    golden = pytester.path / "__snapshots__" / "test_orbit.physics"
    stamp = golden.stat().st_mtime_ns

    run(pytester, "--snapshot-update").assert_outcomes(passed=2)
    assert golden.stat().st_mtime_ns == stamp  # nothing to write, nothing written
    for path in (pytester.path / "__snapshots__").rglob("*"):
        if path.is_file():
            path.unlink()
    run(pytester, "--snapshot-update").assert_outcomes(passed=2)
    assert golden_files(pytester) == first


PARAMETRIZED = """
import numpy as np
import pytest

@pytest.mark.parametrize("n", [1, 2, 70])
def test_series(physics_snapshot, n):
    assert {"x": np.arange(float(n)), "n": n} == physics_snapshot

def test_named(physics_snapshot):
    assert 1.5 == physics_snapshot(name="first")
    assert 2.5 == physics_snapshot(name="second")
"""


def test_parametrized_tests_get_one_golden_per_id(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_orbit=PARAMETRIZED)
    run(pytester, "--snapshot-update").assert_outcomes(passed=4)
    names = list(golden_doc(pytester)["snapshots"])  # type: ignore[call-overload]
    assert names == [
        "test_named[first]",
        "test_named[second]",
        "test_series[1]",
        "test_series[2]",
        "test_series[70]",
    ]
    run(pytester).assert_outcomes(passed=4)


def test_xdist_two_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_orbit=PARAMETRIZED, test_nan=NAN_INF)
    run(pytester, "--snapshot-update").assert_outcomes(passed=5)
    serial = golden_files(pytester)
    for path in (pytester.path / "__snapshots__").rglob("*"):
        if path.is_file():
            path.unlink()

    result = pytester.runpytest_subprocess(*LEAN, "-n", "2", "--snapshot-update")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*6 snapshots generated.*"])
    assert golden_files(pytester) == serial  # both workers merged into the same files

    pytester.makepyfile(test_orbit=PARAMETRIZED.split("def test_named", maxsplit=1)[0])
    result = pytester.runpytest_subprocess(*LEAN, "-n", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*4 snapshots passed. 2 snapshots unused.*"])


def test_ini_sets_default_tolerances(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_orbit="""
        import os

        def test_energy(physics_snapshot):
            assert {"energy": -0.5 * float(os.environ.get("E_SCALE", "1"))} == physics_snapshot
        """
    )
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    monkeypatch.setenv("E_SCALE", "1.001")
    run(pytester).assert_outcomes(failed=1)
    pytester.makeini("[pytest]\nphyspipe_snapshot_rtol = 1e-2\nphyspipe_snapshot_atol = 0\n")
    run(pytester).assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nphyspipe_snapshot_rtol = loose\n")
    result = run(pytester)
    assert result.ret != 0
    assert "physpipe_snapshot_rtol" in result.stdout.str() + result.stderr.str()


def test_per_path_tolerances(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(
        test_orbit="""
        import os
        import numpy as np

        def test_fields(physics_snapshot):
            s = float(os.environ.get("SCALE", "1"))
            out = {"energy": -0.5 * s, "fields": {"E": np.ones(3) * s, "B": np.ones(3) * s}}
            assert out == physics_snapshot(
                rtol=0, atol=0, tolerances={"energy": {"rtol": 1e-2}, "fields.*": {"atol": 1e-3}}
            )

        def test_typo(physics_snapshot):
            assert {"energy": 1.0} == physics_snapshot(tolerances={"enrgy": {"rtol": 1}})
        """
    )
    # The outer run turns warnings into errors; let the inner runs report this one.
    show = ("-W", "always::pytest_physpipe.errors.PhyspipeWarning")
    result = run(pytester, *show, "--snapshot-update")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*PhyspipeWarning*'enrgy' matched no value*"])
    monkeypatch.setenv("SCALE", str(1 + 1e-4))
    result = run(pytester, *show)
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*PhyspipeWarning*'enrgy' matched no value*"])
    monkeypatch.setenv("SCALE", str(1 + 5e-3))
    result = run(pytester, "-k", "fields")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*2 of 3 values outside tolerance (1 passed)",
            "*fields.B: 3 of 3 elements outside tolerance;*allowed rtol=0, atol=0.001)",
            "*fields.E: 3 of 3 elements*",
        ]
    )


AMBER = """
import numpy as np

def test_both(snapshot, physics_snapshot):
    assert {"label": "kepler"} == snapshot
    assert {"u": np.linspace(0.0, 1.0, 500)} == physics_snapshot
"""


def test_sidecars_survive_other_extensions_cleanup(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_orbit=AMBER)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    files = golden_files(pytester)
    assert any(f.endswith(".npy") for f in files)
    assert "test_orbit.ambr" in files
    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=1)
    assert "deleted" not in result.stdout.str()
    assert golden_files(pytester) == files
    run(pytester).assert_outcomes(passed=1)


def test_corrupt_or_missing_sidecar(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_orbit=AMBER.replace('assert {"label"', "# "))
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    (sidecar,) = (pytester.path / "__snapshots__" / "test_orbit.arrays").iterdir()
    data = bytearray(sidecar.read_bytes())
    data[-1] ^= 0xFF
    sidecar.write_bytes(bytes(data))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*does not match its checksum*--snapshot-update*"])
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    run(pytester).assert_outcomes(passed=1)

    sidecar.unlink()
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*golden array file*is missing*"])


def test_unreadable_golden_file_says_what_to_do(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_orbit="def test_x(physics_snapshot):\n    assert 1.0 == physics_snapshot\n"
    )
    (pytester.path / "__snapshots__").mkdir()
    (pytester.path / "__snapshots__" / "test_orbit.physics").write_text("<<<<<<< HEAD\n{")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*is not valid JSON*merge-conflict markers*"])


def test_unsupported_values_name_the_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_orbit="""
        import numpy as np

        def test_object(physics_snapshot):
            assert {"solver": [object()]} == physics_snapshot

        def test_object_array(physics_snapshot):
            assert {"u": np.array([1, "a"], dtype=object)} == physics_snapshot
        """
    )
    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*at solver[[]0]: cannot compare a builtins.object*",
            "*at u: an array of dtype object holds Python objects*",
        ]
    )


STAGES = """
import os
import numpy as np
from pytest_physpipe import StageConfig, stage

class GridConfig(StageConfig):
    n: int = int(os.environ.get("GRID_N", "8"))

@stage
def grid(config: GridConfig) -> np.ndarray:
    return np.linspace(0.0, 1.0, config.n)

def test_total(grid, physics_snapshot):
    assert {"total": float(grid.sum())} == physics_snapshot
"""


def test_golden_records_provenance_and_failure_explains_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_orbit=STAGES)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    entry = golden_doc(pytester)["snapshots"]["test_total"]  # type: ignore[index]
    stages = entry["stages"]
    if not stages:
        pytest.skip("pytest_physpipe.session.stage_provenance is not available yet")
    assert stages["grid"]["config"] == {"n": 8}
    assert set(stages["grid"]) >= {"key", "code", "config", "version"}
    assert set(entry["platform"]) == {"machine", "numpy", "python", "system"}

    monkeypatch.setenv("GRID_N", "9")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*Since the golden was written: stage 'grid': its config changed (n: 8 -> 9).*"]
    )


def test_platform_only_change_is_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_orbit="""
        import os

        def test_energy(physics_snapshot):
            assert {"energy": -0.5 * float(os.environ.get("E_SCALE", "1"))} == physics_snapshot
        """
    )
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    golden = pytester.path / "__snapshots__" / "test_orbit.physics"
    doc = json.loads(golden.read_text())
    doc["snapshots"]["test_energy"]["platform"]["numpy"] = "1.26.4"
    golden.write_text(json.dumps(doc))
    run(pytester).assert_outcomes(passed=1)  # provenance alone never fails a test
    monkeypatch.setenv("E_SCALE", "1.001")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*only the platform changed (numpy 1.26.4 -> *widen the tolerance*"]
    )


def test_array_equality_operators_reach_the_snapshot(pytester: pytest.Pytester) -> None:
    # ndarray.__eq__ would compare element by element; numpy scalars likewise.
    pytester.makepyfile(
        test_orbit="""
        import numpy as np

        def test_array(physics_snapshot):
            assert np.arange(3.0) == physics_snapshot
            assert np.float32(0.5) == physics_snapshot
            assert physics_snapshot == np.int64(7)
        """
    )
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    run(pytester).assert_outcomes(passed=1)


# -- explain_changes ---------------------------------------------------------------------------

PLATFORM = {"machine": "x86_64", "numpy": "2.0.0", "python": "3.11.7", "system": "Linux"}


def _entry(**stage: object) -> dict[str, object]:
    base = {"key": "k1", "code": "c1", "config": {"n": 8}, "version": None}
    return {"stages": {"heat": {**base, **stage}}, "platform": dict(PLATFORM)}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"code": "c2", "key": "k2"}, "stage 'heat': its code changed."),
        ({"version": 2, "key": "k2"}, "stage 'heat': its version changed (None -> 2)."),
        ({"key": "k2"}, "stage 'heat': its key changed (an upstream stage"),
        ({"config": {"n": 9, "dt": 0.1}}, "its config changed (dt: '(unset)' -> 0.1, n: 8 -> 9)"),
    ],
)
def test_explain_changes_names_what_changed(change: dict[str, object], expected: str) -> None:
    (line,) = explain_changes(_entry(), _entry(**change))
    assert line.startswith("Since the golden was written:")
    assert expected in line


def test_explain_changes_platform_and_stage_sets() -> None:
    newer = _entry()
    newer["platform"] = {**PLATFORM, "numpy": "2.4.0"}
    (line,) = explain_changes(_entry(), newer)
    assert "code and config of its stages are unchanged" in line
    assert "only the platform changed (numpy 2.0.0 -> 2.4.0)" in line
    (line,) = explain_changes(_entry(), _entry())
    assert "nondeterminism" in line
    (line,) = explain_changes({"stages": {}}, _entry())
    assert "stage 'heat' was not used when the golden was written" in line
    (line,) = explain_changes(_entry(), {"stages": {}, "platform": PLATFORM})
    assert "stage 'heat' is no longer used" in line


# -- the file format ---------------------------------------------------------------------------


def _round_trip(value: object, array_dir: Path) -> tuple[object, str]:
    encoder = Encoder()
    node = encoder.encode(value, "")
    for name, array in encoder.sidecars.items():
        np.save(array_dir / name, array, allow_pickle=False)
    text = emit(node)
    parsed = json.loads(text)
    assert emit(parsed) == text  # parse + emit is the identity: no churn on rewrite
    return Decoder(sidecar_loader(array_dir)).decode(parsed), text


@pytest.mark.parametrize(
    "array",
    [
        np.linspace(0, 1, 200, dtype=np.float32),
        np.arange(100, dtype=">f8"),
        (np.arange(80) + 1j * np.arange(80)).astype(np.complex64),
        np.arange(12, dtype=np.uint64).reshape(2, 3, 2) * (2**63 // 11),
        np.array([True, False] * 40),
        np.array(["ab", "ĉd", ""]),
        np.array([b"raw", b"bytes"]),
        np.array(["2024-01-01", "NaT"], dtype="datetime64[s]"),
        np.arange(3, dtype=np.longdouble) / 3,
        np.zeros((0, 3)),
        np.zeros(3, dtype=[("x", "f8"), ("n", "i4")]),
        np.arange(400.0).reshape(20, 20)[:, ::3],  # not contiguous
        np.array(np.float16(0.1)),
    ],
    ids=lambda a: f"{a.dtype}-{a.shape}",
)
def test_arrays_round_trip_exactly(array: np.ndarray, tmp_path: Path) -> None:
    decoded, _ = _round_trip({"a": array}, tmp_path)
    assert compare({"a": array}, decoded, Tolerance(rtol=0, atol=0)).ok
    if array.ndim:
        assert decoded["a"].dtype.kind == array.dtype.kind  # type: ignore[index]


def test_small_arrays_inline_large_ones_go_to_a_sidecar(tmp_path: Path) -> None:
    _, text = _round_trip({"small": np.arange(64.0), "large": np.arange(65.0)}, tmp_path)
    node = json.loads(text)
    assert "data" in node["small"]
    assert "sidecar" not in node["small"]
    assert node["large"]["sidecar"].startswith(".")
    assert "data" not in node["large"]
    assert (node["large"]["min"], node["large"]["max"], node["large"]["mean"]) == (0, 64.0, 32.0)
    assert node["large"]["norm"] == pytest.approx(float(np.linalg.norm(np.arange(65.0))))


def test_keys_that_look_like_tags_are_escaped(tmp_path: Path) -> None:
    value = {"$array": 1, "$$x": (1, 2.5), 3: "three", (1, "a"): None}
    decoded, _text = _round_trip(value, tmp_path)
    assert decoded == value
    assert compare(value, decoded).ok


finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
values = st.recursive(
    finite_or_not
    | st.integers()
    | st.booleans()
    | st.none()
    | st.text(max_size=4)
    | st.complex_numbers(allow_nan=True, allow_infinity=True)
    | hnp.arrays(
        st.sampled_from([np.float64, np.float32, np.int32, np.complex128, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=2, max_side=9),
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children)
        | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(values)
def test_any_value_round_trips_exactly(value: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        decoded, _ = _round_trip(value, Path(tmp))
        assert compare(value, decoded, Tolerance(rtol=0, atol=0)).ok


def test_floats_are_written_at_full_precision(tmp_path: Path) -> None:
    x = math.pi * 1e-300
    decoded, text = _round_trip({"x": x, "y": 0.1 + 0.2, "z": -0.0}, tmp_path)
    assert decoded == {"x": x, "y": 0.1 + 0.2, "z": -0.0}
    assert '"y": 0.30000000000000004' in text
    assert math.copysign(1.0, decoded["z"]) == -1.0

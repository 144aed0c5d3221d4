"""What physicists compare besides dicts of floats: pandas tables, masked and structured arrays,
np.matrix, long lists, and what a failure message says about them (pytester and unit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_physpipe.snapshot.document import emit
from pytest_physpipe.snapshot.encoding import Decoder, Encoder
from pytest_physpipe.snapshot.files import sidecar_loader
from pytest_physpipe.tolerance import Tolerance, ToleranceRules, compare

pd = pytest.importorskip("pandas")


pytestmark = pytest.mark.usefixtures("fresh_imports")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def golden_files(pytester: pytest.Pytester) -> dict[str, bytes]:
    root = pytester.path / "__snapshots__"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def round_trip(value: object, tmp_path: Path) -> object:
    encoder = Encoder()
    node = encoder.encode(value, "")
    for name, array in encoder.sidecars.items():
        np.save(tmp_path / name, array, allow_pickle=False)
    parsed = json.loads(emit(node))
    return Decoder(sidecar_loader(tmp_path)).decode(parsed)


# -- pandas ------------------------------------------------------------------------------------

TABLE = """
import os
import numpy as np
import pandas as pd

def table():
    scale = float(os.environ.get("P_SCALE", "1"))
    t = np.linspace(0.0, 1.0, 200)
    return pd.DataFrame(
        {"P [bar]": 1.0 + t * scale, "T": 300.0 + t, "phase": ["gas"] * 200},
        index=pd.Index(t, name="time"),
    )

def test_table(physics_snapshot):
    assert table() == physics_snapshot(rtol=1e-12, tolerances={"P [bar]": {"rtol": 1e-2}})

def test_series(physics_snapshot):
    assert table()["T"] == physics_snapshot
"""


def test_dataframes_compare_per_column_with_the_index(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_table=TABLE)
    run(pytester, "--snapshot-update").assert_outcomes(passed=2)
    files = golden_files(pytester)
    doc = json.loads(files["test_table.physics"])
    node = doc["snapshots"]["test_table"]["value"]
    assert node["$frame"] == "DataFrame"
    assert [label for label, _ in node["columns"]] == ["P [bar]", "T", "phase"]
    run(pytester).assert_outcomes(passed=2)

    # "P [bar]" (a key with a space and brackets) gets its own tolerance: 0.1% passes.
    monkeypatch.setenv("P_SCALE", "1.001")
    run(pytester).assert_outcomes(passed=2)
    monkeypatch.setenv("P_SCALE", "1.5")
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(['*[[]"P [[]bar[]]"[]]: * of 200 elements outside tolerance*'])
    assert golden_files(pytester) == files


def test_a_changed_index_or_column_set_is_named(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    result = compare(df, df.rename(index={1: 5}))
    assert any(m.path == "index" for m in result.mismatches)
    result = compare(df, df.drop(columns="b"))
    (difference,) = result.differences
    assert "keys differ; missing from the result: 'b'" in difference.describe()
    assert "type differs: golden is a DataFrame, result is a Series" in "\n".join(
        compare(df, df["a"]).describe()
    )
    back = round_trip(df, tmp_path)
    assert compare(back, df).ok
    assert compare(df.iloc[:, ::-1], df).ok  # column order does not count


def test_tables_that_cannot_be_stored_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match=r"column 'x' holds Python objects.*astype"):
        compare(pd.DataFrame({"x": [object()]}), pd.DataFrame({"x": [object()]}))
    dates = pd.DataFrame({"t": [pd.Timestamp("2020-01-01", tz="UTC")]})
    with pytest.raises(TypeError, match=r"column 't' holds Python objects"):
        Encoder().encode(dates.astype(object), "")
    multi = pd.DataFrame([[1.0]], columns=pd.MultiIndex.from_tuples([("a", "b")]))
    with pytest.raises(TypeError, match="MultiIndex columns"):
        Encoder().encode(multi, "")


# -- masked, structured, matrix ---------------------------------------------------------------


def test_masked_arrays_compare_data_and_mask(tmp_path: Path) -> None:
    golden = np.ma.array([1.0, 2.0, 3.0], mask=[False, True, False])
    hidden_change = np.ma.array([1.0, 99.0, 3.0], mask=[False, True, False])
    assert compare(golden, hidden_change).ok  # what the mask hides is not a result
    unmasked = np.ma.array([1.0, 2.0, 3.0], mask=[False, False, False])
    assert {m.path for m in compare(golden, unmasked).mismatches} == {"mask", "data"}
    assert "type differs" in compare(golden, golden.data).describe()[1]
    back = round_trip({"m": golden}, tmp_path)
    assert isinstance(back, dict)
    assert isinstance(back["m"], np.ma.MaskedArray)
    assert compare(back, {"m": golden}).ok


def test_structured_arrays_compare_per_field_with_tolerances(tmp_path: Path) -> None:
    dtype = [("x", "f8"), ("n", "i8")]
    golden = np.array([(1.0, 2), (3.0, 4)], dtype=dtype)
    moved = golden.copy()
    moved["x"] *= 1.01
    rules = ToleranceRules.build(Tolerance(rtol=1e-9), {"x": {"rtol": 0.1}})
    assert compare(golden, moved, rules).ok
    (mismatch,) = compare(golden, moved).mismatches
    assert mismatch.path == "x"
    other = np.zeros(2, dtype=[("x", "f8"), ("m", "i8")])
    assert (
        "fields differ: golden ['x', 'n'], result ['x', 'm']"
        in compare(golden, other).describe()[1]
    )
    assert compare(round_trip(golden, tmp_path), golden).ok


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_compares_as_its_array(tmp_path: Path) -> None:
    m = np.matrix([[1.0, 2.0], [3.0, 4.0]])
    assert compare(m, np.asarray(m)).ok
    assert compare(round_trip(m, tmp_path), m).ok
    assert not compare(m, m * 2).ok


SNAPSHOTS = """
import os
import numpy as np

def test_types(physics_snapshot):
    s = float(os.environ.get("SCALE", "1"))
    rec = np.array([(1.0, 2), (3.0 * s, 4)], dtype=[("x", "f8"), ("n", "i8")])
    masked = np.ma.array(np.arange(100.0) * s, mask=np.arange(100) % 3 == 0)
    assert {
        "rec": rec,
        "masked": masked,
        "matrix": np.matrix([[1.0, 2.0]]),
        "long": [0.5 * i * s for i in range(1000)],
        "ints": list(range(200)),
    } == physics_snapshot(tolerances={"rec.x": {"rtol": 1e-2}})
"""


def test_new_value_types_round_trip_and_update(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_types=SNAPSHOTS)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    files = golden_files(pytester)
    assert len(files["test_types.physics"]) < 4000  # 1000 floats stored as an array
    run(pytester).assert_outcomes(passed=1)
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    assert golden_files(pytester) == files

    monkeypatch.setenv("SCALE", "1.001")  # rec.x passes (1e-2), the rest fails
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*long: 999 of 1000 elements outside tolerance*"])
    result = run(pytester, "--snapshot-update")
    result.assert_outcomes(passed=1)
    run(pytester).assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "__snapshots__" / "test_types.physics").read_text())
    assert (
        doc["snapshots"]["test_types"]["value"]["rec"]
        == json.loads(files["test_types.physics"])["snapshots"]["test_types"]["value"]["rec"]
    )  # within tolerance: kept as it was


# -- long lists and capped messages --------------------------------------------------------------


def test_long_lists_compare_as_arrays_and_messages_are_capped() -> None:
    golden = [float(i) for i in range(2000)]
    actual = [x + 1.0 for x in golden]
    lines = compare(golden, actual).describe()
    assert len(lines) <= 14
    assert "2000 of 2000 elements outside tolerance" in lines[1]
    mixed_golden = [{"x": float(i)} for i in range(2000)]
    mixed_actual = [{"x": float(i) + 1} for i in range(2000)]
    lines = compare(mixed_golden, mixed_actual).describe()
    assert len(lines) == 22
    assert lines[-1].startswith("  ... and 1980 more")


def test_array_failures_list_the_ten_worst_with_indices() -> None:
    golden = np.zeros((50, 4))
    actual = golden.copy()
    actual.flat[::7] = np.arange(1, 30) * 1e-3  # 29 failing, the largest last
    (mismatch,) = compare(golden, actual, Tolerance(rtol=0, atol=1e-4)).mismatches
    assert mismatch.failing == 29
    assert len(mismatch.elements) == 10
    assert mismatch.elements[0].index == np.unravel_index(28 * 7, (50, 4))
    assert mismatch.max_abs_err == pytest.approx(0.029)
    lines = mismatch.lines()
    assert lines[1].strip().startswith("max abs err 0.029, max rel err inf over the 29 failing")
    assert len(lines) == 11


INLINE = """
import numpy as np

def test_inline(physics_snapshot):
    assert {"a": np.arange(100.0)} == physics_snapshot
"""


def test_the_inline_limit_is_an_ini_setting(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inline=INLINE)
    pytester.makeini("[pytest]\nphyspipe_snapshot_inline_max = 100\n")
    run(pytester, "--snapshot-update").assert_outcomes(passed=1)
    node = json.loads(golden_files(pytester)["test_inline.physics"])["snapshots"]["test_inline"]
    assert len(node["value"]["a"]["data"]) == 100
    assert list(golden_files(pytester)) == ["test_inline.physics"]

    pytester.makeini("[pytest]\nphyspipe_snapshot_inline_max = 99\n")
    run(pytester).assert_outcomes(passed=1)  # the layout on disk does not matter to a compare
    pytester.makeini("[pytest]\nphyspipe_snapshot_inline_max = many\n")
    result = run(pytester)
    result.stdout.fnmatch_lines(["*physpipe_snapshot_inline_max = 'many' is not a whole number*"])

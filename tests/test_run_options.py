"""Running pipelines: caching across runs, invalidation, the store location, options."""

from __future__ import annotations

import json
import re
import stat
import textwrap
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from physpipe_testing import CallLog

#: A small DAG: grid -> heat -> energy <- data (an InputFile), plus tracked and other.
STAGES = """
from pathlib import Path

from physlog import log
from pytest_physpipe import InputFile, Resources, StageConfig, StageContext, stage


def helper(x):
    return x + 1


class GridConfig(StageConfig):
    n: int = 4


class DataConfig(StageConfig):
    path: InputFile = Path("data.txt")


@stage(config=GridConfig(n=4))
def grid(config: GridConfig):
    # the grid
    log("grid")
    return list(range(config.n))


@stage(version=1, resources=Resources(cpu=1))
def heat(grid, ctx: StageContext):
    \"\"\"Twice the grid.\"\"\"
    log("heat")
    ctx.metric("total", sum(grid))
    return [x * 2 for x in grid]


@stage
def data(config: DataConfig):
    log("data")
    return config.path.read_text()


@stage
def energy(heat, data):
    log("energy")
    return sum(heat) + len(data)


@stage(track=[helper])
def tracked():
    log("tracked")
    return helper(1)


@stage
def other():
    log("other")
    return 0
"""

TESTS = """
def test_energy(energy):
    assert energy == 12 + 4 or energy > 0

def test_heat(heat, grid):
    assert len(heat) == len(grid)

def test_tracked(tracked, other):
    assert tracked >= 2 and other == 0
"""

ALL = {"grid", "heat", "data", "energy", "tracked", "other"}


@pytest.fixture
def dag(pytester: pytest.Pytester, calls: CallLog) -> CallLog:
    """The DAG above as a pytester project; returns its call log."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(stages=STAGES, test_dag="from stages import *\n" + TESTS)
    (pytester.path / "data.txt").write_text("abcd")
    return calls


def computed(log: CallLog) -> set[str]:
    found = log.take()
    assert all(count == 1 for count in found.values()), found  # never twice in one session
    return set(found)


def summary(result: pytest.RunResult) -> dict[str, int]:
    line = next(x for x in result.outlines if x.startswith("stage instances:"))
    return {word: int(n) for n, word in re.findall(r"(\d+) (hit|computed|failed)", line)}


def report(path: Path) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(path.read_text())["stages"]}


# -- exactly once, zero on rerun ------------------------------------------------------------------


def test_each_instance_computed_once_per_session_and_never_on_rerun(
    pytester: pytest.Pytester, dag: CallLog
) -> None:
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)
    assert computed(dag) == ALL
    assert summary(result) == {"hit": 0, "computed": 6, "failed": 0}
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)
    assert computed(dag) == set()
    assert summary(result) == {"hit": 6, "computed": 0, "failed": 0}


# -- invalidation ---------------------------------------------------------------------------------


def _edit_stages(old: str, new: str) -> Any:
    def edit(pytester: pytest.Pytester) -> None:
        source = (pytester.path / "stages.py").read_text()
        assert old in source
        pytester.makepyfile(stages=source.replace(old, new))

    return edit


def _edit_ini(line: str) -> Any:
    def edit(pytester: pytest.Pytester) -> None:
        pytester.makeini(f"[pytest]\n{line}\n")

    return edit


def _edit_data(pytester: pytest.Pytester) -> None:
    (pytester.path / "data.txt").write_text("abcx")


INVALIDATION = {
    "config": (_edit_stages("GridConfig(n=4))", "GridConfig(n=5))"), {"grid", "heat", "energy"}),
    "code": (_edit_stages("x * 2 for", "x * 3 for"), {"heat", "energy"}),
    "upstream code": (
        _edit_stages("range(config.n)", "range(1, config.n + 1)"),
        {"grid", "heat", "energy"},
    ),
    "version": (_edit_stages("version=1", "version=2"), {"heat", "energy"}),
    "comment": (_edit_stages("# the grid", "# the grid, on [0, n)"), set()),
    "docstring": (_edit_stages('"""Twice the grid."""', '"""Doubled."""'), set()),
    "formatting": (
        _edit_stages("return [x * 2 for x in grid]", "return [\n        x*2  for x in grid\n    ]"),
        set(),
    ),
    "decorator options that do not change results": (
        _edit_stages("Resources(cpu=1))", "Resources(cpu=1), retries=2, slow=False)"),
        set(),
    ),
    "tracked helper": (_edit_stages("return x + 1", "return x + 2"), {"tracked"}),
    "input file content": (_edit_data, {"data", "energy"}),
    "salt": (_edit_ini("physpipe_salt = v2"), ALL),
    "tracked packages": (_edit_ini("physpipe_track_packages = numpy"), ALL),
}


@pytest.mark.parametrize("edit", list(INVALIDATION))
def test_invalidation_recomputes_exactly_the_changed_stage_and_downstream(
    pytester: pytest.Pytester, dag: CallLog, edit: str
) -> None:
    change, expected = INVALIDATION[edit]
    pytester.runpytest().assert_outcomes(passed=3)
    assert computed(dag) == ALL
    change(pytester)
    pytester.runpytest().assert_outcomes(passed=3)
    assert computed(dag) == expected
    pytester.runpytest().assert_outcomes(passed=3)
    assert computed(dag) == set()


def test_missing_input_file_is_a_usage_error(pytester: pytest.Pytester, dag: CallLog) -> None:
    (pytester.path / "data.txt").unlink()
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*stage 'data'*InputFile field 'path'*data.txt*"])


# -- rebuild, no-cache, cached-only ---------------------------------------------------------------


def test_rebuild_recomputes_and_overwrites_without_changing_keys(
    pytester: pytest.Pytester, dag: CallLog
) -> None:
    first = pytester.path / "first.json"
    again = pytester.path / "again.json"
    pytester.runpytest(f"--physpipe-report={first}").assert_outcomes(passed=3)
    computed(dag)
    result = pytester.runpytest("--physpipe-rebuild", "heat", f"--physpipe-report={again}")
    result.assert_outcomes(passed=3)
    assert computed(dag) == {"heat"}
    before, after = report(first), report(again)
    assert {n: r["key"] for n, r in before.items()} == {n: r["key"] for n, r in after.items()}
    assert after["heat"]["status"] == "computed"
    assert after["energy"]["status"] == "hit"
    assert after["heat"]["created_at"] != before["heat"]["created_at"]
    # The overwritten entry is what the next run hits.
    pytester.runpytest(f"--physpipe-report={again}").assert_outcomes(passed=3)
    assert computed(dag) == set()
    assert report(again)["heat"]["created_at"] == after["heat"]["created_at"]
    pytester.runpytest("--physpipe-rebuild", "all").assert_outcomes(passed=3)
    assert computed(dag) == ALL


def test_the_plan_shows_what_a_rebuild_recomputes(pytester: pytest.Pytester, dag: CallLog) -> None:
    pytester.runpytest().assert_outcomes(passed=3)
    computed(dag)
    result = pytester.runpytest("--physpipe-plan", "--physpipe-rebuild", "heat")
    table = [line.split() for line in result.outlines]
    rows = {cells[0]: cells[2] for cells in table if len(cells) > 2 and cells[0] in ALL}
    # What the plan says is what a run with the same options does: heat is recomputed.
    assert rows["heat"] == "rebuild"
    assert {name for name, status in rows.items() if status == "cached"} == ALL - {"heat"}
    result.stdout.fnmatch_lines(
        [f"{len(ALL)} stage instance(s): * cached, 0 missing, 1 to rebuild"]
    )
    assert computed(dag) == set()
    pytester.runpytest("--physpipe-rebuild", "heat").assert_outcomes(passed=3)
    assert computed(dag) == {"heat"}


def test_rebuild_of_an_unknown_stage_is_a_usage_error(
    pytester: pytest.Pytester, dag: CallLog
) -> None:
    result = pytester.runpytest("--physpipe-rebuild", "hat")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--physpipe-rebuild hat: there is no stage named 'hat'*heat*"])
    assert computed(dag) == set()


def test_no_cache_neither_reads_nor_writes_the_store(
    pytester: pytest.Pytester, dag: CallLog
) -> None:
    result = pytester.runpytest("--physpipe-no-cache")
    result.assert_outcomes(passed=3)
    assert computed(dag) == ALL
    assert not list((pytester.path / ".physpipe").glob("entries/*/*"))
    pytester.runpytest().assert_outcomes(passed=3)
    assert computed(dag) == ALL  # nothing was stored
    pytester.runpytest("--physpipe-no-cache").assert_outcomes(passed=3)
    assert computed(dag) == ALL  # nothing was read


def test_no_cache_still_hands_out_stored_forms(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        from pytest_physpipe import stage

        @stage
        def field():
            return {"u": np.zeros(3), "pair": (1, 2)}

        def test_field(field):
            assert not field["u"].flags.writeable
            assert type(field["pair"]) is tuple
        """
    )
    pytester.runpytest("--physpipe-no-cache").assert_outcomes(passed=1)


def test_cached_only_skips_tests_needing_missing_stages(
    pytester: pytest.Pytester, dag: CallLog
) -> None:
    result = pytester.runpytest("--physpipe-cached-only", "-rs")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*--physpipe-cached-only: stage*energy*not in the store*"])
    assert computed(dag) == set()
    pytester.runpytest().assert_outcomes(passed=3)
    computed(dag)
    pytester.runpytest("--physpipe-cached-only").assert_outcomes(passed=3)
    assert computed(dag) == set()
    result = pytester.runpytest("--physpipe-cached-only", "--physpipe-set", "grid.n=9", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(
        ["SKIPPED*cached-only: stage grid[[]n=9[]] (*), heat[[]n=9[]] (*) is not in*"]
    )
    assert computed(dag) == set()


def test_no_cache_and_cached_only_contradict(pytester: pytest.Pytester, dag: CallLog) -> None:
    result = pytester.runpytest("--physpipe-no-cache", "--physpipe-cached-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*contradict*"])


# -- plan, report, graph --------------------------------------------------------------------------


def plan_rows(result: pytest.RunResult) -> dict[str, list[str]]:
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "physpipe plan" in line)
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip() or "stage instance(s)" in line:
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def test_plan_lists_instances_and_runs_nothing(pytester: pytest.Pytester, dag: CallLog) -> None:
    result = pytester.runpytest("--physpipe-plan")
    assert result.ret == pytest.ExitCode.OK
    assert computed(dag) == set()
    result.stdout.no_fnmatch_line("*passed*")
    rows = plan_rows(result)
    assert set(rows) == ALL
    assert all("missing" in row for row in rows.values())
    assert "cpu=1" in rows["heat"]
    assert rows["heat"][-2:] == ["local", "new"]  # runs on, and why it is missing
    result.stdout.fnmatch_lines(["6 stage instance(s): 0 cached, 6 missing"])
    keys = {name: row[0] for name, row in rows.items()}

    pytester.runpytest("-k", "test_heat").assert_outcomes(passed=1, deselected=2)
    computed(dag)
    result = pytester.runpytest("--physpipe-plan")
    rows = plan_rows(result)
    assert {name: row[0] for name, row in rows.items()} == keys  # keys are static
    assert rows["grid"][1] == rows["heat"][1] == "cached"
    assert rows["energy"][1] == "missing"
    # Only the instances the selected tests need.
    result = pytester.runpytest("--physpipe-plan", "-k", "test_tracked")
    assert set(plan_rows(result)) == {"tracked", "other"}
    assert computed(dag) == set()


def test_plan_under_xdist(pytester: pytest.Pytester, dag: CallLog) -> None:
    result = pytester.runpytest_subprocess("--physpipe-plan", "-n", "2")
    assert result.ret == pytest.ExitCode.OK
    assert set(plan_rows(result)) == ALL
    result.stdout.fnmatch_lines(["6 stage instance(s): 0 cached, 6 missing"])
    assert computed(dag) == set()


def test_xdist_run_serves_the_right_values(pytester: pytest.Pytester, dag: CallLog) -> None:
    out = pytester.path / "report.json"
    result = pytester.runpytest_subprocess("-n", "2", f"--physpipe-report={out}")
    result.assert_outcomes(passed=3)
    found = dag.take()
    assert set(found) == ALL
    assert summary(result)["failed"] == 0
    assert set(report(out)) == ALL
    result = pytester.runpytest_subprocess("-n", "2", f"--physpipe-report={out}")
    result.assert_outcomes(passed=3)
    assert computed(dag) == set()
    assert {r["status"] for r in report(out).values()} == {"hit"}


def test_report_has_one_record_per_instance(pytester: pytest.Pytester, dag: CallLog) -> None:
    out = pytester.path / "out" / "report.json"
    pytester.runpytest(f"--physpipe-report={out}").assert_outcomes(passed=3)
    document = json.loads(out.read_text())
    records = report(out)
    assert set(records) == ALL
    assert {r["status"] for r in records.values()} == {"computed"}
    assert records["heat"]["upstream"] == {"grid": records["grid"]["key"]}
    assert records["heat"]["metrics"] == {"total": 6.0}
    assert records["grid"]["config"] == {"n": 4}
    assert document["summary"]["computed"] == 6
    pytester.runpytest(f"--physpipe-report={out}").assert_outcomes(passed=3)
    again = report(out)
    assert {r["status"] for r in again.values()} == {"hit"}
    assert {n: r["key"] for n, r in again.items()} == {n: r["key"] for n, r in records.items()}


@pytest.mark.parametrize("suffix", [".dot", ".mmd"])
def test_graph(pytester: pytest.Pytester, dag: CallLog, suffix: str) -> None:
    out = pytester.path / f"dag{suffix}"
    pytester.runpytest(f"--physpipe-graph={out}", "-k", "test_energy").assert_outcomes(
        passed=1, deselected=2
    )
    text = out.read_text()
    for name in ("grid", "heat", "data", "energy"):
        assert name in text
    assert "tracked" not in text
    assert "computed" in text
    if suffix == ".dot":
        assert text.startswith("digraph")
        assert text.count("->") == 3
    else:
        assert text.startswith("graph")
        assert text.count("-->") == 3


def test_graph_needs_a_known_extension(pytester: pytest.Pytester, dag: CallLog) -> None:
    result = pytester.runpytest("--physpipe-graph=dag.png")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--physpipe-graph*.dot*.mmd*"])


# -- the physpipe fixture and the summary ---------------------------------------------------------

RECORD_TEST = """
import json, time
from pathlib import Path
from physlog import log
from pytest_physpipe import StageConfig, StageContext, StageRecord, stage


class GridConfig(StageConfig):
    n: int = 3


@stage
def grid(config: GridConfig):
    log("grid")
    time.sleep(0.05)
    return list(range(config.n))


@stage
def heat(grid, ctx: StageContext):
    ctx.metric("m", 2)
    ctx.artifact("a.txt", b"A")
    return sum(grid)


def test_record(heat, physpipe):
    grid, record = physpipe.record("grid"), physpipe.record("heat")
    assert isinstance(record, StageRecord)
    assert record.name == "heat"
    assert record.upstream == {"grid": grid.key}
    assert grid.config == {"n": 3}
    assert grid.duration_s >= 0.04
    assert record.metrics == {"m": 2.0}
    assert Path(record.artifacts["a.txt"]).read_bytes() == b"A"
    assert record.created_at and record.host
    assert "python" in record.versions and "numpy" in record.versions
    assert physpipe.key("heat") == record.key
    with open("seen.json", "a") as handle:
        seen = {"status": grid.status, "duration": grid.duration_s, "key": grid.key}
        handle.write(json.dumps(seen) + "\\n")


def test_unknown(grid, physpipe):
    physpipe.record("nope")
"""


def test_record_fixture(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(test_record=RECORD_TEST)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*does not use a stage named 'nope'*uses: grid*"])
    pytester.runpytest().assert_outcomes(passed=1, failed=1)
    seen = [json.loads(line) for line in (pytester.path / "seen.json").read_text().splitlines()]
    assert [s["status"] for s in seen] == ["computed", "hit"]
    assert seen[0]["key"] == seen[1]["key"]
    # On a hit, duration_s is the compute time it saved.
    assert seen[1]["duration"] == seen[0]["duration"]
    assert calls.take() == Counter({"grid": 1})


def test_terminal_summary(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(
        """
        import time
        from pytest_physpipe import stage

        @stage
        def slowish():
            time.sleep(0.05)
            return 1

        @stage
        def broken():
            raise RuntimeError("boom")

        def test_ok(slowish):
            pass

        def test_broken(broken):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*- physpipe -*",
            "stage instances: 0 hit, 1 computed, 1 failed; compute *s, saved 0.00 s; store *",
        ]
    )
    names = [
        json.loads(m.read_text())["record"]["name"]
        for m in (pytester.path / ".physpipe").glob("entries/*/*/meta.json")
    ]
    assert names == ["slowish"]  # a failed stage writes nothing
    spent = re.search(r"compute (\d+\.\d+) s", result.stdout.str())
    assert spent is not None
    assert float(spent[1]) >= 0.04
    result = pytester.runpytest("-v")
    result.stdout.fnmatch_lines(
        [
            "stage instances: 1 hit, 0 computed, 1 failed; compute *, saved 0.0[5-9] s; store *B",
            "  failed*broken*",
            "  hit*slowish*",
        ]
    )


# -- store location -------------------------------------------------------------------------------

SIMPLE = """
from pytest_physpipe import stage

@stage
def one():
    return [1]

def test_one(one):
    assert one == [1]
"""


def entries(root: Path) -> int:
    return len(list(root.glob("entries/*/*/meta.json")))


def test_store_defaults_to_rootdir_dot_physpipe(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makeini("[pytest]\n")
    sub = pytester.mkdir("sub")
    (sub / "test_sub.py").write_text(textwrap.dedent(SIMPLE))
    pytester.chdir()
    result = pytester.runpytest("sub")
    result.assert_outcomes(passed=1)
    store = pytester.path / ".physpipe"
    assert entries(store) == 1
    assert (
        (store / "CACHEDIR.TAG")
        .read_text()
        .startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    assert (store / ".gitignore").read_text().strip().endswith("*")
    assert not (sub / ".physpipe").exists()
    assert stat.S_IMODE(store.stat().st_mode) == 0o700  # owner-only


def test_store_location_precedence(
    pytester: pytest.Pytester, calls: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nphyspipe_dir = from-ini\n")
    pytester.makepyfile(SIMPLE)
    pytester.runpytest().assert_outcomes(passed=1)
    assert entries(pytester.path / "from-ini") == 1
    monkeypatch.setenv("PHYSPIPE_DIR", str(pytester.path / "from-env"))
    pytester.runpytest().assert_outcomes(passed=1)
    assert entries(pytester.path / "from-env") == 1
    pytester.runpytest("--physpipe-dir", "from-option").assert_outcomes(passed=1)
    assert entries(pytester.path / "from-option") == 1
    assert not (pytester.path / ".physpipe").exists()

"""xdist workers as the local scheduler (each stage once, shared slots, the scheduler), with
real workers in subprocesses.

Every stage appends a line to ``calls.log`` (see ``conftest.PHYSLOG``), so "computed exactly
once" is read from the log, whichever worker did it. Timing claims are about order and
overlap of logged intervals, never about how long anything took.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from physpipe_testing import CallLog

from pytest_physpipe.options import Settings
from pytest_physpipe.resources import Budget
from pytest_physpipe.scheduling.hooks import from_controller

# A DAG with shared upstream work: grid -> {heat[a], heat[b]} -> energy[...], a parametrized
# mesh beside it, and many tests per instance, so several workers want the same stage at once.
DAG = """
import time
import pytest
from physlog import log
from pytest_physpipe import StageConfig, stage, sweep

class HeatConfig(StageConfig):
    alpha: float = 0.1

class MeshConfig(StageConfig):
    n: int = 4

@stage
def grid():
    log("grid")
    time.sleep(0.2)
    return list(range(8))

@stage(params=sweep(HeatConfig, alpha=[0.1, 0.2]))
def heat(grid, config: HeatConfig):
    log(f"heat {config.alpha}")
    time.sleep(0.1)
    return [config.alpha * x for x in grid]

@stage
def energy(heat):
    log(f"energy {heat[1]}")
    return sum(heat)

@stage(params=sweep(MeshConfig, n=[2, 3, 4]))
def mesh(grid, config: MeshConfig):
    log(f"mesh {config.n}")
    time.sleep(0.05)
    return grid[: config.n]

@pytest.mark.parametrize("i", range(4))
def test_energy(energy, i):
    assert energy > 0

@pytest.mark.parametrize("i", range(3))
def test_mesh(mesh, i):
    assert len(mesh) >= 2

def test_grid(grid):
    assert len(grid) == 8
"""
EXPECTED = Counter(
    ["grid", "heat 0.1", "heat 0.2", "energy 0.1", "energy 0.2", "mesh 2", "mesh 3", "mesh 4"]
)
DAG_TESTS = 2 * 4 + 3 * 3 + 1


def _runs_left(pytester: pytest.Pytester) -> list[str]:
    store = pytester.path / ".physpipe"
    leftovers = [p.name for p in (store / "slots").glob("*")] if (store / "slots").is_dir() else []
    runs = store / "runs"
    if runs.is_dir():
        leftovers += [p.name for p in runs.iterdir() if p.name != "durations.json"]
    return leftovers


def test_a_run_without_xdist_leaves_no_run_files(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(test_dag=DAG)
    pytester.runpytest_subprocess(timeout=120).assert_outcomes(passed=DAG_TESTS)
    assert calls.take() == EXPECTED
    assert (pytester.path / ".physpipe" / "slots").is_dir()  # the stages held slots there
    assert _runs_left(pytester) == []


@pytest.mark.parametrize("workers", ["2", "4"])
def test_every_stage_instance_is_computed_once_across_workers(
    pytester: pytest.Pytester, calls: CallLog, workers: str
) -> None:
    pytester.makepyfile(test_dag=DAG)
    result = pytester.runpytest_subprocess(
        "-n", workers, "-v", "--physpipe-report", "report.json", timeout=120
    )
    result.assert_outcomes(passed=DAG_TESTS)
    assert calls.take() == EXPECTED
    # The controller merged the workers' records, each naming the worker that ran it.
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["summary"]["computed"] == len(EXPECTED)
    assert {r["status"] for r in report["stages"]} == {"computed"}
    assert all(str(r["worker"]).startswith("gw") for r in report["stages"])
    result.stdout.fnmatch_lines(["*stage instances: 0 hit, 8 computed, 0 failed*", "*[[]gw*"])
    # The run's slot files and scheduling manifests are gone; only the cost history stays.
    assert _runs_left(pytester) == []
    if workers == "2":
        again = pytester.runpytest_subprocess("-n", workers, timeout=120)
        again.assert_outcomes(passed=DAG_TESTS)
        assert calls.take() == Counter()
        again.stdout.fnmatch_lines(["*stage instances: 8 hit, 0 computed, 0 failed*"])


# A plugin that notes, on the controller only, which physpipe modules it imported.
CONTROLLER_PROBE = """
import sys

def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):  # not a worker
        names = sorted(n for n in sys.modules if n.startswith("pytest_physpipe"))
        with open("controller-modules.txt", "w") as handle:
            handle.write("\\n".join(names))
"""


def test_the_controller_merges_records_without_a_session(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    # The controller runs no stage: it folds its workers' records into the summary, the
    # report and the cost history without importing the machinery a session needs.
    pytester.makepyfile(test_dag=DAG, controller_probe=CONTROLLER_PROBE)
    result = pytester.runpytest_subprocess(
        "-n", "2", "-p", "controller_probe", "--physpipe-report", "report.json", timeout=120
    )
    result.assert_outcomes(passed=DAG_TESTS)
    result.stdout.fnmatch_lines(["*stage instances: 0 hit, 8 computed, 0 failed*; store *B"])
    assert json.loads((pytester.path / "report.json").read_text())["summary"]["computed"] == 8
    durations = json.loads((pytester.path / ".physpipe" / "runs" / "durations.json").read_text())
    assert durations  # the costs --physpipe-dist schedules by
    imported = (pytester.path / "controller-modules.txt").read_text().split()
    # Nor the record model: what workers send is read, not validated (test_worker_records.py).
    assert "pytest_physpipe.records" not in imported
    assert "pytest_physpipe.session" not in imported
    assert "pytest_physpipe.store.entries" not in imported
    # Nor does it plan or fingerprint: each module costs a process pytest's loader.
    assert "pytest_physpipe.plan" not in imported
    assert "pytest_physpipe.codefp" not in imported
    assert calls.take() == EXPECTED


def test_two_concurrent_sessions_share_one_store(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(test_dag=DAG)
    # Both sessions wait for a "go" file before their tests start, so they really overlap.
    pytester.makeconftest(
        """
        import time
        from pathlib import Path

        def pytest_collection_finish(session):
            go = Path(__file__).parent / "go"
            while not go.exists():
                time.sleep(0.005)
        """
    )
    common = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    first = pytester.popen([*common, "-n", "2"], stdin=subprocess.DEVNULL)
    second = pytester.popen(common, stdin=subprocess.DEVNULL)
    (pytester.path / "go").touch()
    outputs = [proc.communicate(timeout=120) for proc in (first, second)]
    for proc, (out, err) in zip((first, second), outputs, strict=True):
        assert proc.returncode == 0, (out, err)
    assert calls.take() == EXPECTED


CRASH = """
import os, signal, time
from pathlib import Path
import pytest
from physlog import log
from pytest_physpipe import Resources, stage

MARK = Path(__file__).parent / "crashed-once"

@stage(resources=Resources(cpu=1))
def fragile():
    log(f"start {os.getpid()}")
    if not MARK.exists():
        MARK.touch()
        time.sleep(0.2)  # others are waiting on the key lock and the only CPU slot by now
        os.kill(os.getpid(), signal.SIGKILL)
    log("done")
    return 42

@pytest.mark.parametrize("i", range(4))
def test_fragile(fragile, i):
    assert fragile == 42
"""


def test_a_worker_killed_mid_stage_blocks_nobody(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(test_crash=CRASH)
    # One CPU slot: the survivors can only compute once the dead worker's slot is free again.
    result = pytester.runpytest_subprocess("-n", "2", "--physpipe-cpus", "1", timeout=120)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*worker*crashed*"])
    logged = calls.take()
    assert logged["done"] == 1
    starts = [line for line in logged if line.startswith("start")]
    assert len(starts) == 2  # the killed attempt and the one that finished, in two processes


SLOTS = """
import os, time
import pytest
from threadpoolctl import threadpool_info
from physlog import log
from pytest_physpipe import Resources, StageConfig, StageContext, stage, sweep

class Job(StageConfig):
    i: int = 0

def body(ctx, kind):
    import numpy  # noqa: F401  # loads the BLAS whose pool threadpoolctl must cap
    pools = [p["num_threads"] for p in threadpool_info()]
    start = time.time()
    time.sleep(0.25)
    log(json_line(kind, ctx, start, time.time(), pools))
    return ctx.resources.cpus

def json_line(kind, ctx, start, end, pools):
    import json
    return json.dumps({
        "kind": kind, "start": start, "end": end, "pools": pools,
        "omp": os.environ.get("OMP_NUM_THREADS"), "cpus": ctx.resources.cpus,
        "cpu_ids": list(ctx.resources.cpu_ids),
    })

@stage(params=sweep(Job, i=[0, 1, 2]), resources=Resources(cpu=2))
def wide(config: Job, ctx: StageContext):
    return body(ctx, "wide")

@stage(params=sweep(Job, i=[0, 1, 2, 3]), resources=Resources(cpu=1))
def narrow(config: Job, ctx: StageContext):
    return body(ctx, "narrow")

def test_wide(wide):
    assert wide == 2
    assert os.environ["OMP_NUM_THREADS"] == "7"  # restored after the stage

def test_narrow(narrow):
    assert narrow == 1
    assert os.environ["OMP_NUM_THREADS"] == "7"
"""


def _overlaps(intervals: list[tuple[float, float]]) -> int:
    ordered = sorted(intervals)
    return sum(1 for (_, end), (start, _) in itertools.pairwise(ordered) if start < end)


def test_slots_are_enforced_across_workers(
    pytester: pytest.Pytester, calls: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_slots=SLOTS)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    result = pytester.runpytest_subprocess("-n", "2", "--physpipe-cpus", "2", timeout=120)
    result.assert_outcomes(passed=7)
    records = [json.loads(line) for line in calls.lines()]
    wide = [r for r in records if r["kind"] == "wide"]
    narrow = [r for r in records if r["kind"] == "narrow"]
    assert (len(wide), len(narrow)) == (3, 4)
    # Two CPUs each under a budget of two: never two at once, whichever worker ran them.
    assert _overlaps([(r["start"], r["end"]) for r in wide]) == 0
    # One CPU each: the two workers run them side by side.
    assert _overlaps([(r["start"], r["end"]) for r in narrow]) >= 1
    for record in records:
        assert record["omp"] == str(record["cpus"])
        assert len(record["cpu_ids"]) == record["cpus"]
        assert record["pools"], "numpy's BLAS should be visible to threadpoolctl"
        assert all(1 <= n <= record["cpus"] for n in record["pools"])
    assert all(n == 1 for r in narrow for n in r["pools"])


def test_a_stage_over_the_budget_is_a_clear_error_under_xdist(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makepyfile(
        test_big="""
        from pytest_physpipe import Resources, stage

        @stage(resources=Resources(cpu=4))
        def big():
            return 1

        def test_big(big):
            assert big == 1
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--physpipe-cpus", "2", timeout=120)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*Stage 'big' asks for 4 CPU(s)*budget is 2 CPU(s)*"])
    assert "INTERNALERROR" not in result.stdout.str()
    assert calls.lines() == []


def test_physpipe_dist_conflicts_with_another_dist_mode(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("-n", "2", "--physpipe-dist", "--dist", "loadfile")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--physpipe-dist and --dist loadfile*"])


def test_workers_take_the_controllers_store_and_budget(tmp_path: Path) -> None:
    settings = Settings(
        store_dir=tmp_path / "local",
        plan_only=False,
        verify=False,
        graph=None,
        report=None,
        rebuild=frozenset(),
        cached_only=False,
        no_cache=False,
        overrides=(),
        cpus=None,
        gpus=None,
        backend="local",
        track_packages=(),
        salt="",
        slurm_args=(),
        pbs_args=(),
        snapshot_rtol=1e-9,
        snapshot_atol=1e-12,
        lock="auto",
        verify_max=1,
    )
    workerinput = {
        "physpipe_store_dir": str(tmp_path / "shared"),
        "physpipe_budget": {"cpus": 3, "gpu_ids": ["GPU-1", "GPU-2"]},
    }
    got, budget = from_controller(settings, workerinput)
    assert got.store_dir == tmp_path / "shared"
    assert budget == Budget(cpus=3, gpu_ids=("GPU-1", "GPU-2"))
    assert from_controller(settings, {}) == (settings, None)


def test_gpu_slots_come_from_the_controller_and_pin_devices(
    pytester: pytest.Pytester, calls: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers whose own environment differs still use the controller's budget: the conftest
    # changes CUDA_VISIBLE_DEVICES in the workers only.
    pytester.makeconftest(
        """
        import os

        def pytest_configure(config):
            if hasattr(config, "workerinput"):
                os.environ["CUDA_VISIBLE_DEVICES"] = "9"
        """
    )
    pytester.makepyfile(
        test_gpu=textwrap.dedent(
            """
            import os, time
            from physlog import log
            from pytest_physpipe import Resources, StageConfig, StageContext, stage, sweep

            class Job(StageConfig):
                i: int = 0

            @stage(params=sweep(Job, i=[0, 1, 2, 3]), resources=Resources(gpu=1))
            def on_gpu(config: Job, ctx: StageContext):
                seen = os.environ["CUDA_VISIBLE_DEVICES"]
                log(f"one {seen} {','.join(ctx.resources.gpu_ids)}")
                time.sleep(0.1)
                return seen

            @stage(resources=Resources(gpu=2))
            def pair(ctx: StageContext):
                log(f"pair {os.environ['CUDA_VISIBLE_DEVICES']} {','.join(ctx.resources.gpu_ids)}")
                return 1

            def test_gpu(on_gpu):
                assert on_gpu in ("5", "7")
                assert os.environ["CUDA_VISIBLE_DEVICES"] == "9"  # restored

            def test_pair(pair):
                assert pair == 1
            """
        )
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    result = pytester.runpytest_subprocess("-n", "2", timeout=120)
    result.assert_outcomes(passed=5)
    lines = sorted(calls.lines())
    assert lines[-1] == "pair 5,7 5,7"
    assert len(lines) == 5
    for line in lines[:-1]:
        kind, seen, granted = line.split()
        assert (kind, seen) == ("one", granted)
        assert seen in ("5", "7")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"

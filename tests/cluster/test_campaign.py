"""Cluster campaigns end to end: pytest runs against the real Slurm cluster of
.ci/slurm-up, in both dialects (``slurm``, and ``pbs`` through Slurm's Torque wrapper).

Every inner run is a subprocess (signals, and jobs that import the test module from its file)
with its own store under the pytester directory; a single-node cluster shares the local disk.
Jobs a test leaves behind are cancelled by the ``jobs`` fixture. The walltime test takes more
than a minute (Slurm rounds limits up to whole minutes) and is marked ``slow_cluster``:
deselect it with ``-m "not slow_cluster"``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from physpipe_testing import CallLog

pytestmark = pytest.mark.cluster

#: Inner runs: no benchmark plugin (it warns under xdist), no cache (faster, nothing to clean).
BASE_ARGS = ("-p", "no:benchmark", "-p", "no:cacheprovider", "-p", "no:randomly")

HEADER = """
import json
import os
import time
from pathlib import Path

from physlog import log
from pytest_physpipe import Resources, StageConfig, stage, sweep

# One CPU, a little memory: the 8-CPU test node runs the whole fan-out at once.
R = Resources(cpu=1, mem="100M", walltime="5:00")


class Point(StageConfig):
    n: int = 1
"""


# -- fixtures and helpers -------------------------------------------------------------------------


class Jobs:
    """The campaign's job files in one store, read between runs."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def submitted(self) -> dict[str, dict[str, Any]]:
        """``submitted.json`` of every key, by stage label."""
        found = {}
        for path in sorted(self.store.glob("jobs/*/submitted.json")):
            data = json.loads(path.read_text())
            found[data["stage"]] = data
        return found

    def result(self, label: str) -> dict[str, Any]:
        key_dir = next(
            p.parent
            for p in self.store.glob("jobs/*/submitted.json")
            if json.loads(p.read_text())["stage"] == label
        )
        result: dict[str, Any] = json.loads((key_dir / "result.json").read_text())
        return result

    def ids(self) -> set[str]:
        return {data["job_id"] for data in self.submitted().values()}


def _live(job_ids: set[str]) -> set[str]:
    """Which of these jobs Slurm still has pending or running (what `squeue` lists)."""
    if not job_ids:
        return set()
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-t", "PD,R,CG,CF,S", "-j", ",".join(sorted(job_ids))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return set(out.split()) & job_ids


def _wait_until_gone(job_ids: set[str], *, timeout_s: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while (live := _live(job_ids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return live


@pytest.fixture
def jobs(pytester: pytest.Pytester, calls: CallLog, slurm_cluster: None) -> Iterator[Jobs]:
    """The per-test store's jobs; any job still queued at the end is cancelled."""
    found = Jobs(pytester.path / "store")
    yield found
    leftover = _live(found.ids())
    if leftover:
        subprocess.run(["scancel", *sorted(leftover)], check=False)


@pytest.fixture(params=["slurm", "pbs"])
def dialect(request: pytest.FixtureRequest, slurm_cluster: None) -> str:
    name: str = request.param
    if name == "pbs" and shutil.which("qsub") is None:
        pytest.skip("no qsub (Slurm's Torque wrapper, package slurm-wlm-torque): run .ci/slurm-up")
    return name


def project(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(test_campaign_project=HEADER + textwrap.dedent(body))


def args(pytester: pytest.Pytester, backend: str, *extra: str) -> list[str]:
    return [
        *BASE_ARGS,
        f"--physpipe-backend={backend}",
        f"--physpipe-dir={pytester.path / 'store'}",
        *extra,
    ]


def run(pytester: pytest.Pytester, backend: str, *extra: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args(pytester, backend, *extra), timeout=180)


@contextmanager
def background(
    pytester: pytest.Pytester, backend: str, *extra: str
) -> Iterator[subprocess.Popen[str]]:
    """An inner pytest in the background (to signal it, or to run a second one beside it)."""
    inner = pytester.popen(
        [sys.executable, "-m", "pytest", *args(pytester, backend, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield inner
    finally:
        if inner.poll() is None:
            inner.kill()
        inner.wait()
        assert inner.stdout is not None
        inner.stdout.close()


def wait_for(condition: Any, what: str, *, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


# -- a campaign: submit once, with dependencies; rerun submits nothing ----------------------------

CAMPAIGN = """
@stage
def base():
    log("base")
    return 1


@stage(slow=True, resources=R)
def middle(base):
    log("middle")
    time.sleep(2)  # `top` would fail to find it in the store if it started before the commit
    return base + 1


@stage(slow=True, resources=R)
def top(middle):
    log("top")
    return middle + 1


@stage(slow=True, resources=R, params=sweep(Point, n=[1, 2, 3, 4]))
def point(config: Point):
    log(f"point {config.n}")
    return config.n * 10


def test_chain(top, physpipe):
    assert top == 3
    record = physpipe.record("top")
    assert record.status == os.environ["EXPECT"]
    if record.status == "loaded-from-job":
        assert record.backend == os.environ["BACKEND"]
        assert record.job_id and record.queued_s is not None and record.queued_s >= 0


def test_sweep(point):
    assert point % 10 == 0
"""


def test_campaign_submits_once_with_dependencies_and_a_rerun_submits_nothing(
    pytester: pytest.Pytester,
    calls: CallLog,
    jobs: Jobs,
    dialect: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKEND", dialect)
    monkeypatch.setenv("EXPECT", "loaded-from-job")
    project(pytester, CAMPAIGN)
    result = run(pytester, dialect, "--physpipe-report=report.json")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*computing base locally for a job that needs it*"])
    submitted = jobs.submitted()
    assert sorted(submitted) == [
        "middle",
        "point[n=1]",
        "point[n=2]",
        "point[n=3]",
        "point[n=4]",
        "top",
    ]
    assert len(jobs.ids()) == 6  # one job per instance
    assert {data["backend"] for data in submitted.values()} == {dialect}
    assert submitted["top"]["depends_on"] == [submitted["middle"]["job_id"]]
    assert all(data["depends_on"] == [] for label, data in submitted.items() if label != "top")
    assert str(result.stdout).count(f"as {dialect} job ") == 6
    # afterok held `top` back until `middle` had finished.
    middle, top = jobs.result("middle"), jobs.result("top")
    assert top["started_at"] >= middle["started_at"] + middle["duration_s"]
    assert (middle["job_id"], top["job_id"]) == (
        submitted["middle"]["job_id"],
        submitted["top"]["job_id"],
    )
    # Each instance computed once: base here, the slow ones in their jobs.
    assert calls.take() == dict.fromkeys(
        ["base", "middle", "top", "point 1", "point 2", "point 3", "point 4"], 1
    )
    report = json.loads((pytester.path / "report.json").read_text())
    by_name = {(r["name"], r["param_id"]): r for r in report["stages"]}
    assert by_name["base", None]["status"] == "computed"
    assert by_name["top", None]["job_id"] == submitted["top"]["job_id"]
    slow = [r for r in report["stages"] if r["name"] != "base"]
    assert len(slow) == 6
    assert all(r["status"] == "loaded-from-job" and r["backend"] == dialect for r in slow)
    assert all(r["queued_s"] is not None for r in slow)

    monkeypatch.setenv("EXPECT", "hit")
    rerun = run(pytester, dialect)
    rerun.assert_outcomes(passed=5)
    assert "submitted" not in str(rerun.stdout)
    assert jobs.submitted() == submitted
    assert calls.take() == {}


# -- failures -------------------------------------------------------------------------------------

FAILING = """
@stage(slow=True, resources=R)
def boom():
    raise ValueError("the solver diverged at step 17")


@stage(slow=True, resources=R)
def after_boom(boom):
    log("after_boom")
    return boom


@stage(slow=True, resources=R)
def fine():
    return 1


def test_boom(boom):
    pass


def test_after_boom(after_boom):
    pass


def test_fine(fine):
    assert fine == 1
"""


def test_a_stage_that_raises_fails_its_tests_with_the_traceback(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs, dialect: str
) -> None:
    project(pytester, FAILING)
    result = run(pytester, dialect)
    result.assert_outcomes(passed=1, errors=2)
    boom_id = jobs.submitted()["boom"]["job_id"]
    after_id = jobs.submitted()["after_boom"]["job_id"]
    result.stdout.fnmatch_lines(
        [
            f"*stage boom (*): {dialect} job {boom_id} ended FAILED; nothing was committed.",
            "*The job reported:",
            '*test_campaign_project.py", line *, in boom',
            "*ValueError: the solver diverged at step 17",
        ]
    )
    # test_after_boom errors with boom's failure (pytest sets boom up first); its job, held
    # by afterok, never ran and is not left pending.
    assert str(result.stdout).count("ValueError: the solver diverged at step 17") >= 2
    assert _wait_until_gone({after_id}) == set()
    assert "after_boom" not in calls.take()
    # Failures are not cached: the rerun submits boom again.
    rerun = run(pytester, dialect, "-k", "test_boom")
    rerun.assert_outcomes(errors=1, deselected=2)
    assert jobs.submitted()["boom"]["job_id"] != boom_id


SLEEPER = """
@stage(slow=True, resources=Resources(cpu=1, mem="100M", walltime=os.environ["WALLTIME"]))
def sleeper():
    log("started")
    time.sleep(float(os.environ["SLEEP"]))
    return 1


def test_sleeper(sleeper):
    pass
"""


def test_a_cancelled_job_fails_its_tests_with_that_state(
    pytester: pytest.Pytester,
    calls: CallLog,
    jobs: Jobs,
    dialect: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WALLTIME", "5:00")
    monkeypatch.setenv("SLEEP", "120")
    project(pytester, SLEEPER)
    with background(pytester, dialect) as inner:
        wait_for(lambda: "started" in calls.lines(), "the job to start")
        job_id = jobs.submitted()["sleeper"]["job_id"]
        # What a user would type; both end up in Slurm, which sends the job SIGTERM.
        cancel = ["scancel", job_id] if dialect == "slurm" else ["qdel", job_id]
        subprocess.run(cancel, check=True, capture_output=True)
        output, _ = inner.communicate(timeout=90)
    assert inner.returncode == 1, output
    if dialect == "slurm":
        expected = "ended CANCELLED; nothing was committed"
    else:  # the Torque wrapper shows a cancelled job as completed; the job itself knows
        expected = "ended by SIGTERM (cancelled, or past its walltime; pbs does not say which)"
    assert "stage sleeper (" in output
    assert f"job {job_id} {expected}" in output, output
    assert "time.sleep" in output  # where the job was when it was stopped


@pytest.mark.slow_cluster
def test_a_job_past_its_walltime_fails_its_tests_with_timeout(
    pytester: pytest.Pytester,
    calls: CallLog,
    jobs: Jobs,
    slurm_cluster: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Slurm rounds limits up to whole minutes and checks them every ~30 s: 60-100 s.
    monkeypatch.setenv("WALLTIME", "1:00")
    monkeypatch.setenv("SLEEP", "300")
    project(pytester, SLEEPER)
    result = run(pytester, "slurm")
    result.assert_outcomes(errors=1)
    job_id = jobs.submitted()["sleeper"]["job_id"]
    result.stdout.fnmatch_lines([f"*slurm job {job_id} ended TIMEOUT; nothing was committed."])


# -- interrupting pytest cancels its jobs ---------------------------------------------------------

PENDING = """
@stage(slow=True, resources=R)
def first():
    log("started")
    time.sleep(120)
    return 1


@stage(slow=True, resources=R)
def second(first):  # pending on its dependency
    return first


@stage(slow=True, resources=R, params=sweep(Point, n=[1, 2]))
def side(config: Point):
    time.sleep(120)
    return config.n


def test_second(second):
    pass


def test_side(side):
    pass
"""


@pytest.mark.parametrize(
    ("backend", "sig", "xdist"),
    [
        pytest.param("slurm", signal.SIGINT, False, id="slurm-SIGINT"),
        pytest.param("pbs", signal.SIGTERM, False, id="pbs-SIGTERM"),
        pytest.param("slurm", signal.SIGTERM, True, id="slurm-SIGTERM-xdist"),
    ],
)
def test_interrupting_pytest_cancels_its_jobs(
    pytester: pytest.Pytester,
    calls: CallLog,
    jobs: Jobs,
    backend: str,
    sig: signal.Signals,
    xdist: bool,
) -> None:
    if backend == "pbs" and shutil.which("qsub") is None:
        pytest.skip("no qsub (Slurm's Torque wrapper): run .ci/slurm-up")
    if xdist:
        pytest.importorskip("xdist")
    project(pytester, PENDING)
    with background(pytester, backend, *(["-n", "2"] if xdist else [])) as inner:
        wait_for(lambda: "started" in calls.lines(), "the first job to start")
        wait_for(lambda: len(jobs.ids()) == 4, "all four submissions")
        submitted = jobs.ids()
        assert _live(submitted) == submitted  # all pending or running
        inner.send_signal(sig)
        output, _ = inner.communicate(timeout=60)
    assert inner.returncode == pytest.ExitCode.INTERRUPTED, output
    assert _wait_until_gone(submitted) == set(), output
    if not xdist:  # an xdist worker's terminal lines do not reach the controller's output
        assert f"cancelled {backend} jobs" in output


# -- a second session reuses the jobs in flight ---------------------------------------------------

SHARED = """
@stage(slow=True, resources=R, params=sweep(Point, n=[1, 2, 3]))
def shared(config: Point):
    log(f"shared {config.n}")
    time.sleep(6)
    return config.n


def test_shared(shared):
    assert shared in (1, 2, 3)
"""


def test_a_second_session_reuses_jobs_in_flight(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs
) -> None:
    project(pytester, SHARED)
    with background(pytester, "slurm") as first:
        wait_for(lambda: len(jobs.ids()) == 3, "the first session's submissions")
        before = jobs.submitted()
        second = run(pytester, "slurm")
        output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    second.assert_outcomes(passed=3)
    for label, data in before.items():
        assert f"{label} is already in flight as job {data['job_id']}\n" in str(second.stdout)
    assert "submitted" not in str(second.stdout)
    assert jobs.submitted() == before  # no duplicate: still the first session's three jobs
    assert calls.take() == {"shared 1": 1, "shared 2": 1, "shared 3": 1}


# -- errors before anything is submitted ----------------------------------------------------------

SMALL = """
@stage
def fast():
    log("fast")
    return 1


@stage(slow=True, resources=R)
def fine(fast):
    return fast


@stage(slow=True, resources=Resources(cpu=1000, mem="100M", walltime="1:00"))
def huge(fine):
    return fine


def test_huge(huge):
    pass
"""


@pytest.mark.parametrize(("backend", "command"), [("slurm", "sbatch"), ("pbs", "qsub")])
def test_missing_commands_fail_before_anything_is_submitted(
    pytester: pytest.Pytester,
    calls: CallLog,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    command: str,
) -> None:
    # Needs no cluster: only this Python on PATH.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    project(pytester, SMALL)
    result = run(pytester, backend)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --physpipe-backend {backend}: {command} not found on PATH: load the *"
            "Nothing was submitted."
        ]
    )
    assert not (pytester.path / "store" / "jobs").exists()
    assert calls.take() == {}  # not even the fast upstream was computed


def test_a_rejected_submission_quotes_the_scheduler(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs, dialect: str
) -> None:
    project(pytester, SMALL)
    result = run(pytester, dialect)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: submitting stage huge (*) to {dialect} failed: *"
            "More processors requested than permitted*"
        ]
    )
    # `fine` went out first; the failed campaign cancelled it.
    fine = jobs.submitted()["fine"]["job_id"]
    result.stdout.fnmatch_lines([f"*cancelled {dialect} jobs {fine}"])
    assert _wait_until_gone({fine}) == set()


def test_the_plan_shows_what_would_be_submitted(
    pytester: pytest.Pytester, calls: CallLog, slurm_cluster: None
) -> None:
    project(pytester, SMALL)
    result = run(pytester, "slurm", "--physpipe-plan")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*stage*key*status*resources*runs on",
            "fast *missing*cpu=1 gpu=0 mem=4G time=1:00:00*local",
            "fine *missing*cpu=1 gpu=0 mem=100M time=5:00*slurm (slow)",
            "huge *missing*cpu=1000 gpu=0 mem=100M time=1:00*slurm (slow)",
            "3 stage instance(s): 0 cached, 3 missing",
        ]
    )
    assert not (pytester.path / "store" / "jobs").exists()
    assert calls.take() == {}

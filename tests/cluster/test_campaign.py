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
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from campaign_kit import Jobs, background, live, project, run, wait_for, wait_until_gone

if TYPE_CHECKING:
    from physpipe_testing import CallLog

pytestmark = pytest.mark.cluster


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
    if dialect == "slurm":  # the sweep went out as one job array, with a task per point
        assert str(result.stdout).count("as slurm job ") == 2
        result.stdout.fnmatch_lines(
            [
                "*submitted point[[]n=1] .. point[[]n=4] (4 instances) as slurm array job * "
                "(tasks 0-3)"
            ]
        )
        arrays = {submitted[f"point[n={n}]"]["job_id"].rsplit("_", 1)[0] for n in range(1, 5)}
        assert len(arrays) == 1
    else:  # no arrays through Torque's wrapper: one job per instance
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
    # Short: the traceback once (its end), not the job's log repeating it.
    boom_message = str(result.stdout).split("ended FAILED", 1)[1].split("Fix the cause", 1)[0]
    assert boom_message.count("ValueError: the solver diverged") == 1
    assert len(boom_message.splitlines()) <= 15
    assert "Full log: " in boom_message
    assert wait_until_gone({after_id}) == set()
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


PACKED_SLEEPERS = """

@stage(slow=True, resources=Resources(cpu=1, mem="100M", walltime="0:30"),
       params=sweep(Point, n=[1, 2]))
def packed(config: Point):
    time.sleep(float(os.environ["SLEEP"]))
    return config.n


def test_packed(packed):
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
        expected = (
            "ended by SIGTERM (cancelled, or past its walltime limit of 5:00; pbs does not say "
            "which)"
        )
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
    # Slurm rounds limits up to whole minutes and checks them every ~30 s: 60-100 s. In the
    # same run, two 30 s instances packed into one task of 1:00: the first is killed, the
    # second never starts; each message names the limit that ended it.
    monkeypatch.setenv("WALLTIME", "1:00")
    monkeypatch.setenv("SLEEP", "300")
    project(pytester, SLEEPER + PACKED_SLEEPERS)
    result = run(pytester, "slurm")
    result.assert_outcomes(errors=3)
    submitted = jobs.submitted()
    job_id = submitted["sleeper"]["job_id"]
    task = submitted["packed[n=1]"]["job_id"]
    assert submitted["packed[n=2]"]["job_id"] == task
    limit = "the walltime limit of its task (2 instances packed), 0:01:00"
    result.stdout.fnmatch_lines(
        [
            f"*slurm job {job_id} ended TIMEOUT (past its walltime limit of 1:00); nothing was "
            "committed.",
        ]
    )
    result.stdout.fnmatch_lines([f"*slurm job {task} ended TIMEOUT (past {limit});*"])
    result.stdout.fnmatch_lines(
        [f"*slurm job {task} ended TIMEOUT (its task reached {limit}, before this instance*"]
    )


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
        pytest.param("slurm", signal.SIGINT, True, id="slurm-ctrl-c-xdist"),
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
    ctrl_c = xdist and sig == signal.SIGINT  # at a terminal: the whole process group
    extra = ["-n", "2"] if xdist else []
    with background(pytester, backend, *extra, new_session=ctrl_c) as inner:
        wait_for(lambda: "started" in calls.lines(), "the first job to start")
        wait_for(lambda: len(jobs.ids()) == 4, "all four submissions")
        submitted = jobs.ids()
        assert live(submitted) == submitted  # all pending or running
        started = time.monotonic()
        if ctrl_c:
            os.killpg(inner.pid, sig)
        else:
            inner.send_signal(sig)
        output, _ = inner.communicate(timeout=60)
        took = time.monotonic() - started
    assert inner.returncode == pytest.ExitCode.INTERRUPTED, output
    assert wait_until_gone(submitted) == set(), output
    # The workers' lines reach the terminal on their stderr (prefixed [gw0]) under xdist.
    assert f"cancelled {backend} jobs" in output
    if ctrl_c:
        # Ctrl-C under xdist ends the run in a moment: no process renders, for nobody, the
        # interrupt's traceback and summary while the controller waits out xdist's 10 s for
        # its workers (8 to 16 s before, about 2 s since, on a loaded 2-core machine).
        assert took < 6, f"{took:.1f} s\n{output}"


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
    assert wait_until_gone({fine}) == set()


def test_the_plan_shows_what_would_be_submitted(
    pytester: pytest.Pytester, calls: CallLog, slurm_cluster: None
) -> None:
    project(pytester, SMALL)
    result = run(pytester, "slurm", "--physpipe-plan")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*stage*key*status*resources*runs on*after*",
            "fast *missing*cpu=1 gpu=0 mem=4G time=1:00:00*local *- *",
            "fine *missing*cpu=1 gpu=0 mem=100M time=5:00*slurm (slow) *fast *",
            "huge *missing*cpu=1000 gpu=0 mem=100M time=1:00*slurm (slow) *fine *",
            "3 stage instance(s): 0 cached, 3 missing",
        ]
    )
    assert not (pytester.path / "store" / "jobs").exists()
    assert calls.take() == {}

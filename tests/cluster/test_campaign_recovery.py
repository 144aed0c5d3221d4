"""Cluster campaigns that lose no job: GPU grants in jobs, interrupts during submission,
crashes, rebuilds, reused jobs cancelled by their owner, ``-x``, ``physpipe jobs``.

Against the real Slurm cluster of .ci/slurm-up (which advertises two fake GPUs as a GRES, so a
``gpu=1`` job gets a real allocation), in both dialects where the point concerns the backend.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from campaign_kit import Jobs, background, last_job_id, project, queued, run, wait_for

from pytest_physpipe.models import Resources
from pytest_physpipe.store.entries import Store

if TYPE_CHECKING:
    from physpipe_testing import CallLog

pytestmark = pytest.mark.cluster


# -- 1. a GPU stage sees the GPU its job was allocated --------------------------------------------

GPU = """
@stage(slow=True, resources=Resources(cpu=1, gpu=1, mem="100M", walltime="5:00"))
def on_gpu(ctx):
    return {
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "granted": list(ctx.resources.gpu_ids),
        "allocated": os.environ.get("SLURM_JOB_GPUS"),
    }


def test_gpu(on_gpu):
    assert on_gpu["visible"], on_gpu
    assert on_gpu["granted"] == on_gpu["visible"].split(","), on_gpu
    assert on_gpu["allocated"] is not None and on_gpu["granted"] == [on_gpu["allocated"]]
"""


def _has_gpu_gres() -> bool:
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, check=False
    ).stdout
    return "gpu" in out


def test_a_gpu_stage_sees_the_gpu_its_job_was_allocated(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs, dialect: str
) -> None:
    if not _has_gpu_gres():
        pytest.skip("the test cluster advertises no GPU GRES: rerun .ci/slurm-up")
    project(pytester, GPU)
    result = run(pytester, dialect)
    result.assert_outcomes(passed=1)


def test_the_allocation_budget_reads_each_schedulers_variables(tmp_path: Path) -> None:
    from pytest_physpipe.cluster.allocation import allocation_budget

    one = Resources(cpu=2, gpu=1)
    # Slurm with device cgroups: CUDA_VISIBLE_DEVICES is relative, SLURM_JOB_GPUS global.
    slurm = {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "3", "SLURM_CPUS_PER_TASK": "4"}
    assert allocation_budget(one, slurm).gpu_ids == ("0",)
    assert allocation_budget(one, slurm).cpus == 4
    # Inherited "no GPU" from the login node: the allocation's own list counts.
    assert allocation_budget(one, {"CUDA_VISIBLE_DEVICES": "", "SLURM_JOB_GPUS": "2"}).gpu_ids == (
        "2",
    )
    gpufile = tmp_path / "gpus"
    gpufile.write_text("node07-gpu1\nnode07-gpu3\n")
    torque = {"PBS_GPUFILE": str(gpufile), "PBS_NUM_PPN": "1"}
    assert allocation_budget(Resources(gpu=2), torque).gpu_ids == ("1", "3")
    assert allocation_budget(Resources(cpu=2), torque).cpus == 2  # never fewer than asked
    # Nothing says which: the job asked for two and got them, numbered from 0.
    assert allocation_budget(Resources(gpu=2), {}).gpu_ids[:2] == ("0", "1")
    assert allocation_budget(Resources(gpu=0), {}).gpu_ids == ()


# -- 2. interrupts and crashes during a submission leave no job behind, and no duplicate ----------

SWEEP = """
@stage(slow=True, resources=R, params=sweep(Point, n=list(range(12))))
def swept(config: Point):
    time.sleep(float(os.environ["SLEEP"]))
    return config.n


def test_swept(swept):
    assert 0 <= swept < 12
"""

#: A submit command that returns only a while after the job exists, as a busy controller's.
SLOW_SUBMIT = """#!/bin/bash
out=$({real} "$@") || exit $?
sleep {delay}
echo "$out"
"""


def _slow_submit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    real = subprocess.run(["which", command], capture_output=True, text=True, check=True)
    folder = pytester.path / "slow-bin"
    folder.mkdir(exist_ok=True)
    wrapper = folder / command
    wrapper.write_text(SLOW_SUBMIT.format(real=real.stdout.strip(), delay=0.3))
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def _first_marker(store: Path) -> bool:
    return any(store.glob("jobs/*/submitting.json")) or any(store.glob("jobs/*/submitted.json"))


def _kill_during_submission(
    pytester: pytest.Pytester,
    jobs: Jobs,
    dialect: str,
    sig: signal.Signals,
    seed: int,
    *extra: str,
) -> str:
    """Start the campaign, send ``sig`` at a random moment of its submission; its output."""
    delay = random.Random(seed).uniform(0.0, 3.0)  # 12 single submissions take ~4.5 s
    with background(pytester, dialect, *extra, new_session=True) as inner:
        wait_for(lambda: _first_marker(jobs.store), "the first submission")
        time.sleep(delay)
        if sig == signal.SIGINT:
            os.killpg(inner.pid, sig)  # Ctrl-C: the whole foreground group, sbatch included
        else:
            inner.send_signal(sig)
        output, _ = inner.communicate(timeout=60)
    return f"(signal {sig.name} after {delay:.2f} s, seed {seed})\n{output}"


#: One job per instance (twelve submissions to interrupt), the sweep as one job array, or as
#: one array of three tasks packing four instances each (4 x 5:00 fit in 20:00).
MODES = {
    "jobs": ("-o", "physpipe_job_arrays=false"),
    "array": (),
    "packed": ("-o", "physpipe_pack_walltime=20:00"),
}
#: Jobs (array tasks) per mode for the twelve instances.
TASKS = {"jobs": 12, "array": 12, "packed": 3}


def _mode(dialect: str, mode: str) -> tuple[str, ...]:
    if mode != "jobs" and dialect != "slurm":
        pytest.skip("no job arrays through Slurm's Torque wrapper (its qstat cannot follow tasks)")
    return MODES[mode]


@pytest.mark.parametrize("mode", ["jobs", "array", "packed"])
@pytest.mark.parametrize("attempt", range(2))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_during_submission_leaves_no_job_in_the_queue(
    pytester: pytest.Pytester,
    calls: CallLog,
    jobs: Jobs,
    dialect: str,
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
    attempt: int,
    mode: str,
) -> None:
    extra = _mode(dialect, mode)
    if mode != "jobs" and attempt:
        pytest.skip("one attempt is enough for the single sbatch of an array")
    monkeypatch.setenv("SLEEP", "120")
    _slow_submit(pytester, monkeypatch, "sbatch" if dialect == "slurm" else "qsub")
    project(pytester, SWEEP)
    seed = random.randrange(1 << 30)
    output = _kill_during_submission(pytester, jobs, dialect, sig, seed, *extra)
    # Each job Slurm still had a moment ago is cancelled, the one whose id never came back too.
    deadline = time.monotonic() + 30
    while (left := queued(pytester.path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == {}, output


@pytest.mark.parametrize("mode", ["jobs", "array", "packed"])
@pytest.mark.parametrize("attempt", range(2))
def test_a_rerun_after_kill_9_during_submission_adopts_instead_of_duplicating(
    pytester: pytest.Pytester,
    calls: CallLog,
    jobs: Jobs,
    dialect: str,
    monkeypatch: pytest.MonkeyPatch,
    attempt: int,
    mode: str,
) -> None:
    extra = _mode(dialect, mode)
    monkeypatch.setenv("SLEEP", "3")
    _slow_submit(pytester, monkeypatch, "sbatch" if dialect == "slurm" else "qsub")
    project(pytester, SWEEP)
    seed = random.randrange(1 << 30)
    before = last_job_id()
    output = _kill_during_submission(pytester, jobs, dialect, signal.SIGKILL, seed, *extra)
    rerun = run(pytester, dialect, *extra)
    rerun.assert_outcomes(passed=12)
    # One job (or array task) per instance, or per pack, over both runs: the rerun adopted
    # what the killed run had submitted.
    every = queued(pytester.path, states="all", after=before)
    assert len(every) == TASKS[mode], f"{every}\n{output}\n--- rerun:\n{rerun.stdout}"


# -- 3. --physpipe-rebuild recomputes on the cluster ----------------------------------------------

REBUILD = """
@stage(slow=True, resources=R, params=sweep(Point, n=[1, 2]))
def heavy(config: Point):
    log(f"heavy {config.n}")
    return config.n


def test_heavy(heavy, physpipe):
    assert physpipe.record("heavy").status == "loaded-from-job"
"""


def test_rebuild_recomputes_on_the_cluster_with_new_jobs(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs
) -> None:
    project(pytester, REBUILD)
    run(pytester, "slurm").assert_outcomes(passed=2)
    first = {label: data["job_id"] for label, data in jobs.submitted().items()}
    assert calls.take() == {"heavy 1": 1, "heavy 2": 1}
    # The entries say where they were computed: the backend, the job (array task), the label.
    store = Store(jobs.store)
    for label, data in jobs.submitted().items():
        loaded = store.load(data["key"])
        assert loaded is not None
        record = loaded.record
        assert (record.backend, record.job_id, record.label) == ("slurm", data["job_id"], label)
    rebuilt = run(pytester, "slurm", "--physpipe-rebuild=heavy", "--physpipe-report=r.json")
    rebuilt.assert_outcomes(passed=2)
    second = {label: data["job_id"] for label, data in jobs.submitted().items()}
    assert set(second) == set(first)
    assert not set(second.values()) & set(first.values())
    array = second["heavy[n=1]"].rsplit("_", 1)[0]
    rebuilt.stdout.fnmatch_lines(
        [f"*submitted heavy[[]n=1] .. heavy[[]n=2] (2 instances) as slurm array job {array} *"]
    )
    assert calls.take() == {"heavy 1": 1, "heavy 2": 1}  # in the jobs, not here
    report = json.loads((pytester.path / "r.json").read_text())
    assert sorted(r["job_id"] for r in report["stages"]) == sorted(second.values())


# -- 4. a slow stage below a cache=False stage: an error before anything is submitted -------------

UNCACHED = """
@stage(cache=False)
def handle():
    return object()


@stage(slow=True, resources=R)
def uses_handle(handle):
    return 1


def test_uses(uses_handle):
    pass
"""


def test_a_slow_stage_below_an_uncached_stage_is_refused_before_submitting(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs
) -> None:
    project(pytester, UNCACHED)
    result = run(pytester, "slurm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: stage uses_handle is slow and would run as a slurm job, but its upstream "
            "'handle' (handle) has cache=False: *Nothing was submitted."
        ]
    )
    assert jobs.submitted() == {}


# -- 5. a session that reused jobs submits them again when their owner cancels them ---------------

SHARED = """
@stage(slow=True, resources=R, params=sweep(Point, n=[1, 2]))
def shared(config: Point):
    log(f"shared {config.n}")
    time.sleep(float(os.environ["SLEEP"]))
    return config.n


@stage(slow=True, resources=R)
def above(shared):
    return shared


def test_above(above):
    assert above in (1, 2)
"""


def test_a_reusing_session_resubmits_jobs_their_owner_cancelled(
    pytester: pytest.Pytester,
    calls: CallLog,
    jobs: Jobs,
    dialect: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLEEP", "20")  # in flight while the second session starts, even here
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    project(pytester, SHARED)
    with background(pytester, dialect) as owner:
        wait_for(lambda: len(jobs.ids()) == 4, "the owner's submissions")
        before = jobs.ids()
        # The jobs the reuser submits again inherit its environment: they need not be slow
        # (SLEEP is read in the job, not part of the key), which saves ~40 s per dialect.
        monkeypatch.setenv("SLEEP", "0.5")
        with background(pytester, dialect) as reuser:
            assert reuser.stdout is not None
            seen = 0
            while seen < 4:  # it reuses all four (two pending on their upstream)
                line = reuser.stdout.readline()
                assert line, "the second session ended before reusing the jobs"
                seen += "is already in flight as job" in line
            owner.send_signal(signal.SIGINT)
            owner_output, _ = owner.communicate(timeout=60)
            output, _ = reuser.communicate(timeout=180)
    assert owner.returncode == pytest.ExitCode.INTERRUPTED, owner_output
    assert reuser.returncode == 0, output
    assert "submitting it again" in output, output
    assert not jobs.ids() & before  # every key now records the reuser's own job


# -- 6. the shared-store check compares short host names ------------------------------------------


def test_a_fully_qualified_hostname_matches_slurms_short_node_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm_cluster: None
) -> None:
    from pytest_physpipe.cluster.backends import SlurmBackend
    from pytest_physpipe.cluster.campaign import Campaign
    from pytest_physpipe.store.entries import Store

    short = socket.gethostname().split(".")[0]
    monkeypatch.setattr(socket, "gethostname", lambda: f"{short}.cluster.example.org")
    campaign = Campaign(
        backend=SlurmBackend(),
        store=Store(tmp_path / "store"),
        runner=cast(Any, None),
        planner=cast(Any, None),
        run_id="r",
        rootdir=tmp_path,
        cwd=tmp_path,
    )
    campaign.check()  # a local store is fine: the only node is this host


# -- 7. xdist lines, -x, `physpipe jobs` ----------------------------------------------------------

STOPPING = """
@stage(slow=True, resources=R, params=sweep(Point, n=[1, 2]))
def long(config: Point):
    time.sleep(120)
    return config.n


def test_0_fails_first():
    assert False, "a quick failure"


def test_long(long):
    pass
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_x_cancels_the_runs_jobs_and_says_so(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs, xdist: bool
) -> None:
    if xdist:
        pytest.importorskip("xdist")
    project(pytester, STOPPING)
    extra = ["-x", "-p", "xdist", "-n", "2"] if xdist else ["-x", "-p", "no:xdist"]
    started = time.monotonic()
    result = run(pytester, "slurm", *extra)
    took = time.monotonic() - started
    output = str(result.stdout) + str(result.stderr)
    assert "INTERNALERROR" not in output, output
    assert result.ret in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.INTERRUPTED), output
    ids = jobs.ids()
    assert len(ids) == 2
    # Each worker submits; under xdist the lines come through the workers' stderr.
    assert "physpipe: submitted long[n=1] .. long[n=2] (2 instances) as slurm array" in output
    assert "cancelled slurm jobs" in output, output
    assert queued(pytester.path) == {}, output
    assert took < 60, output  # not the 120 s the jobs would take


PHYSPIPE_JOBS = """
@stage(slow=True, resources=R)
def waiting():
    time.sleep(120)
    return 1


def test_waiting(waiting):
    pass
"""


def test_physpipe_jobs_lists_and_cancels_a_runs_jobs(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs
) -> None:
    project(pytester, PHYSPIPE_JOBS)
    store = pytester.path / "store"

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest_physpipe", "--dir", str(store), *argv],
            capture_output=True,
            text=True,
            check=False,
        )

    with background(pytester, "slurm") as inner:
        wait_for(lambda: len(jobs.ids()) == 1, "the submission")
        data = jobs.submitted()["waiting"]
        listed = cli("jobs")
        assert listed.returncode == 0, listed.stderr
        header, row, *_ = listed.stdout.splitlines()
        assert header.split() == ["RUN", "STAGE", "KEY", "JOB", "STATE", "AGE"]
        assert row.split()[:5] == [
            data["run_id"],
            "waiting",
            data["key"][:12],
            "slurm",
            data["job_id"],
        ]
        assert row.split()[5] in ("PENDING", "RUNNING")
        cancelled = cli("jobs", "--cancel", data["run_id"])
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"cancelled slurm jobs {data['job_id']}" in cancelled.stdout
        output, _ = inner.communicate(timeout=60)
    assert "ended CANCELLED" in output
    assert "no jobs in flight" in cli("jobs").stdout
    unknown = cli("jobs", "--cancel", "no-such-run")
    assert unknown.returncode == 1
    assert "no job of run no-such-run" in unknown.stdout


# -- 8. the plan: dependencies, jobs in flight, a backend that cannot submit ----------------------


def test_the_plan_says_when_the_backend_cannot_submit(
    pytester: pytest.Pytester, calls: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no sbatch here
    project(pytester, PHYSPIPE_JOBS)
    result = run(pytester, "slurm", "--physpipe-plan")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["waiting *missing*slurm (slow; cannot submit: sbatch not found on PATH) *- *"]
    )


def test_the_plan_shows_jobs_in_flight(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs
) -> None:
    project(pytester, PHYSPIPE_JOBS)
    with background(pytester, "slurm") as inner:
        wait_for(lambda: len(jobs.ids()) == 1, "the submission")
        job_id = jobs.submitted()["waiting"]["job_id"]
        plan = run(pytester, "slurm", "--physpipe-plan")
        inner.kill()
    plan.stdout.fnmatch_lines(
        [f"waiting *missing (in flight: slurm job {job_id}, *)*slurm (slow) *- *"]
    )

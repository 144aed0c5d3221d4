"""Integration tests of the batch backends against a real Slurm cluster (.ci/slurm-up).

"pbs" here is Slurm's Torque wrapper (Debian's slurm-wlm-torque): real qsub/qstat/qdel, with
the wrapper's limits. Its ``qstat`` shows only Q/R/C and no exit status, so a failed or
cancelled job reads as COMPLETED with ``exit_code=None``; the tests assert what is observable
(the job's side effects, and Slurm's own view through ``squeue``/``scontrol``).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_physpipe.cluster.backends import (
    Backend,
    JobInfo,
    JobRequest,
    JobState,
    PbsBackend,
    batch_backend,
)
from pytest_physpipe.errors import BackendError
from pytest_physpipe.models import ClusterOptions, Resources

pytestmark = pytest.mark.cluster


@pytest.fixture(params=["slurm", "pbs"])
def backend(request: pytest.FixtureRequest, slurm_cluster: None) -> Iterator[Backend]:
    name: str = request.param
    if name == "pbs" and shutil.which("qsub") is None:
        pytest.skip("no qsub (Slurm's Torque wrapper, package slurm-wlm-torque): run .ci/slurm-up")
    instance = batch_backend(name, timeout_s=30)
    instance.check()
    submitted: list[str] = []
    original_submit = instance.submit

    def tracking_submit(*, request: JobRequest) -> str:
        job_id = original_submit(request=request)
        submitted.append(job_id)
        return job_id

    instance.submit = tracking_submit  # type: ignore[method-assign]
    yield instance
    # Leave no job behind on the shared cluster, whatever the test did.
    instance.cancel(job_ids=submitted)


def _job(tmp_path: Path, name: str, script: str, **kwargs: object) -> JobRequest:
    args: dict[str, object] = {
        "name": name,
        "argv": ["bash", "-c", script],
        "cwd": tmp_path,
        "log_path": tmp_path / "logs" / f"{name}.log",
        "resources": Resources(cpu=1, mem="100M", walltime="5:00"),
    }
    args.update(kwargs)
    return JobRequest(**args)  # type: ignore[arg-type]


def _wait(backend: Backend, job_ids: list[str], *, timeout_s: float = 30) -> dict[str, JobInfo]:
    deadline = time.monotonic() + timeout_s
    while True:
        states = backend.status(job_ids=job_ids)
        if all(info.state.finished for info in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"jobs not finished after {timeout_s} s: {states}")
        time.sleep(0.2)


def _slurm_field(job_id: str, key: str) -> str:
    """A field of `scontrol show job` (what Slurm itself recorded, for either dialect)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    ).stdout
    for word in out.split():
        name, _, value = word.partition("=")
        if name == key:
            return value
    raise AssertionError(f"no {key} in {out!r}")


def test_job_runs_and_completes(backend: Backend, tmp_path: Path) -> None:
    request = _job(
        tmp_path,
        "writer",
        'printf "%s|%s|%s\\n" "$1" "$GREETING" "$FROM_SETUP" > out.txt; echo done',
        env={"GREETING": "hello, world"},
        cluster=ClusterOptions(setup=("export FROM_SETUP=yes",)),
    )
    request = dataclasses.replace(request, argv=[*request.argv, "argv0", "an 'odd' arg"])
    started = time.monotonic()
    job_id = backend.submit(request=request)
    submit_s = time.monotonic() - started
    assert job_id
    assert submit_s < 5, f"submission took {submit_s:.1f} s"
    info = _wait(backend, [job_id])[job_id]
    assert info.state is JobState.COMPLETED
    assert info.exit_code == (0 if backend.name == "slurm" else None)
    assert (tmp_path / "out.txt").read_text() == "an 'odd' arg|hello, world|yes\n"
    assert (tmp_path / "logs" / "writer.log").read_text().strip().endswith("done")
    assert (tmp_path / "logs" / "writer.job.sh").is_file()


def test_dependency_chain_runs_in_order(backend: Backend, tmp_path: Path) -> None:
    first = backend.submit(request=_job(tmp_path, "first", "sleep 2; echo first >> order.txt"))
    second = backend.submit(
        request=_job(tmp_path, "second", "echo second >> order.txt", depends_on=(first,))
    )
    assert backend.status(job_ids=[second])[second].state is JobState.PENDING
    states = _wait(backend, [first, second])
    assert states[first].state is JobState.COMPLETED
    assert states[second].state is JobState.COMPLETED
    assert (tmp_path / "order.txt").read_text() == "first\nsecond\n"


def test_failing_job(backend: Backend, tmp_path: Path) -> None:
    job_id = backend.submit(request=_job(tmp_path, "failing", "echo about to fail; exit 3"))
    info = _wait(backend, [job_id])[job_id]
    if backend.name == "slurm":
        assert info.state is JobState.FAILED
        assert info.exit_code == 3
        assert info.reason == "NonZeroExitCode"
    else:
        # Torque over Slurm reports "C" and no exit status: only the job's own outcome
        # record can tell. Slurm itself knows better.
        assert info.state is JobState.COMPLETED
        assert info.exit_code is None
        assert _slurm_field(job_id, "ExitCode") == "3:0"
    assert "about to fail" in (tmp_path / "logs" / "failing.log").read_text()


def test_failed_upstream_cancels_dependent(backend: Backend, tmp_path: Path) -> None:
    upstream = backend.submit(request=_job(tmp_path, "upstream", "exit 1"))
    downstream = backend.submit(
        request=_job(tmp_path, "downstream", "touch ran.txt", depends_on=(upstream,))
    )
    states = _wait(backend, [upstream, downstream])
    assert not (tmp_path / "ran.txt").exists()
    if backend.name == "slurm":
        assert states[upstream].state is JobState.FAILED
        assert states[downstream].state is JobState.CANCELLED
        assert states[downstream].reason == "DependencyNeverSatisfied"
    assert _slurm_field(downstream, "JobState") == "CANCELLED"


def test_cancel(backend: Backend, tmp_path: Path) -> None:
    job_id = backend.submit(request=_job(tmp_path, "sleeper", "sleep 600"))
    deadline = time.monotonic() + 15
    while backend.status(job_ids=[job_id])[job_id].state is not JobState.RUNNING:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    backend.cancel(job_ids=[job_id])
    info = _wait(backend, [job_id])[job_id]
    assert info.state is (JobState.CANCELLED if backend.name == "slurm" else JobState.COMPLETED)
    active = subprocess.run(
        ["squeue", "-h", "-t", "PD,R,CG,CF,S", "-j", job_id, "-o", "%i"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert active.strip() == ""
    assert _slurm_field(job_id, "JobState") == "CANCELLED"
    backend.cancel(job_ids=[job_id])  # cancelling a finished job is not an error


def test_resources_reach_the_scheduler(backend: Backend, tmp_path: Path) -> None:
    request = _job(
        tmp_path,
        "limits",
        "true",
        resources=Resources(cpu=2, mem="1536M", walltime="2:30"),
        cluster=ClusterOptions(partition="debug"),
    )
    job_id = backend.submit(request=request)
    _wait(backend, [job_id])
    # Slurm rounds a limit up to whole minutes: 2:30 (M:S) becomes 3 minutes.
    assert _slurm_field(job_id, "TimeLimit") == "00:03:00"
    assert _slurm_field(job_id, "NumCPUs") == "2"
    assert _slurm_field(job_id, "MinMemoryNode") == "1.50G"  # 1536M, as scontrol prints it
    assert _slurm_field(job_id, "Partition") == "debug"
    assert _slurm_field(job_id, "JobName") == "limits"


def test_rejected_submission_quotes_the_scheduler(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="More processors requested than permitted"):
        backend.submit(request=_job(tmp_path, "huge", "true", resources=Resources(cpu=1000)))
    with pytest.raises(BackendError, match=r"(?i)invalid partition"):
        backend.submit(
            request=_job(tmp_path, "lost", "true", cluster=ClusterOptions(partition="nope"))
        )


def test_unknown_job_vanished(backend: Backend) -> None:
    states = backend.status(job_ids=["987654"])
    assert states["987654"].state is JobState.VANISHED
    backend.cancel(job_ids=["987654"])


def test_missing_commands(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    command = "sbatch" if backend.name == "slurm" else "qsub"
    with pytest.raises(BackendError, match=f"^{command} not found on PATH: load the"):
        backend.check()
    # PBS asks `qstat --version` for the flavour before it runs qsub.
    with pytest.raises(BackendError, match=r"^(sbatch|qstat|qsub) not found on PATH"):
        backend.submit(request=_job(tmp_path, "nowhere", "true"))


def test_many_jobs_in_one_status_call(backend: Backend, tmp_path: Path) -> None:
    """A fan-out of six 1-CPU jobs runs at once on the oversubscribed node (8 CPUs)."""
    ids = [
        backend.submit(request=_job(tmp_path, f"fan{i}", f"sleep 1; echo {i} > fan{i}.txt"))
        for i in range(6)
    ]
    started = time.monotonic()
    states = _wait(backend, ids)
    assert all(info.state is JobState.COMPLETED for info in states.values())
    assert time.monotonic() - started < 5.5  # one at a time would take 6 s or more
    assert sorted(p.name for p in tmp_path.glob("fan*.txt")) == [f"fan{i}.txt" for i in range(6)]


def test_torque_array_through_slurms_wrapper(slurm_cluster: None, tmp_path: Path) -> None:
    """What is real about PBS arrays here: Slurm's wrapper takes the ``qsub -t`` line the PBS
    backend builds, and each task sees its index as PBS_ARRAY_INDEX (PBS Pro's name, set by
    Slurm's spank_pbs), which the worker reads (as it reads Torque's PBS_ARRAYID). What is not:
    its ``qstat`` reports one state per array (that of the task holding the array's id), so
    the campaign sends no arrays through it (``max_array_size`` is 0)."""
    if shutil.which("qsub") is None:
        pytest.skip("no qsub (Slurm's Torque wrapper, package slurm-wlm-torque): run .ci/slurm-up")
    detected = batch_backend("pbs", timeout_s=30)
    assert detected.max_array_size() == 0  # type: ignore[attr-defined]
    backend = PbsBackend(timeout_s=30, flavor="torque")
    request = _job(
        tmp_path,
        "array",
        'echo "$PBS_ARRAY_INDEX" > "task-$PBS_ARRAY_INDEX.txt"',
        array_size=3,
    )
    job_id = backend.submit(request=request)
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("task-*.txt"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        found = {p.name: p.read_text().split() for p in tmp_path.glob("task-*.txt")}
        assert found == {f"task-{i}.txt": [str(i)] for i in range(3)}
        assert _slurm_field(job_id, "ArrayTaskId") in ("0-2", "0", "1", "2")
    finally:
        backend.cancel(job_ids=[job_id])

"""MPI stages: ``Resources(mpi=2)`` and ``ctx.mpiexec``, with a real MPI program (OpenMPI's
``mpicc``, installed by .ci/run), locally and as a Slurm job (``--ntasks=2``, ``srun``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from campaign_kit import Jobs, project, run

from pytest_physpipe.mpi import launcher

if TYPE_CHECKING:
    from physpipe_testing import CallLog

HELLO = r"""
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    printf("rank %d of %d\n", rank, size);
    MPI_Finalize();
    return 0;
}
"""

RANKS = """
@stage(slow=os.environ["SLOW"] == "1", resources=Resources(cpu=1, mpi=2, mem="100M",
                                                           walltime="5:00"))
def ranks(ctx):
    done = ctx.mpiexec([os.environ["HELLO"]], capture_output=True, text=True)
    return {"lines": sorted(done.stdout.splitlines()), "slots": len(ctx.resources.cpu_ids),
            "job": os.environ.get("SLURM_JOB_ID"), "tasks": os.environ.get("SLURM_NTASKS")}


def test_ranks(ranks):
    assert ranks["lines"] == ["rank 0 of 2", "rank 1 of 2"], ranks
    assert ranks["slots"] == 2  # two ranks of one CPU each hold two CPU slots
    if os.environ["SLOW"] == "1":  # a job that asked for --ntasks=2
        assert ranks["job"] is not None and ranks["tasks"] == "2", ranks
    else:
        assert ranks["job"] is None
"""


@pytest.fixture
def hello(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An MPI program, compiled here; OpenMPI allowed to run as root (the CI machine)."""
    if shutil.which("mpicc") is None or shutil.which("mpiexec") is None:
        pytest.skip("no MPI here (mpicc, mpiexec): .ci/run installs OpenMPI")
    source = tmp_path / "hello.c"
    source.write_text(HELLO)
    binary = tmp_path / "hello"
    subprocess.run(["mpicc", "-o", str(binary), str(source)], check=True)
    monkeypatch.setenv("HELLO", str(binary))
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return binary


def test_the_launcher_follows_the_place() -> None:
    assert launcher(4, 2, {}) == ["mpiexec", "-n", "4"]
    assert launcher(4, 2, {"PBS_JOBID": "7.server"}) == ["mpiexec", "-n", "4"]
    assert launcher(4, 2, {"PHYSPIPE_MPIEXEC": "mpirun --bind-to none"}) == [
        "mpirun",
        "--bind-to",
        "none",
        "-n",
        "4",
    ]
    assert launcher(4, 2, {"SLURM_JOB_ID": "12"})[:3] == [
        "srun",
        "--ntasks=4",
        "--cpus-per-task=2",
    ]


def test_an_mpi_stage_runs_two_ranks_locally(
    pytester: pytest.Pytester, calls: CallLog, hello: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOW", "0")
    project(pytester, RANKS)
    result = run(pytester, "local", "--physpipe-cpus=2")
    result.assert_outcomes(passed=1)


def test_an_mpi_stage_too_big_for_the_budget_is_refused(
    pytester: pytest.Pytester, calls: CallLog, hello: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOW", "0")
    project(pytester, RANKS)
    result = run(pytester, "local", "--physpipe-cpus=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Stage 'ranks' asks for 2 CPU(s) and 0 GPU(s)*"])


@pytest.mark.cluster
def test_an_mpi_stage_runs_two_ranks_in_a_slurm_job(
    pytester: pytest.Pytester,
    calls: CallLog,
    hello: Path,
    jobs: Jobs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mpi = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=False
    ).stdout
    if "MpiDefault              = none" in mpi:
        pytest.skip("Slurm starts no PMI for srun (MpiDefault=none): rerun .ci/slurm-up")
    monkeypatch.setenv("SLOW", "1")
    project(pytester, RANKS)
    result = run(pytester, "slurm")
    result.assert_outcomes(passed=1)
    assert len(jobs.ids()) == 1

"""MPI stages: ``Resources(mpi=N)`` and ``ctx.mpiexec(argv)``, locally and in batch jobs.

An MPI stage's Python function runs once, as every stage does; it starts its ranks with
``ctx.mpiexec([...])``, which prepends the launcher of the place it runs in:

- in a Slurm job (``SLURM_JOB_ID`` is set): ``srun --ntasks=N --cpus-per-task=C``, inside the
  allocation the job asked for with ``--ntasks=N`` (the site's ``MpiDefault`` picks PMI);
- in a PBS job (``PBS_JOBID``): the site's ``mpiexec -n N``, which reads the job's node file;
- locally: ``mpiexec -n N``, while the stage holds ``N x cpu`` CPU slots of the run's budget.

``PHYSPIPE_MPIEXEC`` replaces the launcher's program (a site's wrapper, ``mpirun``,
``mpiexec.hydra``) everywhere but in Slurm jobs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_physpipe.errors import ResourceError

__all__ = ["launcher", "run_ranks"]


def launcher(ranks: int, cpus: int, environ: Mapping[str, str] | None = None) -> list[str]:
    """The command that starts ``ranks`` ranks of ``cpus`` CPUs each, here."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_ID"):
        return ["srun", f"--ntasks={ranks}", f"--cpus-per-task={cpus}", "--kill-on-bad-exit=1"]
    program = shlex.split(env.get("PHYSPIPE_MPIEXEC", "") or "mpiexec")
    return [*program, "-n", str(ranks)]


def run_ranks(
    stage: str, ranks: int, cpus: int, argv: Sequence[str], **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """Run ``argv`` as ``ranks`` MPI ranks; raise if it fails (``check=True`` by default)."""
    if ranks < 1:
        raise ResourceError(
            f"stage {stage!r} called ctx.mpiexec() but asks for no MPI ranks: declare "
            "resources=Resources(mpi=N) (N ranks; cpu= is the CPUs of each rank)."
        )
    command = [*launcher(ranks, cpus), *argv]
    check = bool(kwargs.pop("check", True))
    try:
        return subprocess.run(command, check=check, **kwargs)
    except FileNotFoundError:
        raise ResourceError(
            f"stage {stage!r}: {command[0]} not found on PATH, so its {ranks} MPI ranks cannot "
            "start. Load the site's MPI module (ClusterOptions(setup=['module load openmpi'])), "
            "install an MPI (OpenMPI, MPICH), or name the launcher in PHYSPIPE_MPIEXEC."
        ) from None

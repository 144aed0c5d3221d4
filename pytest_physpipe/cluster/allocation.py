"""What a batch job was granted: its CPUs and GPU ids, read from the allocation's environment.

Inside a job the scheduler, not the run's ``--physpipe-cpus``/``--physpipe-gpus`` budget,
decides what the stage may use. :func:`allocation_budget` turns the job's environment into a
:class:`~pytest_physpipe.resources.Budget`, so the worker's runner hands the stage the devices
the scheduler gave the job (``ctx.resources.gpu_ids``, ``CUDA_VISIBLE_DEVICES``), never an
empty list. The sources, first that answers:

- GPUs: ``CUDA_VISIBLE_DEVICES`` when it names devices (Slurm's ``gres/gpu`` and PBS Pro set
  it, relative to the devices the job may see), then Slurm's ``SLURM_STEP_GPUS`` /
  ``SLURM_JOB_GPUS`` (indices on the node), then Torque's ``PBS_GPUFILE`` (lines
  ``<host>-gpu<N>``), then ``nvidia-smi -L``; where none does, the job asked for ``gpu=N`` and
  got it, so devices ``0 .. N-1`` are the ones it sees.
- CPUs: ``SLURM_CPUS_PER_TASK``, ``PBS_NUM_PPN`` (Torque), ``NCPUS`` (PBS Pro), never fewer
  than the stage asked for.

Pure functions of the environment given; nothing here runs outside a job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pytest_physpipe.models import Resources
from pytest_physpipe.resources import Budget

__all__ = ["allocated_gpu_ids", "allocation_budget"]

_CPU_VARS = ("SLURM_CPUS_PER_TASK", "PBS_NUM_PPN", "NCPUS")


def _id_list(text: str) -> tuple[str, ...]:
    # CUDA stops at the first invalid entry; "" and "-1" (or "NoDevFiles") mean "no GPU".
    ids: list[str] = []
    for item in text.split(","):
        item = item.strip()  # noqa: PLW2901  # the loop variable is only ever this token
        if not item or item.startswith("-") or item.lower() == "nodevfiles":
            break
        ids.append(item)
    return tuple(ids)


def _gpufile_ids(path: str) -> tuple[str, ...]:
    try:
        lines = Path(path).read_text().split()
    except OSError:
        return ()
    ids = [line.rpartition("-gpu")[2] for line in lines if "-gpu" in line]
    return tuple(i for i in ids if i.isdigit())


def allocated_gpu_ids(environ: Mapping[str, str], *, wanted: int) -> tuple[str, ...]:
    """The GPU ids the job's allocation gives it (see the module docstring for the order)."""
    from pytest_physpipe.resources import _nvidia_smi_ids

    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        ids = _id_list(environ.get(name, ""))
        if ids:
            return ids
    gpufile = environ.get("PBS_GPUFILE")
    if gpufile:
        ids = _gpufile_ids(gpufile)
        if ids:
            return ids
    if wanted <= 0:
        return ()
    ids = _nvidia_smi_ids()
    return ids if len(ids) >= wanted else tuple(str(i) for i in range(wanted))


def allocation_budget(resources: Resources, environ: Mapping[str, str] | None = None) -> Budget:
    """The budget of a job that asked for ``resources``, from its environment."""
    env = os.environ if environ is None else environ
    cpus = resources.cpu_slots
    for name in _CPU_VARS:
        value = env.get(name, "")
        if value.isdigit() and int(value) > 0:
            cpus = max(cpus, int(value))
            break
    return Budget(cpus, allocated_gpu_ids(env, wanted=resources.gpu))

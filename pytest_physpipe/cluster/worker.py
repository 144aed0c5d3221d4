"""``python -m pytest_physpipe.worker JOB.json``: compute one stage instance inside a batch job.

The submitting session writes a :class:`JobSpec` beside the store (``jobs/<key>/job.json``).
The job imports the stage's module from its file, rebuilds the instance and checks that its key
is still the submitted one (the code or the config may have changed since), loads the upstream
values from the store, computes under the key's lock, commits, and always writes its own
outcome record (``jobs/<key>/outcome.json``): the outcome never depends on ``sacct``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pytest_physpipe.store.atomic import write_text_atomic

__all__ = ["JobOutcome", "JobSpec", "JobTerminated", "job_dir", "main", "read_outcome", "run_job"]


class JobSpec(BaseModel):
    """Everything a batch job needs to rebuild and compute one stage instance."""

    model_config = ConfigDict(extra="forbid")

    key: str
    stage: str
    module_name: str
    module_file: str
    sys_path: list[str] = Field(default_factory=list)
    rootdir: str
    store: str
    config: dict[str, Any] | None = None
    upstream: dict[str, str] = Field(default_factory=dict)
    packages: dict[str, str] = Field(default_factory=dict)
    salt: str = ""
    lock: str = "auto"
    verify_max: int = 64 << 20
    run_id: str
    backend: str = "slurm"
    #: ``--physpipe-rebuild`` named this stage: replace an entry older than this run.
    rebuild: bool = False
    #: The instance's label id (``k=2``), which the job cannot rebuild without the plan.
    param_id: str | None = None


class JobOutcome(BaseModel):
    """What the job says about itself, whatever the scheduler says."""

    key: str
    status: str  # "computed", "hit" (someone else committed first) or "failed"
    exit_code: int
    host: str
    started_at: float
    duration_s: float
    job_id: str | None = None
    error: str | None = None
    traceback: str | None = None
    #: The signal that ended the job (SIGTERM: cancelled, or past its walltime), if any.
    signal: int | None = None


class JobTerminated(BaseException):
    """The scheduler sent the job SIGTERM: ``scancel``/``qdel``, or the walltime ran out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return (
            f"the job received {signal.Signals(self.signum).name}: it was cancelled (scancel, "
            "qdel) or ran past its walltime"
        )


def job_dir(store: Path, key: str) -> Path:
    """Where a key's job files live: ``<store>/jobs/<key>/``."""
    return Path(store) / "jobs" / key


def read_outcome(store: Path, key: str) -> JobOutcome | None:
    path = job_dir(store, key) / "outcome.json"
    try:
        return JobOutcome.model_validate_json(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID")


def _import_stage_module(spec: JobSpec) -> None:
    for entry in reversed(spec.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if spec.module_name in sys.modules:
        return
    module_spec = importlib.util.spec_from_file_location(spec.module_name, spec.module_file)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import {spec.module_name} from {spec.module_file}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[spec.module_name] = module
    module_spec.loader.exec_module(module)


def _compute(spec: JobSpec) -> str:
    """Rebuild, check and compute the instance; its status (``computed`` or ``hit``)."""
    import dataclasses
    import tempfile

    from pytest_physpipe.cluster.allocation import allocation_budget
    from pytest_physpipe.errors import JobFailedError
    from pytest_physpipe.execute import StageRunner
    from pytest_physpipe.plan import Planner
    from pytest_physpipe.resources import SlotPool
    from pytest_physpipe.stage import registry
    from pytest_physpipe.store.entries import Store

    _import_stage_module(spec)
    stage_spec = registry.get(spec.stage)
    if stage_spec is None:
        raise JobFailedError(
            f"stage {spec.stage!r} is no longer declared in {spec.module_file}; it was "
            "renamed or removed after the job was submitted"
        )
    planner = Planner(
        registry=registry, packages=spec.packages, salt=spec.salt, rootdir=Path(spec.rootdir)
    )
    config = stage_spec.coerce_config(spec.config, origin="the job spec")
    found = planner.instance(stage_spec, config, spec.upstream)
    if found.key != spec.key:
        raise JobFailedError(
            f"stage {spec.stage!r}: its key is now {found.key}, not the submitted "
            f"{spec.key}: its code, config or an input changed after submission. Rerun "
            "pytest to submit the current version."
        )
    store = Store(Path(spec.store), lock_mode=spec.lock, verify_max=spec.verify_max)
    upstream: dict[str, Any] = {}
    for name, key in spec.upstream.items():
        loaded = store.load(key)
        if loaded is None:
            raise JobFailedError(
                f"stage {spec.stage!r}: its upstream {name!r} ({key}) is not in the store "
                f"{spec.store}; is the store on a filesystem the compute nodes share?"
            )
        upstream[name] = loaded.value
    if spec.param_id and found.param_id != spec.param_id:
        found = dataclasses.replace(found, param_id=spec.param_id)
    # The stage gets what the scheduler allocated to the job (its GPUs above all), held
    # through a slot pool of the job's own, as a local run hands out its budget.
    budget = allocation_budget(stage_spec.resources)
    with tempfile.TemporaryDirectory(prefix="physpipe-job-slots-") as slots:
        runner = StageRunner(
            store=store,
            run_id=spec.run_id,
            pool=SlotPool(Path(slots), budget),
            rebuild=frozenset({spec.stage}) if spec.rebuild else frozenset(),
            worker=f"{spec.backend} job {_job_id() or '?'}",
        )
        outcome = runner.provide(found, upstream)
    return "computed" if outcome.record.status == "computed" else "hit"


def run_job(spec: JobSpec) -> JobOutcome:
    """Compute the instance described by ``spec`` and commit it; never raises."""
    started = time.time()
    clock = time.perf_counter()
    status, error, trace, signum = "failed", None, None, None
    try:
        status = _compute(spec)
    except BaseException as exc:  # the job's outcome record must be written, whatever happened
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(exc))
        signum = exc.signum if isinstance(exc, JobTerminated) else None
    result = JobOutcome(
        key=spec.key,
        status=status,
        exit_code=1 if error else 0,
        host=socket.gethostname(),
        started_at=started,
        duration_s=time.perf_counter() - clock,
        job_id=_job_id(),
        error=error,
        traceback=trace,
        signal=signum,
    )
    folder = job_dir(Path(spec.store), spec.key)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "outcome.json", result.model_dump_json(indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_physpipe.worker",
        description="Compute one physpipe stage instance inside a batch job.",
    )
    parser.add_argument("job", type=Path, help="the job spec (jobs/<key>/job.json in the store)")
    args = parser.parse_args(argv)
    spec = JobSpec.model_validate(json.loads(args.job.read_text()))

    # Both schedulers send SIGTERM before SIGKILL on scancel/qdel and at the walltime: record
    # it, because Torque's wrapper reports such a job as completed, with no exit status.
    def on_sigterm(signum: int, frame: object) -> None:
        raise JobTerminated(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    outcome = run_job(spec)
    if outcome.traceback:
        sys.stderr.write(outcome.traceback)
    print(
        f"physpipe worker: stage {spec.stage} ({spec.key[:12]}) {outcome.status} on "
        f"{outcome.host} in {outcome.duration_s:.2f} s"
    )
    return outcome.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

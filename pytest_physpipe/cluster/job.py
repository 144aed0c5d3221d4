"""``python -m pytest_physpipe.worker JOB.json``: compute one stage instance inside a batch job.

The submitting session writes a :class:`JobSpec` beside the store (``jobs/<key>/job.json``).
The job imports the stage's module from its file, rebuilds the instance and checks that its key
is still the submitted one (the code or the config may have changed since), loads the upstream
values from the store, computes under the key's lock, commits, and always writes its own
result record (``jobs/<key>/result.json``): the result never depends on ``sacct``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import time
import traceback
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict, Field

from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.hosts import hostname

__all__ = [
    "JobResult",
    "JobSpec",
    "JobTerminated",
    "array_task_specs",
    "hook_plugins",
    "job_dir",
    "log_to",
    "main",
    "read_job_result",
    "run_job",
]


class JobSpec(BaseModel):
    """Everything a batch job needs to rebuild and compute one stage instance."""

    model_config = ConfigDict(extra="forbid")

    key: str
    stage: str
    module_name: str
    module_file: str
    sys_path: list[str] = Field(default_factory=list)
    rootdir: str
    #: The pytest plugins (conftests, installed plugins) of the submitting run that implement
    #: physpipe hooks, as ``[module name, file]``: the job registers them, so that plugin
    #: codecs and ``run_stage`` middleware apply to a batch job as to a local run.
    plugins: list[tuple[str, str]] = Field(default_factory=list)
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


class JobResult(BaseModel):
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
    from pytest_physpipe.store.layout import StoreLayout

    return StoreLayout(Path(store)).job_dir(key)


def read_job_result(store: Path, key: str) -> JobResult | None:
    path = job_dir(store, key) / "result.json"
    try:
        return JobResult.model_validate_json(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"  # how squeue, scancel and the campaign name an array task
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID")


#: Where a job array task finds its index, by scheduler: Slurm, PBS Pro, Torque.
_TASK_VARS = ("SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID")


def array_task_specs(tasks_file: Path) -> list[Path]:
    """The ``job.json`` files of this array task, in the order it computes them:
    ``tasks_file`` lists the keys of each task index (several when the task is packed)."""
    tasks = json.loads(Path(tasks_file).read_text())
    entries = tasks["keys"]
    index = next((os.environ[v] for v in _TASK_VARS if os.environ.get(v)), None)
    if index is None and len(entries) == 1:
        index = "0"  # a one-task "array" that went out as a plain job (PBS)
    if index is None or not index.isdigit():
        raise SystemExit(f"{tasks_file}: no array task index in the environment ({_TASK_VARS})")
    keys = entries[int(index)]
    keys = [keys] if isinstance(keys, str) else keys
    return [job_dir(Path(tasks["store"]), key) / "job.json" for key in keys]


def log_to(folder: Path) -> None:
    """Send this process's output to ``folder/job.log`` (an array task's instances each log to
    their key's log, as a single job does, so failure messages read the same log)."""
    log = os.open(folder / "job.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def _import_stage_module(spec: JobSpec) -> None:
    for entry in reversed(spec.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if spec.module_name not in sys.modules:
        _import_file(spec.module_name, spec.module_file)


def hook_plugins(plugins: Iterable[object]) -> list[tuple[str, str]]:
    """The plugin modules among ``plugins`` that implement a physpipe hook (for :class:`JobSpec`).

    Plugin objects that are not modules cannot be rebuilt in a job and are left out.
    """
    found: list[tuple[str, str]] = []
    for plugin in plugins:
        if not isinstance(plugin, types.ModuleType) or plugin.__name__.startswith(
            "pytest_physpipe."
        ):
            continue
        file = getattr(plugin, "__file__", None)
        if file and any(name.startswith("pytest_physpipe_") for name in vars(plugin)):
            found.append((plugin.__name__, str(file)))
    return found


class _JobPluginManager(pluggy.PluginManager):
    """Reads physpipe hooks as pytest does: a ``pytest_physpipe_*`` function needs no marker."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("pytest_physpipe_"):
            opts = {
                "wrapper": False,
                "hookwrapper": False,
                "optionalhook": False,
                "tryfirst": False,
                "trylast": False,
                "specname": None,
            }
        return opts


def _plugin_manager(spec: JobSpec) -> pluggy.PluginManager:
    """The submitting run's physpipe hooks, registered as pytest registered them."""
    from pytest_physpipe import hookspecs

    manager = _JobPluginManager("pytest")
    manager.add_hookspecs(hookspecs)
    manager.register(hookspecs.Defaults(), "physpipe-defaults")
    for name, file in spec.plugins:
        module = sys.modules.get(name)
        if module is None:
            if Path(file).name == "conftest.py":
                module = _import_file(name, file)
            else:
                module = importlib.import_module(name)
        if not manager.is_registered(module):
            manager.register(module, name)
    return manager


def _import_file(name: str, file: str) -> types.ModuleType:
    module_spec = importlib.util.spec_from_file_location(name, file)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import {name} from {file}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _compute(spec: JobSpec) -> str:
    """Rebuild, check and compute the instance; its status (``computed`` or ``hit``)."""
    import dataclasses
    import tempfile

    from pytest_physpipe.cluster.allocation import allocation_budget
    from pytest_physpipe.errors import JobFailedError
    from pytest_physpipe.execute import PluginHooks, StageRunner
    from pytest_physpipe.plan import Planner
    from pytest_physpipe.resources import SlotPool
    from pytest_physpipe.stage import registry
    from pytest_physpipe.store.codecs import CodecRegistry
    from pytest_physpipe.store.entries import Store

    _import_stage_module(spec)
    hooks = _plugin_manager(spec).hook
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
    instance = planner.instance(stage_spec, config, spec.upstream)
    if instance.key != spec.key:
        raise JobFailedError(
            f"stage {spec.stage!r}: its key is now {instance.key}, not the submitted "
            f"{spec.key}: its code, config or an input changed after submission. Rerun "
            "pytest to submit the current version."
        )
    codecs = CodecRegistry()
    hooks.pytest_physpipe_register_codecs(registry=codecs)
    store = Store(Path(spec.store), codecs=codecs, lock_mode=spec.lock, verify_max=spec.verify_max)
    upstream: dict[str, Any] = {}
    for name, key in spec.upstream.items():
        loaded = store.load(key)
        if loaded is None:
            above = read_job_result(Path(spec.store), key)
            if above is not None and above.status == "failed":
                raise JobFailedError(
                    f"stage {spec.stage!r}: its upstream {name!r} ({key[:12]}) failed in its "
                    "own job, so this instance was not computed; see that stage's failure"
                )
            raise JobFailedError(
                f"stage {spec.stage!r}: its upstream {name!r} ({key}) is not in the store "
                f"{spec.store}; is the store on a filesystem the compute nodes share?"
            )
        upstream[name] = loaded.value
    if spec.param_id and instance.param_id != spec.param_id:
        instance = dataclasses.replace(instance, param_id=spec.param_id)
    # The stage gets what the scheduler allocated to the job (its GPUs above all), held
    # through a slot pool of the job's own, as a local run hands out its budget.
    budget = allocation_budget(stage_spec.resources)
    with tempfile.TemporaryDirectory(prefix="physpipe-job-slots-") as slots:
        runner = StageRunner(
            store=store,
            run_id=spec.run_id,
            pool=SlotPool(Path(slots), budget),
            hooks=PluginHooks(hooks),
            rebuild=frozenset({spec.stage}) if spec.rebuild else frozenset(),
            worker=f"{spec.backend} job {_job_id() or '?'}",
            origin={"backend": spec.backend, "job_id": _job_id()},
        )
        served = runner.provide(instance, upstream)
    return "computed" if served.record.status == "computed" else "hit"


def run_job(spec: JobSpec) -> JobResult:
    """Compute the instance described by ``spec`` and commit it; never raises."""
    started = time.time()
    clock = time.perf_counter()
    status, error, trace, signum = "failed", None, None, None
    try:
        status = _compute(spec)
    except BaseException as exc:  # the job's result record must be written, whatever happened
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(exc))
        signum = exc.signum if isinstance(exc, JobTerminated) else None
    result = JobResult(
        key=spec.key,
        status=status,
        exit_code=1 if error else 0,
        host=hostname(),
        started_at=started,
        duration_s=time.perf_counter() - clock,
        job_id=_job_id(),
        error=error,
        traceback=trace,
        signal=signum,
    )
    folder = job_dir(Path(spec.store), spec.key)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "result.json", result.model_dump_json(indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_physpipe.worker",
        description="Compute one physpipe stage instance inside a batch job.",
    )
    parser.add_argument(
        "job", type=Path, nargs="?", help="the job spec (jobs/<key>/job.json in the store)"
    )
    parser.add_argument(
        "--array", type=Path, metavar="TASKS", help="a job array's task list: run this task's"
    )
    args = parser.parse_args(argv)
    if (args.job is None) == (args.array is None):
        parser.error("give a job spec, or --array TASKS")
    job_files = [args.job] if args.array is None else array_task_specs(args.array)

    # Both schedulers send SIGTERM before SIGKILL on scancel/qdel and at the walltime: record
    # it, because Torque's wrapper reports such a job as completed, with no exit status.
    def on_sigterm(signum: int, frame: object) -> None:
        raise JobTerminated(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    status = 0
    try:
        for job_file in job_files:
            if args.array is not None:
                log_to(job_file.parent)
            spec = JobSpec.model_validate(json.loads(job_file.read_text()))
            result = run_job(spec)
            if result.traceback:
                sys.stderr.write(result.traceback)
            packed = f" (one of {len(job_files)} in this task)" if len(job_files) > 1 else ""
            print(
                f"physpipe job: stage {spec.stage} ({spec.key[:12]}) {result.status} on "
                f"{result.host} in {result.duration_s:.2f} s{packed}"
            )
            status = max(status, result.exit_code)
            if result.signal is not None:  # cancelled or out of walltime: stop here
                return status if len(job_files) == 1 else 128 + result.signal
    except JobTerminated as exc:  # between two instances of a packed task
        return 128 + exc.signum
    # A packed task succeeds once each instance has its own result record, whatever it says:
    # failing it would cancel the dependents of its other instances too (afterok, aftercorr).
    return 0 if len(job_files) > 1 else status


if __name__ == "__main__":
    raise SystemExit(main())

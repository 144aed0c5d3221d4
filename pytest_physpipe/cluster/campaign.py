"""Cluster campaigns: slow stage instances dispatched to a batch backend as jobs.

Right after collection, every ``slow`` instance the selected tests need and the store lacks is
submitted as one job, with its upstream slow instances as ``afterok`` dependencies; missing fast
upstream instances are computed locally and committed first, so the job finds them in the
store. Tests then wait for the keys they need and load them from the store.

Submissions are recorded in the store (``jobs/<key>/submitted.json``) under a per-key lock, so
xdist workers and a second pytest session reuse a job still in flight instead of submitting a
duplicate. The job's own result record (``jobs/<key>/result.json``, written by
`python -m pytest_physpipe.worker`) says how it ended; the scheduler's word is only a hint.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from pytest_physpipe.cluster.backends.base import Backend, JobInfo, JobRequest, JobState, log_tail
from pytest_physpipe.cluster.job import JobResult, JobSpec, job_dir, read_job_result
from pytest_physpipe.errors import BackendError, CorruptEntryError, JobFailedError
from pytest_physpipe.execute import Served, StageRunner
from pytest_physpipe.plan import Planner, StageInstance
from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.filesystem import filesystem_type, is_network_filesystem
from pytest_physpipe.store.hosts import hostname
from pytest_physpipe.store.locks import KeyLock

__all__ = ["Campaign", "CancelOnInterrupt", "sigterm_as_interrupt"]

#: Seconds between scheduler status calls while a test waits (the store is polled faster).
STATUS_INTERVAL_S = 2.0
#: Seconds between looks at the store while a test waits for a job's commit.
STORE_POLL_S = 0.1
#: Consecutive failed status calls tolerated before a wait gives up.
STATUS_FAILURES_MAX = 5


class Campaign:
    """The jobs of one pytest process: submits, reuses, waits for and cancels them."""

    def __init__(
        self,
        *,
        backend: Backend,
        store: Store,
        runner: StageRunner,
        planner: Planner,
        run_id: str,
        rootdir: Path,
        cwd: Path,
        default_args: Sequence[str] = (),
        say: Callable[[str], None] | None = None,
        plugins: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.backend = backend
        self.store = store
        self.runner = runner
        self.planner = planner
        self.run_id = run_id
        self.rootdir = rootdir
        self.cwd = cwd
        self.default_args = tuple(default_args)
        self.say = say or (lambda _line: None)
        self.plugins = list(plugins)
        self.job_ids: dict[str, str] = {}  # key -> job id (submitted or reused)
        self.submitted: list[str] = []  # job ids this process submitted (cancelled on Ctrl-C)
        self.submitted_at: dict[str, float] = {}
        #: Fast upstream instances computed here for the jobs (the session records them).
        self.local: dict[str, Served] = {}
        self._undo_sigterm: Callable[[], None] | None = None

    # -- submission -----------------------------------------------------------------------------

    def check(self) -> None:
        """Fail before anything is submitted if the backend or the store cannot work."""
        try:
            self.backend.check()
        except BackendError as exc:
            raise BackendError(
                f"--physpipe-backend {self.backend.name}: {exc}. Nothing was submitted."
            ) from None
        nodes = _slurm_nodes() if self.backend.name == "slurm" else None
        local_only = nodes is not None and nodes <= {hostname(), "localhost"}
        if not local_only and not is_network_filesystem(filesystem_type(self.store.root)):
            fs = filesystem_type(self.store.root) or "unknown"
            if nodes:  # a multi-node Slurm cluster and a local store: jobs could not see it
                raise BackendError(
                    f"the physpipe store {self.store.root} is on a local filesystem ({fs}), but "
                    f"the {self.backend.name} cluster's compute nodes ({', '.join(sorted(nodes))})"
                    " cannot read it. Put the store on a shared filesystem with --physpipe-dir "
                    "(for example your project or scratch space)."
                )

    def submit(self, instances: Iterable[StageInstance]) -> list[StageInstance]:
        """Submit every slow, missing instance (upstream first); the ones now in flight."""
        pending: list[StageInstance] = []
        if self._undo_sigterm is None:
            self._undo_sigterm = sigterm_as_interrupt()
        for instance in instances:  # the planner lists upstream before downstream
            if not (instance.slow and instance.spec.cache) or self.store.exists(instance.key):
                continue
            self._ensure_local_upstream(instance)
            depends = tuple(
                self.job_ids[k] for k in instance.upstream.values() if k in self.job_ids
            )
            self.job_ids[instance.key] = self._submit_or_reuse(instance, depends)
            pending.append(instance)
        return pending

    def _ensure_local_upstream(self, instance: StageInstance) -> None:
        for key in instance.upstream.values():
            upstream = self.planner.get(key)
            if upstream is None or upstream.slow or self.store.exists(key):
                continue
            self._ensure_local_upstream(upstream)
            values = {name: self._load(k) for name, k in upstream.upstream.items()}
            self.say(f"physpipe: computing {upstream.label} locally for a job that needs it")
            self.local[upstream.key] = self.runner.provide(upstream, values)

    def _load(self, key: str) -> Any:
        loaded = self.store.load(key)
        if loaded is None:
            raise JobFailedError(f"upstream entry {key} is not in the store {self.store.root}")
        return loaded.value

    def _submit_or_reuse(self, instance: StageInstance, depends: tuple[str, ...]) -> str:
        folder = job_dir(self.store.root, instance.key)
        folder.mkdir(parents=True, exist_ok=True)
        lock = KeyLock(
            self.store.layout.submit_lock_path(instance.key),
            mode=self.store.lock_mode,
            describe=f"submission of stage {instance.label}",
        )
        with lock:
            previous = _read_json(folder / "submitted.json")
            if previous and previous.get("backend") == self.backend.name:
                job_id = str(previous["job_id"])
                info = self.backend.status(job_ids=[job_id]).get(job_id)
                if info is not None and not info.state.finished:
                    self.say(f"physpipe: {instance.label} is already in flight as job {job_id}")
                    self.submitted_at[instance.key] = float(
                        previous.get("submitted_at", time.time())
                    )
                    return job_id
            spec = self._job_spec(instance)
            write_text_atomic(folder / "job.json", spec.model_dump_json(indent=1))
            (folder / "result.json").unlink(missing_ok=True)
            request = JobRequest(
                name=f"physpipe-{instance.name}",
                argv=[sys.executable, "-m", "pytest_physpipe.worker", str(folder / "job.json")],
                cwd=self.cwd,
                log_path=folder / "job.log",
                resources=instance.spec.resources,
                cluster=instance.spec.cluster,
                depends_on=depends,
                env=_job_env(),
                default_args=self.default_args,
            )
            try:
                job_id = self.backend.submit(request=request)
            except BackendError as exc:
                raise BackendError(
                    f"submitting stage {instance.label} ({instance.key[:12]}) to "
                    f"{self.backend.name} failed: {exc}"
                ) from None
            now = time.time()
            write_text_atomic(
                folder / "submitted.json",
                json.dumps(
                    {
                        "job_id": job_id,
                        "backend": self.backend.name,
                        "submitted_at": now,
                        "run_id": self.run_id,
                        "stage": instance.label,
                        "depends_on": list(depends),
                        "host": hostname(),
                        "pid": os.getpid(),
                    },
                    indent=1,
                ),
            )
        self.submitted.append(job_id)
        self.submitted_at[instance.key] = now
        deps = f" after {', '.join(depends)}" if depends else ""
        self.say(f"physpipe: submitted {instance.label} as {self.backend.name} job {job_id}{deps}")
        return job_id

    def _job_spec(self, instance: StageInstance) -> JobSpec:
        func = instance.spec.func
        return JobSpec(
            key=instance.key,
            stage=instance.name,
            module_name=func.__module__,
            module_file=func.__code__.co_filename,
            sys_path=[p for p in sys.path if p],
            rootdir=str(self.rootdir),
            plugins=self.plugins,
            store=str(self.store.root),
            config=instance.config_json if instance.config is not None else None,
            upstream=instance.upstream,
            packages=self.planner.packages,
            salt=self.planner.salt,
            lock=self.store.lock_mode,
            verify_max=self.store.verify_max,
            run_id=self.run_id,
            backend=self.backend.name,
        )

    # -- waiting --------------------------------------------------------------------------------

    def wait(self, instance: StageInstance) -> Served:
        """Block until the job computing ``instance`` commits, then load it; or raise why not."""
        __tracebackhide__ = True
        job_id = self.job_ids.get(instance.key)
        if job_id is None:
            previous = _read_json(job_dir(self.store.root, instance.key) / "submitted.json")
            if previous is None:
                raise JobFailedError(
                    f"stage {instance.label} is neither in the store nor submitted as a job"
                )
            job_id = str(previous["job_id"])
        next_status = 0.0
        failures = 0
        while True:
            served = self._try_load(instance, job_id)
            if served is not None:
                return served
            result = read_job_result(self.store.root, instance.key)
            if result is not None and result.status == "failed" and result.signal is None:
                raise self._failure(instance, job_id, "FAILED", result.traceback or result.error)
            # A job ended by a signal (cancelled, walltime): the scheduler's state says which.
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_INTERVAL_S
                try:
                    info = self.backend.status(job_ids=[job_id]).get(job_id)
                except BackendError:
                    # A busy controller may fail a call; the store still tells us how it ended.
                    failures += 1
                    if failures >= STATUS_FAILURES_MAX:
                        raise
                    continue
                failures = 0
                if info is not None and info.state.finished:
                    time.sleep(STORE_POLL_S)  # the commit may land just after the state
                    served = self._try_load(instance, job_id)
                    if served is not None:
                        return served
                    result = read_job_result(self.store.root, instance.key)
                    detail = result.traceback if result and result.traceback else info.reason
                    raise self._failure(
                        instance, job_id, self._end_state(instance, info, result), detail
                    )
            time.sleep(STORE_POLL_S)

    def _end_state(self, instance: StageInstance, info: JobInfo, result: JobResult | None) -> str:
        """How a finished job that committed nothing ended, in words."""
        state = info.state.value
        upstream_failed = [
            self.planner.get(key)
            for key in instance.upstream.values()
            if not self.store.exists(key)
            and (job := read_job_result(self.store.root, key)) is not None
            and job.status == "failed"
        ]
        if result is not None and result.signal and info.state is JobState.COMPLETED:
            # Torque's wrapper over Slurm reports a cancelled or timed-out job as completed.
            name = signal.Signals(result.signal).name
            return (
                f"by {name} (cancelled, or past its walltime; {self.backend.name} does not say "
                "which)"
            )
        if result is None and ("Dependency" in info.reason or upstream_failed):
            names = ", ".join(u.label for u in upstream_failed if u is not None)
            return (
                f"without running ({state}), because the job of {names or 'a stage'} it "
                "depends on failed"
            )
        if info.state is JobState.COMPLETED:
            return "COMPLETED without committing a result"
        return state

    def _try_load(self, instance: StageInstance, job_id: str) -> Served | None:
        try:
            loaded = self.store.load(instance.key)
        except CorruptEntryError:
            return None
        if loaded is None:
            return None
        result = read_job_result(self.store.root, instance.key)
        queued = None
        submitted = self.submitted_at.get(instance.key)
        if submitted is not None:
            # The job commits its entry, then writes its result record: a test may see the
            # entry first. Then the record's own start time (the stage's, a little later than
            # the job's) stands in.
            started = (
                result.started_at if result is not None else _timestamp(loaded.record.created_at)
            )
            if started is not None:
                queued = max(0.0, started - submitted)
        record = loaded.record.model_copy(
            update={
                "status": "loaded-from-job",
                "param_id": instance.param_id,
                "backend": self.backend.name,
                "job_id": job_id,
                "queued_s": queued,
                "worker": self.runner.worker,
            }
        )
        return Served(loaded.value, record)

    def _failure(
        self, instance: StageInstance, job_id: str, state: str, detail: str | None
    ) -> JobFailedError:
        log = job_dir(self.store.root, instance.key) / "job.log"
        parts = [
            f"stage {instance.label} ({instance.key[:12]}): {self.backend.name} job {job_id} ended "
            f"{state}; nothing was committed."
        ]
        if detail:
            parts.append(f"The job reported:\n{detail.rstrip()}")
        parts.append(f"Last lines of {log}:\n{log_tail(log)}")
        parts.append("Fix the cause and rerun pytest: the job is submitted again.")
        return JobFailedError("\n".join(parts))

    # -- cancelling -----------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the jobs this process submitted that have not finished."""
        if not self.submitted:
            return
        ids, self.submitted = self.submitted, []
        try:
            self.backend.cancel(job_ids=ids)
        except BackendError as exc:
            self.say(f"physpipe: could not cancel jobs {', '.join(ids)}: {exc}")
            return
        self.say(f"physpipe: cancelled {self.backend.name} jobs {', '.join(ids)}")

    def close(self) -> None:
        if self._undo_sigterm is not None:
            self._undo_sigterm()
            self._undo_sigterm = None


class CancelOnInterrupt:
    """Registered as a pytest plugin while a campaign runs: Ctrl-C cancels its jobs."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign

    def pytest_keyboard_interrupt(self, excinfo: object) -> None:
        # Ctrl-C, or SIGTERM (turned into KeyboardInterrupt above): no job this run
        # submitted may outlive it.
        self.campaign.cancel()

    def pytest_sessionfinish(self, session: object, exitstatus: int) -> None:
        if exitstatus == 2:  # pytest.ExitCode.INTERRUPTED
            self.campaign.cancel()


def sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise ``KeyboardInterrupt``; return the function that undoes it.

    pytest handles KeyboardInterrupt (Ctrl-C) cleanly; SIGTERM taking the same road means that
    `kill` or a CI timeout also cancels the jobs a run submitted. An xdist controller needs it
    too: on KeyboardInterrupt it stops its workers, and execnet interrupts their main thread,
    so each worker cancels its own jobs; killed outright by SIGTERM, it would leave them be.
    """

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum} ({signal.Signals(signum).name})")

    try:
        old = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        return lambda: None

    def undo() -> None:
        # None: the old handler was not installed from Python; the default is the best guess.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)

    return undo


def _job_env() -> dict[str, str]:
    env = {}
    # Only what the job needs to find the code and the pickle secret file; the job script is
    # written to disk, so secrets such as PHYSPIPE_SECRET are left to the inherited environment.
    for name in ("XDG_CONFIG_HOME", "PYTHONPATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _slurm_nodes() -> set[str] | None:
    import subprocess

    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%N"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    nodes: set[str] = set()
    for line in done.stdout.split():
        try:
            expanded = subprocess.run(
                ["scontrol", "show", "hostnames", line],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            expanded = [line]
        nodes.update(expanded or [line])
    return nodes


def _timestamp(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None

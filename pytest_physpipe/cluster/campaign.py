"""Cluster campaigns: slow stage instances dispatched to a batch backend as jobs.

Right after collection, every ``slow`` instance the selected tests need and the store lacks is
submitted as one job, with its upstream slow instances as ``afterok`` dependencies; missing fast
upstream instances are computed locally and committed first, so the job finds them in the
store. Tests then wait for the keys they need and load them from the store.

Submissions are recorded in the store (``jobs/<key>/submitted.json``) under a per-key lock, so
xdist workers and a second pytest session reuse a job still in flight instead of submitting a
duplicate. The job's own result record (``jobs/<key>/result.json``, written by
`python -m pytest_physpipe.worker`) says how it ended; the scheduler's word is only a hint.

No job is lost: each carries its run and key in its name (:mod:`.jobs`), and a
``submitting.json`` marker is written before ``sbatch`` runs, so an interrupt cancels by tag
what it submitted (even the job whose id it never learnt), and the session after a crash adopts
the job it finds by tag instead of submitting a duplicate. A job this session only reused
(another session's) that its owner cancels is submitted again, once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_physpipe.cluster.arrays import (
    array_dependency,
    chunks,
    group_by_level,
    order_for_correspondence,
    split_task_id,
)
from pytest_physpipe.cluster.backends.base import Backend, JobInfo, JobRequest, JobState
from pytest_physpipe.cluster.interrupts import sigterm_as_interrupt, stop_reason
from pytest_physpipe.cluster.job import JobResult, JobSpec, job_dir, read_job_result
from pytest_physpipe.cluster.jobs import cancel_run, failure_message, find_tagged, job_name
from pytest_physpipe.errors import BackendError, CorruptEntryError, GraphError, JobFailedError
from pytest_physpipe.execute import Served, StageRunner
from pytest_physpipe.plan import Planner, StageInstance
from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.filesystem import filesystem_type, is_network_filesystem
from pytest_physpipe.store.hosts import hostname
from pytest_physpipe.store.locks import KeyLock

__all__ = ["Campaign"]

#: Seconds between scheduler status calls while a test waits (the store is polled faster).
STATUS_INTERVAL_S = 2.0
#: Seconds between looks at the store while a test waits for a job's commit.
STORE_POLL_S = 0.1
#: Consecutive failed status calls tolerated before a wait gives up.
STATUS_FAILURES_MAX = 5
#: After an interrupt cut a submission short, how long its ``sbatch`` may still take to
#: create the job we then look for by tag a second time.
ORPHAN_GRACE_S = 1.0


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
        submit_rate: float = 0.0,
        arrays: bool = True,
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
        #: Submit the instances of one stage at one level as job arrays where the backend can.
        self.arrays = arrays
        self.plugins = list(plugins)
        #: Submissions per second at most (ini ``physpipe_submit_rate``; 0: no limit).
        self.submit_rate = submit_rate
        self._last_submit = 0.0
        self.job_ids: dict[str, str] = {}  # key -> job id (submitted or reused)
        self.submitted: list[str] = []  # job ids this process submitted (cancelled on Ctrl-C)
        self.submitted_at: dict[str, float] = {}
        #: Fast upstream instances computed here for the jobs (the session records them).
        self.local: dict[str, Served] = {}
        #: Keys whose job another session submitted (reused in flight, or adopted by tag).
        self.adopted: set[str] = set()
        self.resubmitted: set[str] = set()
        self._submitting: str | None = None  # the key whose sbatch runs right now
        self._states: dict[str, JobInfo] = {}  # the last status call's answer, by job id
        self._states_at = 0.0
        self._finished: set[str] = set()
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
        list_nodes: Callable[[], set[str] | None] | None = getattr(self.backend, "nodes", None)
        nodes = list_nodes() if list_nodes is not None else None
        # Slurm names nodes by their short host name; gethostname() may be fully qualified.
        local_only = nodes is not None and {_short(n) for n in nodes} <= {
            _short(socket.gethostname()),
            "localhost",
        }
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
        instances = list(instances)
        wanted = [f for f in instances if f.slow and f.spec.cache and not self._done(f)]
        self._check_inputs(wanted)
        pending: list[StageInstance] = []
        if self._undo_sigterm is None:
            self._undo_sigterm = sigterm_as_interrupt()
        largest = self._max_array()
        for group in group_by_level(wanted) if largest > 1 else [[i] for i in wanted]:
            todo = [instance for instance in group if not self._done(instance)]
            for instance in todo:
                self._ensure_local_upstream(instance)
            if len(todo) > 1:
                todo = order_for_correspondence(todo, self.job_ids)
                for chunk in chunks(todo, largest):
                    self._submit_array(chunk)
                pending += todo
                continue
            for instance in todo:
                depends = tuple(
                    self.job_ids[k] for k in instance.upstream.values() if k in self.job_ids
                )
                job_id = self._submit_or_reuse(instance, depends)
                if job_id is not None:
                    self.job_ids[instance.key] = job_id
                    pending.append(instance)
        return pending

    def _max_array(self) -> int:
        """The largest job array to submit; 0 for one job per instance."""
        if not self.arrays:
            return 0
        probe: Callable[[], int] | None = getattr(self.backend, "max_array_size", None)
        if probe is None:
            return 0
        try:
            return probe()
        except BackendError:
            return 0

    def _submit_array(self, members: list[StageInstance]) -> None:
        """Submit ``members`` (one stage, one level) as one job array, task ``i`` computing
        ``members[i]``; members another session already has in flight are reused."""
        with contextlib.ExitStack() as stack:
            for instance in members:
                stack.enter_context(self._submit_lock(instance))
            todo = []
            for instance in members:
                reused = self._reuse(instance, job_dir(self.store.root, instance.key))
                if reused is not None:
                    self.job_ids[instance.key] = reused
                elif not self._done(instance):  # (a job may have committed it meanwhile)
                    self._raise_if_stopping(instance)
                    todo.append(instance)
            if len(todo) <= 1:
                for instance in todo:
                    depends = tuple(
                        self.job_ids[k] for k in instance.upstream.values() if k in self.job_ids
                    )
                    self.job_ids[instance.key] = self._submit_locked(instance, depends)
                return
            kind, depends = array_dependency(todo, self.job_ids)
            first = todo[0]
            name = job_name(first.key, self.run_id, first.name)
            folder = self.store.root / "jobs" / "arrays" / f"{name}-{len(todo)}"
            folder.mkdir(parents=True, exist_ok=True)
            tasks = folder / "tasks.json"
            keys = [instance.key for instance in todo]
            write_text_atomic(tasks, json.dumps({"store": str(self.store.root), "keys": keys}))
            for instance in todo:
                self._write_spec(instance)
            request = JobRequest(
                name=name,
                argv=[sys.executable, "-m", "pytest_physpipe.worker", "--array", str(tasks)],
                cwd=self.cwd,
                log_path=folder / "array.log",
                resources=first.spec.resources,
                cluster=first.spec.cluster,
                depends_on=depends,
                dependency=kind,
                env=_job_env(),
                default_args=self.default_args,
                array_size=len(todo),
            )
            array_id = self._dispatch(request, todo, [f"{kind}:{d}" for d in depends])
        deps = f" {kind} {', '.join(depends)}" if depends else ""
        self.say(
            f"physpipe: submitted {first.label} .. {todo[-1].label} ({len(todo)} instances) "
            f"as {self.backend.name} array job {array_id} (tasks 0-{len(todo) - 1}){deps}"
        )

    def _done(self, instance: StageInstance) -> bool:
        """In the store, and (under ``--physpipe-rebuild``) rebuilt by this run."""
        if not self.store.exists(instance.key):
            return False
        if not self.runner.wants_rebuild(instance):
            return True
        meta = self.store.read_meta(instance.key)
        return meta is not None and meta.get("run_id") == self.run_id

    def _check_inputs(self, wanted: list[StageInstance]) -> None:
        """A job reads its inputs from the store: an uncached upstream can never reach it."""
        for instance in wanted:
            for name, key in instance.upstream.items():
                upstream = self.planner.get(key)
                if upstream is not None and not upstream.spec.cache:
                    raise GraphError(
                        f"stage {instance.label} is slow and would run as a {self.backend.name} "
                        f"job, but its upstream {name!r} ({upstream.label}) has cache=False: a "
                        "job reads its inputs from the store, and that value lives only in this "
                        f"process. Give {upstream.name} cache=True (with a codec that stores "
                        f"its value), drop slow=True from {instance.name}, or run with "
                        "--physpipe-backend local. Nothing was submitted."
                    )

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

    def _submit_or_reuse(self, instance: StageInstance, depends: tuple[str, ...]) -> str | None:
        """The id of the job that computes ``instance``: one in flight, or a new one; ``None``
        when the store has it by now (a job finished while we planned)."""
        folder = job_dir(self.store.root, instance.key)
        folder.mkdir(parents=True, exist_ok=True)
        with self._submit_lock(instance):
            reused = self._reuse(instance, folder)
            if reused is not None:
                return reused
            if self._done(instance):
                return None
            self._raise_if_stopping(instance)
            return self._submit_locked(instance, depends)

    def _submit_lock(self, instance: StageInstance) -> KeyLock:
        return KeyLock(
            self.store.layout.submit_lock_path(instance.key),
            mode=self.store.lock_mode,
            describe=f"submission of stage {instance.label}",
        )

    def _submit_locked(self, instance: StageInstance, depends: tuple[str, ...]) -> str:
        """Submit ``instance`` as one job; the caller holds its submission lock."""
        folder = self._write_spec(instance)
        request = JobRequest(
            name=job_name(instance.key, self.run_id, instance.name),
            argv=[sys.executable, "-m", "pytest_physpipe.worker", str(folder / "job.json")],
            cwd=self.cwd,
            log_path=folder / "job.log",
            resources=instance.spec.resources,
            cluster=instance.spec.cluster,
            depends_on=depends,
            env=_job_env(),
            default_args=self.default_args,
        )
        job_id = self._dispatch(request, [instance], list(depends))
        deps = f" after {', '.join(depends)}" if depends else ""
        self.say(f"physpipe: submitted {instance.label} as {self.backend.name} job {job_id}{deps}")
        return job_id

    def _write_spec(self, instance: StageInstance) -> Path:
        folder = job_dir(self.store.root, instance.key)
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "job.json", self._job_spec(instance).model_dump_json(indent=1))
        (folder / "result.json").unlink(missing_ok=True)
        return folder

    def _dispatch(
        self, request: JobRequest, members: list[StageInstance], depends: list[str]
    ) -> str:
        """Submit ``request``, which computes ``members`` (task ``i`` computes ``members[i]``
        in an array), and record it per key; the job's (or the array's) id.

        The ``submitting.json`` markers go first: if we die inside ``sbatch``, the next
        session looks for the job by its name.
        """
        array = request.array_size > 0
        folders = [job_dir(self.store.root, m.key) for m in members]
        for index, (instance, folder) in enumerate(zip(members, folders, strict=True)):
            marker = self._about(instance, name=request.name) | ({"index": index} if array else {})
            write_text_atomic(folder / "submitting.json", json.dumps(marker, indent=1))
        self._submitting = members[0].key
        self._pace()
        try:
            job_id = self.backend.submit(request=request)
        except BackendError as exc:
            for folder in folders:
                (folder / "submitting.json").unlink(missing_ok=True)
            self._submitting = None
            what = (
                f"{len(members)} instances of stage {members[0].name} as a job array"
                if array
                else f"stage {members[0].label} ({members[0].key[:12]})"
            )
            raise BackendError(f"submitting {what} to {self.backend.name} failed: {exc}") from None
        self.submitted.append(job_id)
        self._submitting = None
        now = time.time()
        for index, (instance, folder) in enumerate(zip(members, folders, strict=True)):
            task_id = f"{job_id}_{index}" if array else job_id
            record = {"job_id": task_id, **self._about(instance, name=request.name)}
            record.update(submitted_at=now, depends_on=depends)
            write_text_atomic(folder / "submitted.json", json.dumps(record, indent=1))
            (folder / "submitting.json").unlink(missing_ok=True)
            self.job_ids[instance.key] = task_id
            self.submitted_at[instance.key] = now
        return job_id

    def _pace(self) -> None:
        """Wait as long as the site's submission rate asks, since the last submission."""
        if self.submit_rate > 0:
            wait = self._last_submit + 1.0 / self.submit_rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last_submit = time.monotonic()

    def _about(self, instance: StageInstance, *, name: str) -> dict[str, Any]:
        return {
            "backend": self.backend.name,
            "run_id": self.run_id,
            "stage": instance.label,
            "key": instance.key,
            "name": name,
            "at": time.time(),
            "host": hostname(),
            "pid": os.getpid(),
        }

    def _reuse(self, instance: StageInstance, folder: Path) -> str | None:
        """The id of a job already computing ``instance`` that this session may wait for."""
        previous = _read_json(folder / "submitted.json")
        rebuild = self.runner.wants_rebuild(instance)
        if previous and previous.get("backend") == self.backend.name:
            job_id = str(previous["job_id"])
            # Under --physpipe-rebuild only a job of this very run (an xdist sibling's) counts.
            if not rebuild or previous.get("run_id") == self.run_id:
                info = self.backend.status(job_ids=[job_id]).get(job_id)
                if info is not None and not info.state.finished:
                    self.say(f"physpipe: {instance.label} is already in flight as job {job_id}")
                    self.submitted_at[instance.key] = float(
                        previous.get("submitted_at", time.time())
                    )
                    if previous.get("run_id") != self.run_id:
                        self.adopted.add(instance.key)
                    return job_id
        marker = _read_json(folder / "submitting.json")
        if marker is None or marker.get("backend") != self.backend.name:
            return None
        # A submission was cut short (Ctrl-C, kill -9) before its job id was recorded: the
        # job may exist all the same. Find it by its tag and adopt it.
        if rebuild and marker.get("run_id") != self.run_id:
            return None
        for info in find_tagged(self.backend) or []:
            if info.name != marker.get("name"):  # the name carries the key and the run
                continue
            job_id = info.job_id
            if "index" in marker:  # one task of a job array
                job_id = f"{split_task_id(job_id)[0]}_{marker['index']}"
            record = {
                **marker,
                "job_id": job_id,
                "submitted_at": marker.get("at"),
                "depends_on": [],
                "adopted_by": self.run_id,
            }
            write_text_atomic(folder / "submitted.json", json.dumps(record, indent=1))
            (folder / "submitting.json").unlink(missing_ok=True)
            self.say(
                f"physpipe: adopted {instance.label}: job {job_id} of an interrupted run "
                "is in flight"
            )
            self.submitted_at[instance.key] = float(marker.get("at") or time.time())
            if marker.get("run_id") != self.run_id:
                self.adopted.add(instance.key)
            return job_id
        return None

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
            rebuild=self.runner.wants_rebuild(instance),
            param_id=instance.param_id,
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
                self._raise_if_stopping(instance)
                try:
                    info = self._status(job_id)
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
                    if self._owner_cancelled(instance, info, result):
                        job_id = self._resubmit(instance, job_id, info)
                        continue
                    detail = result.traceback if result and result.traceback else info.reason
                    raise self._failure(
                        instance, job_id, self._end_state(instance, info, result), detail
                    )
            time.sleep(STORE_POLL_S)

    def _status(self, job_id: str) -> JobInfo | None:
        """The scheduler's word on ``job_id``, from one call for every job this process
        follows, made at most every ``STATUS_INTERVAL_S`` (tests wait one after another)."""
        now = time.monotonic()
        if job_id not in self._states or now - self._states_at >= STATUS_INTERVAL_S:
            following = {i for i in self.job_ids.values() if i not in self._finished}
            ids = sorted(following | {job_id})
            self._states = self.backend.status(job_ids=ids)
            self._states_at = now
            self._finished.update(i for i, info in self._states.items() if info.state.finished)
        return self._states.get(job_id)

    def _raise_if_stopping(self, instance: StageInstance) -> None:
        why = stop_reason(self.store.root, self.run_id)
        if why is not None:
            raise JobFailedError(
                f"stage {instance.label}: the run is stopping ({why}); its jobs were cancelled."
            )

    def _owner_cancelled(
        self, instance: StageInstance, info: JobInfo, result: JobResult | None
    ) -> bool:
        """Whether another session's job that we reused was stopped by its owner (not failed)."""
        if instance.key not in self.adopted or instance.key in self.resubmitted:
            return False
        if result is not None and result.status == "failed" and result.signal is None:
            return False  # the stage raised: a real failure
        if self._failed_upstream(instance):
            return False
        if info.state in (JobState.CANCELLED, JobState.VANISHED):
            return True
        # Torque's wrapper: a cancelled job reads COMPLETED; the job recorded the signal, or
        # never started (cancelled while pending).
        return info.state is JobState.COMPLETED and (result is None or result.signal is not None)

    def _failed_upstream(self, instance: StageInstance) -> list[StageInstance | None]:
        return [
            self.planner.get(key)
            for key in instance.upstream.values()
            if not self.store.exists(key)
            and (job := read_job_result(self.store.root, key)) is not None
            and job.status == "failed"
            and job.signal is None
        ]

    def _resubmit(self, instance: StageInstance, job_id: str, info: JobInfo) -> str:
        """Submit ``instance`` (and its cancelled upstream jobs) again, as this session's own."""
        self.resubmitted.add(instance.key)
        self.adopted.discard(instance.key)
        self.say(
            f"physpipe: job {job_id} of {instance.label}, which another session submitted, ended "
            f"{info.state.value} without a result; submitting it again"
        )
        chain: list[StageInstance] = []

        def visit(current: StageInstance) -> None:
            for key in current.upstream.values():
                above = self.planner.get(key)
                if above is not None and above not in chain:
                    visit(above)
            if current not in chain:
                chain.append(current)

        visit(instance)
        for above in chain[:-1]:
            if above.key in self.adopted:
                self.resubmitted.add(above.key)
                self.adopted.discard(above.key)
        self.submit(chain)
        return self.job_ids[instance.key]

    def _end_state(self, instance: StageInstance, info: JobInfo, result: JobResult | None) -> str:
        """How a finished job that committed nothing ended, in words."""
        state = info.state.value
        upstream_failed = self._failed_upstream(instance)
        if result is not None and result.signal and info.state is JobState.COMPLETED:
            # Torque's wrapper over Slurm reports a cancelled or timed-out job as completed.
            name = signal.Signals(result.signal).name
            return (
                f"by {name} (cancelled, or past its walltime limit of "
                f"{instance.spec.resources.walltime}; {self.backend.name} does not say which)"
            )
        if result is None and ("Dependency" in info.reason or upstream_failed):
            names = ", ".join(u.label for u in upstream_failed if u is not None)
            return (
                f"without running ({state}), because the job of {names or 'a stage'} it "
                "depends on failed"
            )
        if info.state is JobState.COMPLETED:
            return "COMPLETED without committing a result"
        if info.state is JobState.TIMEOUT:
            return f"TIMEOUT (past its walltime limit of {instance.spec.resources.walltime})"
        return state

    def _try_load(self, instance: StageInstance, job_id: str) -> Served | None:
        try:
            loaded = self.store.load(instance.key)
        except CorruptEntryError:
            return None
        if loaded is None:
            return None
        if self.runner.wants_rebuild(instance) and loaded.meta.get("run_id") != self.run_id:
            return None  # the entry this run's job replaces
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
        what = f"stage {instance.label} ({instance.key[:12]}): {self.backend.name} job {job_id}"
        log = job_dir(self.store.root, instance.key) / "job.log"
        return JobFailedError(failure_message(what, state, detail, log))

    # -- cancelling -----------------------------------------------------------------------------

    def cancel(self, *, why: str = "") -> None:
        """Cancel the jobs this process submitted that have not finished, and any job tagged
        with this run whose submission an interrupt cut short (its id never came back)."""
        ids, self.submitted = self.submitted, []
        cut_short, self._submitting = self._submitting is not None, None
        if not ids and not cut_short:
            return
        try:
            cancelled = cancel_run(self.backend, self.run_id, ids) if cut_short else ids
            if cut_short:
                # The interrupted sbatch may still be talking to the controller: look again.
                time.sleep(ORPHAN_GRACE_S)
                cancelled += [
                    i for i in cancel_run(self.backend, self.run_id) if i not in cancelled
                ]
            elif ids:
                self.backend.cancel(job_ids=ids)
        except BackendError as exc:
            self.say(f"physpipe: could not cancel jobs {', '.join(ids)}: {exc}")
            return
        if cancelled:
            self.say(
                f"physpipe: cancelled {self.backend.name} jobs {', '.join(cancelled)}"
                + (f" ({why})" if why else "")
            )

    def close(self) -> None:
        if self._undo_sigterm is not None:
            self._undo_sigterm()
            self._undo_sigterm = None


def _job_env() -> dict[str, str]:
    env = {}
    # Only what the job needs to find the code and the pickle secret file; the job script is
    # written to disk, so secrets such as PHYSPIPE_SECRET are left to the inherited environment.
    for name in ("XDG_CONFIG_HOME", "PYTHONPATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _short(host: str) -> str:
    return host.split(".", 1)[0].lower()


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

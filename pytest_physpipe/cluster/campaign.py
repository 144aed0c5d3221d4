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
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_physpipe.cluster.adopt import reuse
from pytest_physpipe.cluster.arrays import (
    array_dependency,
    chunks,
    group_by_level,
    order_for_correspondence,
    pack,
    pack_size,
    task_id,
    walltime_text,
)
from pytest_physpipe.cluster.backends.base import Backend, JobInfo, JobRequest
from pytest_physpipe.cluster.interrupts import sigterm_as_interrupt, stop_reason
from pytest_physpipe.cluster.job import JobResult, JobSpec, job_dir, read_job_result
from pytest_physpipe.cluster.jobs import cancel_run, failure_message, job_name
from pytest_physpipe.cluster.outcome import end_state, failed_upstream, owner_cancelled, read_json
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
#: Submission locks held at once while an array is submitted (each is an open file).
LOCK_BATCH = 1000


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
        pack_walltime_s: int = 0,
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
        #: Pack instances of an array into one task while their walltimes fit in this many
        #: seconds (ini ``physpipe_pack_walltime``; 0: one instance per task).
        self.pack_walltime_s = pack_walltime_s
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
                size = pack_size(todo[0], self.pack_walltime_s)
                for batch in chunks(todo, min(largest * size, LOCK_BATCH)):
                    self._submit_array(batch, largest=largest, size=size)
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

    def _submit_array(self, members: list[StageInstance], *, largest: int, size: int) -> None:
        """Submit ``members`` (one stage, one level) as job arrays of at most ``largest``
        tasks, each task computing up to ``size`` of them (:func:`pack`); members another
        session already has in flight are reused."""
        with contextlib.ExitStack() as stack:
            for instance in members:
                stack.enter_context(self._submit_lock(instance))
            todo = []
            for instance in members:
                reused = reuse(self, instance, job_dir(self.store.root, instance.key))
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
            tasks = pack(todo, self.job_ids, size)
            for part in [tasks[i : i + largest] for i in range(0, len(tasks), largest)]:
                self._submit_tasks(part)

    def _submit_tasks(self, tasks: list[list[StageInstance]]) -> None:
        """Submit one job array whose task ``i`` computes ``tasks[i]``; the caller holds the
        submission locks of every member."""
        members = [instance for task in tasks for instance in task]
        kind, depends = array_dependency(tasks, self.job_ids)
        first, last = members[0], members[-1]
        name = job_name(first.key, self.run_id, first.name)
        folder = self.store.root / "jobs" / "arrays" / f"{name}-{len(members)}"
        folder.mkdir(parents=True, exist_ok=True)
        listing = folder / "tasks.json"
        keys = [[instance.key for instance in task] for task in tasks]
        write_text_atomic(listing, json.dumps({"store": str(self.store.root), "keys": keys}))
        for instance in members:
            self._write_spec(instance)
        resources = first.spec.resources
        packed = max(len(task) for task in tasks)
        if packed > 1:  # a task runs its instances one after another
            walltime = walltime_text(resources.walltime_s * packed)
            resources = resources.model_copy(update={"walltime": walltime})
        request = JobRequest(
            name=name,
            argv=[sys.executable, "-m", "pytest_physpipe.worker", "--array", str(listing)],
            cwd=self.cwd,
            log_path=folder / "array.log",
            resources=resources,
            cluster=first.spec.cluster,
            depends_on=depends,
            dependency=kind,
            env=_job_env(),
            default_args=self.default_args,
            array_size=len(tasks),
        )
        array_id = self._dispatch(request, tasks, [f"{kind}:{d}" for d in depends])
        deps = f" {kind} {', '.join(depends)}" if depends else ""
        how = f", up to {packed} instances per task" if packed > 1 else ""
        self.say(
            f"physpipe: submitted {first.label} .. {last.label} ({len(members)} instances) "
            f"as {self.backend.name} array job {array_id} (tasks 0-{len(tasks) - 1}{how}){deps}"
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
            reused = reuse(self, instance, folder)
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
        job_id = self._dispatch(request, [[instance]], list(depends))
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
        self,
        request: JobRequest,
        tasks: list[list[StageInstance]],
        depends: list[str],
    ) -> str:
        """Submit ``request`` and record it per key; the job's (or the array's) id.

        ``tasks``: ``[[instance]]`` for a plain job; for an array, the instances of each task
        (task ``i`` computes ``tasks[i]``, one after another). The ``submitting.json`` markers
        go first: if we die inside ``sbatch``, the next session looks for the job by its name.
        """
        array = request.array_size > 0
        # (instance, task index or -1 for a plain job, instances in its task)
        placed = [
            (instance, index if array else -1, len(task))
            for index, task in enumerate(tasks)
            for instance in task
        ]
        folders = [job_dir(self.store.root, instance.key) for instance, _, _ in placed]
        for (instance, index, size), folder in zip(placed, folders, strict=True):
            marker = self._about(instance, name=request.name)
            if index >= 0:
                marker.update(index=index, pack=size)
            write_text_atomic(folder / "submitting.json", json.dumps(marker, indent=1))
        self._submitting = placed[0][0].key
        self._pace()
        try:
            job_id = self.backend.submit(request=request)
        except BackendError as exc:
            for folder in folders:
                (folder / "submitting.json").unlink(missing_ok=True)
            self._submitting = None
            first = placed[0][0]
            what = (
                f"{len(placed)} instances of stage {first.name} as a job array"
                if array
                else f"stage {first.label} ({first.key[:12]})"
            )
            raise BackendError(f"submitting {what} to {self.backend.name} failed: {exc}") from None
        self.submitted.append(job_id)
        self._submitting = None
        now = time.time()
        for (instance, index, size), folder in zip(placed, folders, strict=True):
            record = {
                "job_id": job_id if index < 0 else task_id(self.backend, job_id, index),
                **self._about(instance, name=request.name),
            }
            if size > 1:
                record["pack"] = size
            record.update(submitted_at=now, depends_on=depends)
            write_text_atomic(folder / "submitted.json", json.dumps(record, indent=1))
            (folder / "submitting.json").unlink(missing_ok=True)
            self.job_ids[instance.key] = record["job_id"]
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
            previous = read_json(job_dir(self.store.root, instance.key) / "submitted.json")
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
            self._raise_if_stopping(instance)  # -x under xdist: stop waiting at once
            # A job ended by a signal (cancelled, walltime): the scheduler's state says which.
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_INTERVAL_S
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
                    how = end_state(
                        self.store, self.planner, instance, info, result, backend=self.backend.name
                    )
                    raise self._failure(instance, job_id, how, detail)
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
        upstream = bool(failed_upstream(self.store, self.planner, instance))
        return owner_cancelled(info, result, upstream_failed=upstream)

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

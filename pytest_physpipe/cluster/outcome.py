"""How a finished job that committed nothing ended, in words a physicist can act on.

The job's own result record (``jobs/<key>/result.json``) is the first witness, the scheduler's
state the second: Torque's wrapper reports cancelled and timed-out jobs as completed, and an
instance packed with others into one array task may never have started when its task was
cancelled or ran out of walltime. Pure functions over the store's job files.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from pytest_physpipe.cluster.backends.base import JobInfo, JobState
from pytest_physpipe.cluster.job import JobResult, job_dir, read_job_result
from pytest_physpipe.plan import Planner, StageInstance
from pytest_physpipe.store.entries import Store

__all__ = ["end_state", "failed_upstream", "owner_cancelled", "read_json", "task_walltime"]


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; ``None`` if it is missing or not an object."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def failed_upstream(
    store: Store, planner: Planner, instance: StageInstance
) -> list[StageInstance | None]:
    """The upstream instances of ``instance`` whose own job raised (not cancelled)."""
    return [
        planner.get(key)
        for key in instance.upstream.values()
        if not store.exists(key)
        and (job := read_job_result(store.root, key)) is not None
        and job.status == "failed"
        and job.signal is None
    ]


def owner_cancelled(info: JobInfo, result: JobResult | None, *, upstream_failed: bool) -> bool:
    """Whether a job another session submitted (and we reused) was stopped, not failed."""
    if result is not None and result.status == "failed" and result.signal is None:
        return False  # the stage raised: a real failure
    if upstream_failed:
        return False
    if info.state in (JobState.CANCELLED, JobState.VANISHED):
        return True
    # Torque's wrapper: a cancelled job reads COMPLETED; the job recorded the signal, or
    # never started (cancelled while pending).
    return info.state is JobState.COMPLETED and (result is None or result.signal is not None)


def task_walltime(store: Path, instance: StageInstance) -> tuple[str, int]:
    """The walltime limit the job (or array task) of ``instance`` asked for, and how many
    instances that task runs one after another (``physpipe_pack_walltime``)."""
    from pytest_physpipe.cluster.arrays import walltime_text

    record = read_json(job_dir(store, instance.key) / "submitted.json") or {}
    packed = int(record.get("pack", 1) or 1)
    walltime = instance.spec.resources.walltime
    if packed > 1:
        walltime = walltime_text(instance.spec.resources.walltime_s * packed)
    return walltime, packed


def end_state(
    store: Store,
    planner: Planner,
    instance: StageInstance,
    info: JobInfo,
    result: JobResult | None,
    *,
    backend: str,
) -> str:
    """How the job of ``instance`` ended, given that it committed nothing."""
    state = info.state.value
    upstream_failed = failed_upstream(store, planner, instance)
    walltime, packed = task_walltime(store.root, instance)
    limit = f"its walltime limit of {walltime}"
    if packed > 1:
        limit = f"the walltime limit of its task ({packed} instances packed), {walltime}"
    if result is not None and result.signal and info.state is JobState.COMPLETED:
        # Torque's wrapper over Slurm reports a cancelled or timed-out job as completed.
        name = signal.Signals(result.signal).name
        return f"by {name} (cancelled, or past {limit}; {backend} does not say which)"
    if result is None and ("Dependency" in info.reason or upstream_failed):
        names = ", ".join(u.label for u in upstream_failed if u is not None)
        return (
            f"without running ({state}), because the job of {names or 'a stage'} it "
            "depends on failed"
        )
    if info.state is JobState.COMPLETED:
        return "COMPLETED without committing a result"
    if info.state is JobState.TIMEOUT:
        if result is None and packed > 1:
            return f"TIMEOUT (its task reached {limit}, before this instance started)"
        return f"TIMEOUT (past {limit})"
    if result is None and packed > 1 and info.state is JobState.CANCELLED:
        return "CANCELLED (its task was cancelled before this instance started)"
    return state

"""Jobs as the store and the scheduler know them: tags, in-flight listing, cancel by run.

Every job a campaign submits is *tagged* by its name, ``physpipe-<key[:12]>-<run tag>-<stage>``
(the run tag is 8 hex digits derived from the run id), so the scheduler alone can say which
run and which instance a job belongs to, even when pytest died between ``sbatch`` and writing
``submitted.json``. Before each submission the campaign writes ``jobs/<key>/submitting.json``;
a later session that finds such a marker looks the key up by tag and adopts the job it finds
instead of submitting a duplicate.

Here too: :func:`store_jobs` (what ``jobs/*/submitted.json`` and ``submitting.json`` record),
:func:`in_flight` (those the scheduler still has pending or running, one scheduler call per
backend), :func:`cancel_run` (one run's jobs, found by record and by tag), and the ``physpipe
jobs`` command built on them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from pytest_physpipe.cluster.backends.base import Backend, JobInfo
from pytest_physpipe.errors import BackendError

__all__ = [
    "StoredJob",
    "cancel_run",
    "failure_message",
    "find_tagged",
    "in_flight",
    "job_name",
    "parse_job_name",
    "plan_extras",
    "run_tag",
    "store_jobs",
]

TAG_PREFIX = "physpipe-"
_TAG = re.compile(r"^physpipe-([0-9a-f]{12})-([0-9a-f]{8})(?:-|$)")


def run_tag(run_id: str) -> str:
    """The 8 hex digits that stand for ``run_id`` in job names."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:8]


def job_name(key: str, run_id: str, stage: str) -> str:
    """The tagged job name: ``physpipe-<key[:12]>-<run tag>-<stage>``."""
    return f"{TAG_PREFIX}{key[:12]}-{run_tag(run_id)}-{stage}"


def parse_job_name(name: str) -> tuple[str, str] | None:
    """``(key prefix, run tag)`` of a tagged job name; ``None`` for any other name."""
    match = _TAG.match(name)
    return (match.group(1), match.group(2)) if match else None


def find_tagged(backend: Backend) -> list[JobInfo] | None:
    """The tagged jobs the scheduler has pending or running; ``None`` if the backend cannot
    list jobs by name (a plugin backend without ``find``)."""
    find: Callable[..., dict[str, JobInfo]] | None = getattr(backend, "find", None)
    if find is None:
        return None
    return [
        info
        for info in find(prefix=TAG_PREFIX).values()
        if not info.state.finished and parse_job_name(info.name) is not None
    ]


@dataclass(frozen=True)
class StoredJob:
    """One key's job as the store records it (``submitted.json``, or a ``submitting.json``
    marker left by a submission that never learnt its job id)."""

    key: str
    stage: str
    run_id: str
    backend: str
    job_id: str | None
    at: float
    state: str = ""  # filled in by in_flight()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def store_jobs(root: Path) -> list[StoredJob]:
    """Every job the store's ``jobs/`` folder records, one per key (the latest submission)."""
    found: list[StoredJob] = []
    for folder in sorted((Path(root) / "jobs").glob("*")):
        submitted = _read(folder / "submitted.json")
        marker = _read(folder / "submitting.json")
        data = (
            marker
            if marker and (not submitted or marker.get("at", 0) > submitted.get("submitted_at", 0))
            else submitted
        )
        if not data:
            continue
        found.append(
            StoredJob(
                key=folder.name,
                stage=str(data.get("stage", "?")),
                run_id=str(data.get("run_id", "?")),
                backend=str(data.get("backend", "?")),
                job_id=None if data is marker else str(data.get("job_id")),
                at=float(data.get("submitted_at", data.get("at", 0.0))),
            )
        )
    return found


def in_flight(jobs: Iterable[StoredJob], backends: dict[str, Backend]) -> list[StoredJob]:
    """The recorded jobs the scheduler has pending or running, with their state.

    One ``status`` call and one tag search per backend; a marker without a job id is matched
    to a tagged job of its key and run.
    """
    by_backend: dict[str, list[StoredJob]] = {}
    for job in jobs:
        by_backend.setdefault(job.backend, []).append(job)
    live: list[StoredJob] = []
    for name, group in sorted(by_backend.items()):
        backend = backends.get(name)
        if backend is None:
            continue
        ids = [job.job_id for job in group if job.job_id]
        states = backend.status(job_ids=ids) if ids else {}
        tagged: dict[tuple[str, str], JobInfo] = {}
        if any(job.job_id is None for job in group):
            for named in find_tagged(backend) or []:
                parsed = parse_job_name(named.name)
                if parsed is not None:
                    tagged[parsed] = named
        for job in group:
            info: JobInfo | None = (
                states.get(job.job_id)
                if job.job_id
                else tagged.get((job.key[:12], run_tag(job.run_id)))
            )
            if info is not None and not info.state.finished:
                live.append(replace(job, job_id=info.job_id, state=info.state.value))
    return live


def cancel_run(backend: Backend, run_id: str, known: Sequence[str] = ()) -> list[str]:
    """Cancel ``known`` job ids and every pending or running job tagged with ``run_id``;
    the ids cancelled."""
    tag = run_tag(run_id)
    ids = list(dict.fromkeys(known))
    for info in find_tagged(backend) or []:
        parsed = parse_job_name(info.name)
        # A job array's pending tasks read "123_[4-9]": cancel the array, "123".
        whole = info.job_id.split("_", 1)[0]
        if parsed is not None and parsed[1] == tag and whole not in ids:
            ids.append(whole)
    if ids:
        backend.cancel(job_ids=ids)
    return ids


#: How much of a job's traceback a failure message shows (the log has all of it).
TRACEBACK_LINES = 8
#: How much of a job's log a failure message shows when the job reported no traceback.
LOG_LINES = 12


def failure_message(what: str, state: str, detail: str | None, log: Path) -> str:
    """Why a job committed nothing, short: its traceback once (the end, where the stage
    raised) and where the full log is; or, without a traceback, the log's last lines."""
    from pytest_physpipe.cluster.backends.base import log_tail

    parts = [f"{what} ended {state}; nothing was committed."]
    if detail and detail.startswith("Traceback"):
        # The job wrote the same traceback to its log: once is enough.
        lines = detail.rstrip().splitlines()
        shown = lines if len(lines) <= TRACEBACK_LINES else ["  ...", *lines[-TRACEBACK_LINES:]]
        parts.append("The job reported:\n" + "\n".join(shown))
        parts.append(f"Full log: {log}")
    else:
        if detail:
            parts.append(f"The job reported: {detail.strip()}")
        parts.append(f"Last lines of {log}:\n{log_tail(log, max_lines=LOG_LINES)}")
    parts.append("Fix the cause and rerun pytest: the job is submitted again.")
    return "\n".join(parts)


def plan_extras(root: Path, backend_name: str, instances: Iterable[Any]) -> dict[str, Any]:
    """What ``--physpipe-plan`` adds for a cluster campaign: the ``after`` column, the jobs
    already in flight for planned keys, and where slow stages would go when the backend cannot
    submit (its commands are missing)."""
    from pytest_physpipe.cluster.backends import BATCH_BACKENDS

    extras: dict[str, Any] = {"after": True}
    factory = BATCH_BACKENDS.get(backend_name)
    if factory is None:
        return extras
    backend: Backend = factory()
    try:
        backend.check()
    except BackendError as exc:
        reason = str(exc).split(":", 1)[0]
        extras["runs_on"] = f"{backend_name} (slow; cannot submit: {reason})"
        return extras
    keys = {instance.key for instance in instances}
    recorded = [job for job in store_jobs(root) if job.key in keys]
    try:
        live = in_flight(recorded, {backend_name: backend}) if recorded else []
    except BackendError:
        live = []
    extras["notes"] = {
        job.key: f"in flight: {job.backend} job {job.job_id}, {job.state.lower()}" for job in live
    }
    return extras


# -- the `physpipe jobs` command -----------------------------------------------------------------


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _backends() -> dict[str, Backend]:
    from pytest_physpipe.cluster.backends import BATCH_BACKENDS

    return {name: factory() for name, factory in BATCH_BACKENDS.items()}


def cmd_jobs(args: argparse.Namespace, store: Any, out: TextIO) -> int:
    """``physpipe jobs [--cancel RUN]``: list (or cancel) the store's jobs in flight."""
    backends = _backends()
    recorded = store_jobs(Path(store.root))
    try:
        live = in_flight(recorded, backends)
    except BackendError as exc:
        out.write(f"physpipe: cannot ask the scheduler: {exc}\n")
        return 2
    if args.cancel:
        runs = {job.run_id for job in recorded}
        if args.cancel not in runs:
            known = ", ".join(sorted(runs)) or "none"
            out.write(
                f"physpipe: no job of run {args.cancel} is recorded in {store.root} (runs: "
                f"{known}). `physpipe jobs` lists the runs with jobs in flight.\n"
            )
            return 1
        status = 0
        for name in sorted({job.backend for job in recorded if job.run_id == args.cancel}):
            backend = backends.get(name)
            if backend is None:
                continue
            mine = [j.job_id for j in live if j.run_id == args.cancel and j.backend == name]
            try:
                ids = cancel_run(backend, args.cancel, [i for i in mine if i])
            except BackendError as exc:
                out.write(f"physpipe: could not cancel: {exc}\n")
                status = 1
                continue
            word = f"{name} jobs {', '.join(ids)}" if ids else f"no {name} job in flight"
            out.write(f"physpipe: run {args.cancel}: cancelled {word}\n")
        return status
    if args.json:
        out.write(json.dumps([job.__dict__ for job in live], indent=1) + "\n")
        return 0
    if not live:
        out.write(f"no jobs in flight for the store {store.root}\n")
        return 0
    now = time.time()
    rows = [
        (
            job.run_id,
            job.stage,
            job.key[:12],
            f"{job.backend} {job.job_id}",
            job.state,
            _age(now - job.at),
        )
        for job in sorted(live, key=lambda j: (j.run_id, j.at))
    ]
    header = ("RUN", "STAGE", "KEY", "JOB", "STATE", "AGE")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    out.write(f"{len(live)} job(s) in flight; `physpipe jobs --cancel RUN` cancels one run's\n")
    return 0

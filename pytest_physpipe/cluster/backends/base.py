"""The batch-backend contract: job states, a job request, the :class:`Backend` protocol.

A batch backend does four things and nothing else: check that its commands exist, submit one
job, report the state of many jobs in one scheduler call, and cancel jobs. It knows nothing
about stages, keys or the store; the campaign logic turns a stage instance into a
:class:`JobRequest` (the command is ``python -m pytest_physpipe.worker ...``) and decides what a
job's end means by reading the result record that the job writes itself: schedulers do not
reliably report exit codes (Slurm without accounting forgets them once a job is purged, Torque's
wrapper over Slurm never reports them), so the scheduler's word is only a hint.

A backend may also ``find`` jobs by name prefix (the campaign tags every job's name with its
run and key, see :mod:`pytest_physpipe.cluster.jobs`).

Also here, shared by the dialects: the job script (:func:`render_script`,
:func:`write_script`), the subprocess runner with a timeout (:func:`run_command`), and
:func:`log_tail` for failure messages.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol, runtime_checkable

from pytest_physpipe.errors import BackendError
from pytest_physpipe.models import ClusterOptions, Resources
from pytest_physpipe.store.atomic import write_text_atomic

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Backend",
    "JobInfo",
    "JobRequest",
    "JobState",
    "log_tail",
    "mem_mib",
    "render_script",
    "run_command",
    "script_path",
    "write_script",
]

#: Seconds a scheduler command may take before we give up on it. Generous: a busy controller
#: on a large site can take tens of seconds to answer, and a submission must not be abandoned
#: half-way (the job may exist even though we never learn its id).
DEFAULT_TIMEOUT_S = 60.0


class JobState(str, Enum):
    """A job's state, normalized across schedulers."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    #: The scheduler does not know the job (never existed, or purged from its memory).
    VANISHED = "VANISHED"

    @property
    def finished(self) -> bool:
        """Whether the job will not change state any more (everything but pending/running)."""
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobRequest:
    """Everything a backend needs to submit one job.

    ``argv`` is the command the job runs (``exec``-ed by the job script, so its exit status is
    the job's); ``cwd`` is where it runs. ``log_path`` receives stdout and stderr together; the
    job script is written beside it (see :func:`script_path`). ``depends_on`` holds job ids of
    the same backend that must complete successfully first (``afterok``). ``env`` is exported
    by the job script on top of the submitting environment. ``default_args`` are the site's
    extra scheduler arguments (ini ``physpipe_slurm_args`` / ``physpipe_pbs_args``, already
    split with :func:`shlex.split`); ``cluster.extra_args`` come after them, so a stage's own
    options win where the scheduler lets the last one win.
    """

    name: str
    argv: Sequence[str]
    cwd: Path
    log_path: Path
    resources: Resources = field(default_factory=Resources)
    cluster: ClusterOptions | None = None
    depends_on: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    default_args: tuple[str, ...] = ()
    #: 0: one job. N > 0: a job array of N tasks, indices ``0 .. N-1`` (the job finds its
    #: index in ``SLURM_ARRAY_TASK_ID``, ``PBS_ARRAY_INDEX`` or ``PBS_ARRAYID``); each task
    #: logs to ``task-<index>.log`` beside ``log_path``, and the backend returns the array's
    #: id (task ``i`` is ``<id>_<i>`` on Slurm, the backend's ``task_id`` elsewhere).
    array_size: int = 0
    #: How ``depends_on`` is meant: ``afterok`` (each listed job, or whole array, succeeded)
    #: or ``aftercorr`` (task ``i`` waits for task ``i`` of the listed array).
    dependency: str = "afterok"

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError(f"JobRequest {self.name!r}: argv must name a command to run")


@dataclass(frozen=True)
class JobInfo:
    """What the scheduler says about one job.

    ``raw_state`` is the scheduler's own word (``"COMPLETING"``, ``"F"``...), ``reason`` its
    explanation where it gives one (Slurm's ``Reason``, PBS's ``comment``). ``exit_code`` is
    the job script's exit status when the scheduler reports it, negative for a signal
    (``-9``), and ``None`` when it does not (a pending job, Torque's wrapper over Slurm, a job
    the scheduler has forgotten).
    """

    job_id: str
    state: JobState
    raw_state: str = ""
    exit_code: int | None = None
    reason: str = ""
    #: The job's name, where the call reports it (``find``).
    name: str = ""


@runtime_checkable
class Backend(Protocol):
    """A batch scheduler dialect. Implementations: ``SlurmBackend``, ``PbsBackend``.

    Every method raises :class:`~pytest_physpipe.errors.BackendError` when a scheduler
    command is missing, times out or fails; its message names the command and quotes the
    scheduler's own error.
    """

    #: ``"slurm"`` or ``"pbs"``: the value of ``--physpipe-backend`` that selects it.
    name: str

    def check(self) -> None:
        """Raise ``BackendError`` naming the first missing command and what to do about it."""
        ...

    def submit(self, *, request: JobRequest) -> str:
        """Write the job script, submit it, and return the scheduler's job id."""
        ...

    def status(self, *, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """Return the state of every id in ``job_ids`` (keyed as given), in one scheduler call
        where the scheduler allows it. Ids the scheduler does not know map to ``VANISHED``."""
        ...

    def cancel(self, *, job_ids: Sequence[str]) -> None:
        """Cancel these jobs. Jobs already finished or unknown are not an error."""
        ...

    # Optional: ``max_array_size() -> int``, the largest job array the scheduler takes (0 or
    # 1: submit one job per instance); backends without it get one job per instance. With
    # it, ``task_id(array_id, index) -> str`` where a task is not ``<array>_<index>``.
    #
    # Optional (the built-in backends have it; a plugin backend without it loses only the
    # recovery of jobs whose submission was interrupted):
    #
    #     def find(self, *, prefix: str) -> dict[str, JobInfo]:
    #         """This user's pending or running jobs whose name starts with ``prefix``,
    #         by job id, with ``JobInfo.name`` set; one scheduler call."""


def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float,
    check: bool = True,
    hint: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run a scheduler command and capture its output as text.

    Raises :class:`BackendError` when the command is missing, runs past ``timeout_s``, or
    (with ``check``) exits non-zero; the message quotes the command line and the scheduler's
    stderr. ``hint`` is appended to the message of a missing command.
    """
    command = shlex.join(argv)
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise BackendError(f"{argv[0]} not found on PATH{': ' + hint if hint else ''}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BackendError(
            f"`{command}` did not answer within {timeout_s:g} s: the scheduler may be "
            "overloaded or down; try again later or check the controller"
        ) from exc
    except OSError as exc:
        raise BackendError(f"`{command}` could not be run: {exc}") from exc
    if check and result.returncode != 0:
        raise BackendError(
            f"`{command}` failed with exit status {result.returncode}: "
            f"{_quote_output(result.stderr, result.stdout)}"
        )
    return result


def _quote_output(stderr: str, stdout: str) -> str:
    text = (stderr.strip() or stdout.strip() or "(no output)").replace("\n", " | ")
    return text if len(text) <= 2000 else text[:2000] + " ..."


def script_path(log_path: Path) -> Path:
    """Where the job script for a job logging to ``log_path`` is written: beside the log,
    ``heat-1a2b.log`` -> ``heat-1a2b.job.sh``."""
    return log_path.with_suffix(".job.sh")


def render_script(request: JobRequest) -> str:
    """The bash job script both dialects submit (neither takes a script on stdin reliably).

    Options go on the submit command line, not as ``#SBATCH``/``#PBS`` lines, so one script
    serves both; the environment is exported here rather than through ``--export``/``-v``,
    whose comma-separated lists cannot carry a value containing a comma.
    """
    for name in request.env:
        if not (name.isidentifier() and name.isascii()):
            raise BackendError(
                f"job {request.name!r}: environment variable name {name!r} is not valid in a "
                "shell; use ASCII letters, digits and underscores"
            )
    lines = [
        "#!/bin/bash",
        f"# pytest-physpipe batch job {request.name}",
        "set -euo pipefail",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(request.env.items())]
    setup = request.cluster.setup if request.cluster is not None else ()
    if setup:
        # Site setup (`module load`, `source .../activate`) often reads unset variables,
        # which `set -u` would turn into a failed job.
        lines.append("set +u")
        lines += list(setup)
        lines.append("set -u")
    lines.append(f"cd {shlex.quote(str(request.cwd))}")
    lines.append("exec " + shlex.join(request.argv))
    return "\n".join(lines) + "\n"


def write_script(request: JobRequest) -> Path:
    """Write :func:`render_script` to :func:`script_path`, atomically, owner-only; return it.

    Built under a temporary name in the same directory and renamed into place, so a
    scheduler never reads a half-written script.
    """
    target = script_path(request.log_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, render_script(request), mode=0o700)
    return target


def mem_mib(resources: Resources) -> int:
    """``resources.mem`` in whole MiB, rounded up (both schedulers take integer megabytes)."""
    return max(1, -(-resources.mem_bytes // (1 << 20)))


def log_tail(path: Path, *, max_lines: int = 20, max_bytes: int = 8192) -> str:
    """The last lines of a job log for a failure message; a note if it cannot be read.

    PBS copies a job's output back only when the job ends, so a missing log is normal while a
    PBS job runs.
    """
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return f"(no log at {path})"
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut by the byte window
    return "\n".join(lines[-max_lines:])

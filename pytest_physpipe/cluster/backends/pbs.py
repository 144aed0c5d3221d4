"""PBS: ``qsub`` to submit, ``qstat -f`` for states, ``qdel`` to cancel.

One backend serves three implementations of the PBS commands:

- **PBS Pro / OpenPBS** (``qstat --version`` prints ``pbs_version = ...``): resources as
  ``-l select=1:ncpus=N:mem=M[:ngpus=G]``; states from ``qstat -f -F json -x`` (``-x`` adds
  finished jobs, kept while the server's job history is enabled; ``Exit_status`` is there).
- **Torque**: resources as ``-l nodes=1:ppn=N[:gpus=G],mem=M``; states from the text of
  ``qstat -f`` (``exit_status`` appears on completed jobs, state ``C``).
- **Slurm's Torque wrapper** (Debian's ``slurm-wlm-torque``, what CI runs): Torque's syntax;
  ``qstat -f`` reports ``Q``, ``R`` or ``C`` and *never an exit status*, so a failed or
  cancelled job reads as ``COMPLETED`` with ``exit_code=None``. Callers must rely on the
  job's own result record, not on this state.

Job arrays: ``qsub -J 0-N`` (PBS Pro) or ``-t 0-N`` (Torque); subjob ``i`` of ``123[].server``
is ``123[i].server``. PBS has no per-task dependency (Slurm's ``aftercorr``) and no dependency
on one subjob, so a dependent waits for the whole upstream array (``afterok``, Torque's
``afterokarray``). Slurm's wrapper takes ``-t`` too, but its ``qstat`` reports one state per
array, so no array goes through it (:meth:`PbsBackend.max_array_size` is 0 there).

The status dialect (JSON or text) is found by trying JSON first and remembered per backend.
Parsers are pure module-level functions, unit-tested on captured output.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pytest_physpipe.cluster.backends.base import (
    DEFAULT_TIMEOUT_S,
    JobInfo,
    JobRequest,
    JobState,
    mem_mib,
    run_command,
    write_script,
)
from pytest_physpipe.errors import BackendError

__all__ = [
    "PbsBackend",
    "array_of",
    "depend_clause",
    "format_pbs_walltime",
    "map_pbs_state",
    "parse_qstat_json",
    "parse_qstat_named",
    "parse_qstat_text",
    "parse_qsub_output",
    "pbs_info",
    "qsub_argv",
]

Flavor = Literal["pbspro", "torque"]

_HINT = (
    "load the PBS/Torque module or run on a login node, or choose --physpipe-backend local "
    "(or slurm on a Slurm site)"
)

# PBS's job-exit codes for "killed at the walltime limit": Torque's JOB_EXEC_OVERLIMIT_WT and
# PBS Pro's JOB_EXEC_KILL_WALLTIME.
_WALLTIME_EXITS = frozenset({-11, -29})
# 256 + SIGTERM: how both report a running job killed by qdel.
_QDEL_EXIT = 256 + 15

# qstat's complaint about an option it does not have: Torque and the Slurm wrapper do not
# know -F json (PBS Pro only), and say so in different words.
_UNSUPPORTED = re.compile(r"unknown option|invalid option|illegal option|usage:", re.IGNORECASE)
# What qdel says about a job that is already gone: not an error for cancel().
_ALREADY_GONE = re.compile(
    r"unknown job id|has finished|already|completed|invalid (request )?(for )?state|"
    r"request invalid for state",
    re.IGNORECASE,
)
# Attribute lines of `qstat -f`: "    job_state = R" (tab-indented in the Slurm wrapper);
# other indented lines continue the previous value (long Variable_List, comment).
_ATTRIBUTE = re.compile(r"^\s+([A-Za-z_][\w.]*) = ?(.*)$")
_JOB_HEADER = re.compile(r"^Job Id:\s*(\S+)")
# A subjob of a job array, PBS Pro and Torque alike: "123[4].server" (the array: "123[].server").
_SUBJOB = re.compile(r"^(\d+)\[\d+\](.*)$")
#: The largest array a PBS server takes where ``qmgr`` does not say (PBS Pro's default is
#: 10000; Torque's ``max_job_array_size`` is unset by default).
DEFAULT_MAX_ARRAY = 1000


def map_pbs_state(job_state: str, *, exit_status: int | None, comment: str = "") -> JobState:
    """Map a PBS ``job_state`` letter (plus exit status and comment) to a :class:`JobState`.

    ``C`` (Torque), ``F`` and ``X`` (PBS Pro) are finished: the exit status decides between
    completed, failed, timed out and cancelled. A finished job without an exit status (the
    Slurm wrapper) is ``COMPLETED`` unless the comment says it was deleted.
    """
    letter = job_state.strip().upper()[:1]
    if letter in ("Q", "H", "W", "T", "M"):
        return JobState.PENDING
    if letter not in ("C", "F", "X"):
        # R, E (exiting), B (array begun), S/U (suspended), and any letter we do not know:
        # the scheduler still holds the job, so it is not finished.
        return JobState.RUNNING
    lowered = comment.lower()
    if exit_status == 0 or (exit_status is None and "delete" not in lowered):
        state = JobState.COMPLETED
    elif exit_status in _WALLTIME_EXITS or "walltime" in lowered:
        state = JobState.TIMEOUT
    elif exit_status in (None, _QDEL_EXIT) or "delete" in lowered:
        state = JobState.CANCELLED
    else:
        state = JobState.FAILED
    return state


def _exit_code(exit_status: int | None) -> int | None:
    """PBS exit status as Python's ``returncode``: 256+N is signal N; PBS's own negative codes
    (job could not start, limit exceeded) are not the script's and give ``None``."""
    if exit_status is None or exit_status < 0:
        return None
    if exit_status > 256:
        return -(exit_status - 256)
    return exit_status


def pbs_info(job_id: str, attributes: Mapping[str, Any]) -> JobInfo:
    """A :class:`JobInfo` from one job's ``qstat -f`` attributes (JSON or text), any case."""
    lowered = {key.lower(): value for key, value in attributes.items()}
    job_state = str(lowered.get("job_state", ""))
    raw_exit = lowered.get("exit_status")
    exit_status: int | None
    try:
        exit_status = None if raw_exit is None else int(str(raw_exit).strip())
    except ValueError:
        exit_status = None
    comment = str(lowered.get("comment", ""))
    state = map_pbs_state(job_state, exit_status=exit_status, comment=comment)
    reason = comment
    if exit_status is not None and exit_status < 0:
        reason = f"Exit_status={exit_status}" + (f": {comment}" if comment else "")
    elif state is JobState.COMPLETED and exit_status is None:
        reason = "the scheduler reports no exit status; only the job's own record tells success"
    return JobInfo(
        job_id=job_id,
        state=state,
        raw_state=job_state,
        exit_code=_exit_code(exit_status) if state.finished else None,
        reason=reason,
    )


def parse_qstat_json(text: str) -> dict[str, JobInfo]:
    """Parse PBS Pro's ``qstat -f -F json -x`` output, by the job ids it prints.

    Raises ``ValueError`` if the text is not JSON (some PBS Pro versions print invalid JSON
    when a job's environment holds backslashes or quotes; the caller then falls back to text).
    """
    if not text.strip():
        return {}
    # strict=False: control characters inside strings (a comment with a tab) are accepted.
    data = json.loads(text, strict=False)
    # No "Jobs" at all is what PBS Pro prints when none of the ids is known.
    jobs = (data.get("Jobs") or {}) if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        # ValueError, like json's own errors: the caller treats any malformed output alike.
        raise ValueError("qstat JSON output is not an object with a 'Jobs' object")  # noqa: TRY004
    return {
        str(job_id): pbs_info(str(job_id), attrs)
        for job_id, attrs in jobs.items()
        if isinstance(attrs, dict)
    }


def parse_qstat_text(text: str) -> dict[str, JobInfo]:
    """Parse the text of ``qstat -f`` (Torque, PBS Pro, Slurm's wrapper), by job id."""
    return {job_id: pbs_info(job_id, attrs) for job_id, attrs in _qstat_blocks(text).items()}


def parse_qstat_named(text: str, *, prefix: str) -> dict[str, JobInfo]:
    """The jobs of ``qstat -f`` text whose ``Job_Name`` starts with ``prefix``, named."""
    jobs: dict[str, JobInfo] = {}
    for job_id, attrs in _qstat_blocks(text).items():
        name = next((v for k, v in attrs.items() if k.lower() == "job_name"), "")
        if name.startswith(prefix):
            info = pbs_info(job_id, attrs)
            jobs[job_id] = JobInfo(
                job_id=job_id,
                state=info.state,
                raw_state=info.raw_state,
                exit_code=info.exit_code,
                reason=info.reason,
                name=name,
            )
    return jobs


def _qstat_blocks(text: str) -> dict[str, dict[str, str]]:
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    last_key = ""
    for line in text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            current = blocks.setdefault(header.group(1), {})
            last_key = ""
            continue
        if current is None or not line.strip():
            continue
        attribute = _ATTRIBUTE.match(line)
        if attribute:
            last_key = attribute.group(1)
            current[last_key] = attribute.group(2).strip()
        elif last_key:
            current[last_key] += line.strip()
    return blocks


def parse_qsub_output(stdout: str) -> str:
    """The job id ``qsub`` prints (``"1234"`` or ``"1234.server"``)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    job_id = lines[-1] if lines else ""
    if not re.fullmatch(r"\d+(\[\d*\])?(\.[\w.-]+)?", job_id):
        raise BackendError(f"qsub printed no job id: {stdout.strip()!r}")
    return job_id


def format_pbs_walltime(seconds: int) -> str:
    """Seconds as PBS's ``HH:MM:SS`` (hours may exceed 24)."""
    minutes, secs = divmod(max(seconds, 1), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _job_name(name: str) -> str:
    # PBS: no whitespace, must start with a letter; PBS Pro allows 236 characters, older
    # Torque fewer, so keep it short.
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if not cleaned[:1].isalpha():
        cleaned = "j" + cleaned
    return cleaned[:63]


def qsub_argv(request: JobRequest, *, script: Path, flavor: Flavor) -> list[str]:
    """The ``qsub`` command line that submits ``script`` for ``request``."""
    res = request.resources
    mem = f"{mem_mib(res)}mb"
    walltime = format_pbs_walltime(res.walltime_s)
    if flavor == "pbspro":
        chunk = f"select=1:ncpus={res.cpu_slots}:mem={mem}" + (
            f":ngpus={res.gpu}" if res.gpu else ""
        )
        if res.mpi:  # the ranks the site's mpiexec starts from the job's node file
            chunk += f":mpiprocs={res.mpi}"
        limits = ["-l", chunk, "-l", f"walltime={walltime}"]
    else:
        nodes = f"nodes=1:ppn={res.cpu_slots}" + (f":gpus={res.gpu}" if res.gpu else "")
        limits = ["-l", f"{nodes},mem={mem},walltime={walltime}"]
    argv = [
        "qsub",
        "-N",
        _job_name(request.name),
        "-o",
        _output(request, flavor),
        "-j",
        "oe",
        # The job sees the submitting environment (same Python, same PATH), as on Slurm.
        "-V",
        *limits,
    ]
    cluster = request.cluster
    if cluster is not None:
        # `partition` is the Slurm word; on PBS it means a queue unless one is given.
        # PBS has no QOS: `cluster.qos` is not used here.
        queue = cluster.queue or cluster.partition
        if queue:
            argv += ["-q", queue]
        if cluster.account:
            argv += ["-A", cluster.account]
    if request.array_size > 1:  # PBS Pro: -J; Torque (and Slurm's wrapper): -t
        argv += ["-J" if flavor == "pbspro" else "-t", f"0-{request.array_size - 1}"]
    if request.depends_on:
        argv += ["-W", depend_clause(request.depends_on, flavor=flavor)]
    argv += request.default_args
    if cluster is not None:
        argv += cluster.extra_args
    argv.append(str(script))
    return argv


def _output(request: JobRequest, flavor: Flavor) -> str:
    """Where the job's output goes: its log; for an array, one file per task beside it (each
    task's worker then logs to its own key's ``job.log`` anyway)."""
    if request.array_size <= 1:
        return str(request.log_path)
    folder = request.log_path.parent
    # PBS Pro substitutes ^array_index^; Slurm's wrapper hands %a to sbatch; Torque appends
    # "-<index>" to the name it is given.
    index = "^array_index^" if flavor == "pbspro" else "%a"
    return str(folder / f"task-{index}.log")


def array_of(job_id: str) -> str:
    """The array a PBS subjob belongs to (``123[4].server`` -> ``123[].server``); any other
    id unchanged. PBS has no dependency on one subjob: a dependent waits for its array."""
    match = _SUBJOB.match(job_id)
    return f"{match.group(1)}[]{match.group(2)}" if match else job_id


def depend_clause(job_ids: Sequence[str], *, flavor: Flavor) -> str:
    """``depend=...`` for ``qsub -W``: ``afterok`` on plain jobs, and on whole arrays (PBS Pro;
    Torque spells it ``afterokarray``). PBS has no per-task dependency (Slurm's ``aftercorr``):
    a dependent of an array task waits for the whole array."""
    plain: list[str] = []
    arrays: list[str] = []
    for job_id in dict.fromkeys(array_of(i) for i in job_ids):
        (arrays if "[]" in job_id and flavor == "torque" else plain).append(job_id)
    clauses = [f"afterok:{':'.join(plain)}"] if plain else []
    clauses += [f"afterokarray:{':'.join(arrays)}"] if arrays else []
    return "depend=" + ",".join(clauses)


def _short_id(job_id: str) -> str:
    return job_id.split(".", 1)[0]


class PbsBackend:
    """Submit stage jobs to PBS Pro, OpenPBS, Torque, or Slurm's Torque wrapper.

    ``timeout_s`` bounds every scheduler command. ``flavor`` skips the detection
    (``qstat --version``) when given.
    """

    name = "pbs"

    def __init__(
        self, *, timeout_s: float = DEFAULT_TIMEOUT_S, flavor: Flavor | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self._flavor: Flavor | None = flavor
        #: Slurm's Torque wrapper (found with the flavour): no job arrays through it.
        self._wrapper = False
        self._max_array: int | None = None
        # Which `qstat -f` works, learnt on the first status() call.
        self._status_dialect: Literal["json", "text"] | None = (
            None if flavor is None else ("json" if flavor == "pbspro" else "text")
        )

    def __repr__(self) -> str:
        return f"PbsBackend(timeout_s={self.timeout_s!r}, flavor={self._flavor!r})"

    def check(self) -> None:
        for command in ("qsub", "qstat", "qdel"):
            if shutil.which(command) is None:
                raise BackendError(f"{command} not found on PATH: {_HINT}")

    @property
    def flavor(self) -> Flavor:
        """``"pbspro"`` or ``"torque"`` (Torque and Slurm's wrapper), detected once."""
        if self._flavor is None:
            result = run_command(
                ["qstat", "--version"], timeout_s=self.timeout_s, check=False, hint=_HINT
            )
            said = result.stdout + result.stderr
            self._flavor = "pbspro" if "pbs_version" in said else "torque"
            # Torque prints its version; Slurm's wrapper knows no --version.
            self._wrapper = "unknown option" in said.lower()
        return self._flavor

    def max_array_size(self) -> int:
        """The largest job array to submit: the server's ``max_array_size`` (PBS Pro) or
        ``max_job_array_size`` (Torque) where ``qmgr`` reports it, else ``DEFAULT_MAX_ARRAY``;
        0 (one job per instance) under Slurm's Torque wrapper, whose ``qstat`` reports one
        state for a whole array (that of its last task), so its tasks could not be followed.
        """
        if self._max_array is None:
            self._max_array = self._probe_max_array()
        return self._max_array

    def _probe_max_array(self) -> int:
        self.flavor  # noqa: B018 (detects the flavour, and the wrapper, once)
        if self._wrapper:
            return 0
        if shutil.which("qmgr") is None:
            return DEFAULT_MAX_ARRAY
        result = run_command(
            ["qmgr", "-c", "list server"], timeout_s=self.timeout_s, check=False, hint=_HINT
        )
        match = re.search(r"\bmax_(?:job_)?array_size\s*=\s*(\d+)", result.stdout)
        return int(match.group(1)) if match else DEFAULT_MAX_ARRAY

    def task_id(self, array_id: str, index: int) -> str:
        """Subjob ``index`` of array ``array_id`` (``123[].server`` -> ``123[4].server``); a
        one-task array goes out as a plain job and keeps its own id."""
        return array_id.replace("[]", f"[{index}]", 1) if "[]" in array_id else array_id

    def submit(self, *, request: JobRequest) -> str:
        script = write_script(request)
        argv = qsub_argv(request, script=script, flavor=self.flavor)
        result = run_command(argv, timeout_s=self.timeout_s, hint=_HINT)
        return parse_qsub_output(result.stdout)

    def status(self, *, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        known = self._query(ids)
        by_short = {_short_id(job_id): info for job_id, info in known.items()}
        out: dict[str, JobInfo] = {}
        for job_id in job_ids:
            info = known.get(job_id) or by_short.get(_short_id(job_id))
            if info is None:
                out[job_id] = JobInfo(
                    job_id=job_id,
                    state=JobState.VANISHED,
                    reason="unknown to qstat (finished and purged, or job history disabled)",
                )
            else:
                out[job_id] = JobInfo(
                    job_id=job_id,
                    state=info.state,
                    raw_state=info.raw_state,
                    exit_code=info.exit_code,
                    reason=info.reason,
                )
        return out

    def _query(self, ids: list[str]) -> dict[str, JobInfo]:
        if self._status_dialect in (None, "json"):
            argv = ["qstat", "-f", "-F", "json", "-x", *ids]
            result = run_command(argv, timeout_s=self.timeout_s, check=False, hint=_HINT)
            output = result.stdout + result.stderr
            if not result.stdout.lstrip().startswith("{") and _UNSUPPORTED.search(output):
                self._status_dialect = "text"
            else:
                try:
                    jobs = parse_qstat_json(result.stdout)
                except ValueError:
                    # Invalid JSON from PBS Pro itself: read the same facts as text.
                    return self._query_text(["qstat", "-f", "-x", *ids])
                self._status_dialect = "json"
                self._raise_unless_answered(argv, result.returncode, result.stderr, jobs)
                return jobs
        return self._query_text(["qstat", "-f", *ids])

    def _query_text(self, argv: list[str]) -> dict[str, JobInfo]:
        result = run_command(argv, timeout_s=self.timeout_s, check=False, hint=_HINT)
        jobs = parse_qstat_text(result.stdout)
        self._raise_unless_answered(argv, result.returncode, result.stderr, jobs)
        return jobs

    @staticmethod
    def _raise_unless_answered(
        argv: list[str], returncode: int, stderr: str, jobs: Mapping[str, JobInfo]
    ) -> None:
        # qstat exits 153 (PBSE_UNKJOBID 15001 & 0xff) when some id is unknown, and still
        # prints the others; any other failure that printed no job is a real error.
        if returncode in (0, 153) or jobs:
            return
        if "unknown job id" in stderr.lower():
            return
        raise BackendError(
            f"`{' '.join(argv)}` failed with exit status {returncode}: "
            f"{stderr.strip() or '(no output)'}"
        )

    def find(self, *, prefix: str) -> dict[str, JobInfo]:
        """Pending and running jobs whose name starts with ``prefix`` (``qstat -f``, text:
        every flavour prints it; finished jobs it still lists are left out)."""
        result = run_command(["qstat", "-f"], timeout_s=self.timeout_s, check=False, hint=_HINT)
        jobs = parse_qstat_named(result.stdout, prefix=prefix)
        self._raise_unless_answered(["qstat", "-f"], result.returncode, result.stderr, jobs)
        return {job_id: info for job_id, info in jobs.items() if not info.state.finished}

    def cancel(self, *, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        result = run_command(["qdel", *job_ids], timeout_s=self.timeout_s, check=False, hint=_HINT)
        if result.returncode == 0:
            return
        # qdel exits non-zero for jobs already finished or unknown, which cancel() accepts;
        # Slurm's wrapper says nothing at all then.
        complaints = [
            line
            for line in (result.stdout + "\n" + result.stderr).splitlines()
            if line.strip() and not _ALREADY_GONE.search(line)
        ]
        if complaints:
            raise BackendError(
                f"`qdel {' '.join(job_ids)}` failed with exit status {result.returncode}: "
                + " | ".join(complaints)
            )

"""Slurm: ``sbatch`` to submit, ``squeue`` (then ``scontrol``, then ``sacct``) for states,
``scancel`` to cancel.

The parsing and argument-building functions are pure and module-level, so the unit tests run
them on captured scheduler output; :class:`SlurmBackend` only adds the subprocess calls.
"""

from __future__ import annotations

import getpass
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

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
    "SlurmBackend",
    "decode_exit_code",
    "format_slurm_time",
    "map_slurm_state",
    "parse_max_array_size",
    "parse_sacct",
    "parse_sbatch_output",
    "parse_scontrol_job",
    "parse_squeue",
    "parse_squeue_named",
    "sbatch_argv",
]

_HINT = (
    "load the Slurm module or run on a login node, or choose --physpipe-backend local "
    "(or pbs on a PBS/Torque site)"
)

# squeue --Format fields, each ended by the "|" suffix; no width, so nothing is truncated.
_SQUEUE_FORMAT = "JobID:|,State:|,Reason:|,exit_code:|"

_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "PREEMPTED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
}

_INVALID_ID = re.compile(r"invalid job id", re.IGNORECASE)


def map_slurm_state(raw: str) -> JobState:
    """Map a Slurm state (``squeue``/``scontrol``/``sacct`` spelling) to a :class:`JobState`.

    ``sacct`` writes ``"CANCELLED by 1000"``; only the first word counts. A state this
    version does not know yet is taken as still running: the scheduler knows the job, and
    guessing "finished" would fail a test whose job may still succeed.
    """
    word = raw.strip().split(" ", 1)[0].rstrip("+").upper()
    return _STATES.get(word, JobState.RUNNING)


def decode_exit_code(text: str) -> int | None:
    """A Slurm exit code as Python's ``returncode``: ``-N`` for signal N, else the status.

    Accepts scontrol/sacct's ``"3:0"`` (code:signal) and squeue's raw wait status
    (``"768"`` = exit 3, ``"15"`` = SIGTERM). Empty or unparsable text gives ``None``.
    """
    text = text.strip()
    if ":" in text:
        code_text, _, signal_text = text.partition(":")
        if not (code_text.isdigit() and signal_text.isdigit()):
            return None
        signal = int(signal_text)
        return -signal if signal else int(code_text)
    if not text.isdigit():
        return None
    status = int(text)
    if status & 0x7F:
        return -(status & 0x7F)
    return (status >> 8) & 0xFF


def _info(job_id: str, raw_state: str, reason: str, exit_text: str) -> JobInfo:
    state = map_slurm_state(raw_state)
    reason = "" if reason.strip() in ("None", "(null)") else reason.strip()
    exit_code = decode_exit_code(exit_text) if state.finished else None
    return JobInfo(
        job_id=job_id, state=state, raw_state=raw_state.strip(), exit_code=exit_code, reason=reason
    )


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Parse ``squeue -h -O 'JobID:|,State:|,Reason:|,exit_code:|'`` output, by job id."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 4 or not fields[0]:
            continue
        job_id, raw_state, reason, exit_text = fields[:4]
        jobs[job_id] = _info(job_id, raw_state, reason, exit_text)
    return jobs


def parse_max_array_size(config_text: str) -> int:
    """``MaxArraySize`` from ``scontrol show config`` (Slurm's default, 1001, if absent)."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config_text, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def parse_squeue_named(text: str, *, prefix: str) -> dict[str, JobInfo]:
    """Parse ``squeue -h -O 'JobID:|,Name:|,State:|,Reason:|'``: the jobs named ``prefix...``."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 4 or not fields[0] or not fields[1].startswith(prefix):
            continue
        info = _info(fields[0], fields[2], fields[3], "")
        jobs[fields[0]] = JobInfo(
            job_id=info.job_id,
            state=info.state,
            raw_state=info.raw_state,
            reason=info.reason,
            name=fields[1],
        )
    return jobs


def parse_scontrol_job(text: str) -> JobInfo | None:
    """Parse one job of ``scontrol show job -o ID``; ``None`` if the text holds no job."""
    fields: dict[str, str] = {}
    # One "Key=Value" per space-separated word; values may contain '=' (TRES=cpu=1,node=1)
    # but the keys we read never hold spaces.
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key not in fields:
            fields[key] = value
    if "JobId" not in fields or "JobState" not in fields:
        return None
    return _info(
        fields["JobId"], fields["JobState"], fields.get("Reason", ""), fields.get("ExitCode", "")
    )


def parse_sacct(text: str, *, job_ids: Iterable[str]) -> dict[str, JobInfo]:
    """Parse ``sacct -n -P -X -o JobID,State,ExitCode -j IDS`` for the ids asked."""
    wanted = set(job_ids)
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3 or fields[0] not in wanted:
            continue
        jobs[fields[0]] = _info(fields[0], fields[1], "", fields[2])
    return jobs


def parse_sbatch_output(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` (``"123"`` or ``"123;cluster"``)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    job_id = lines[-1].split(";", 1)[0] if lines else ""
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise BackendError(f"sbatch printed no job id: {stdout.strip()!r}")
    return job_id


def format_slurm_time(seconds: int) -> str:
    """Seconds as Slurm's ``[D-]HH:MM:SS``. Slurm rounds a limit up to whole minutes."""
    minutes, secs = divmod(max(seconds, 1), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def _job_name(name: str) -> str:
    # Slurm takes almost anything, but whitespace and commas confuse squeue/sacct output.
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)[:200] or "physpipe"


def _output(request: JobRequest) -> str:
    if not request.array_size:
        return str(request.log_path).replace("%", "%%")
    folder = str(request.log_path.parent).replace("%", "%%")
    return f"{folder}/task-%a.log"


def sbatch_argv(request: JobRequest, *, script: Path) -> list[str]:
    """The ``sbatch`` command line that submits ``script`` for ``request``."""
    res = request.resources
    cluster = request.cluster
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={_job_name(request.name)}",
        # sbatch expands %j, %u... in file names; %% is a literal percent sign.
        f"--output={_output(request)}",
        f"--chdir={request.cwd}",
        # An MPI stage's job holds its ranks as tasks (srun starts them, maybe on several
        # nodes); any other job is one task on one node.
        *(["--nodes=1", "--ntasks=1"] if not res.mpi else [f"--ntasks={res.mpi}"]),
        f"--cpus-per-task={res.cpu}",
        f"--mem={mem_mib(res)}M",
        f"--time={format_slurm_time(res.walltime_s)}",
        # Jobs inherit the submitting environment (the same Python, the same PATH) even where
        # a site sets SBATCH_EXPORT=NONE; the request's own env is exported by the script.
        "--export=ALL",
    ]
    if res.gpu:
        argv.append(f"--gres=gpu:{res.gpu}")
    if cluster is not None:
        # `queue` is the PBS word; on Slurm it means a partition unless one is given.
        partition = cluster.partition or cluster.queue
        if partition:
            argv.append(f"--partition={partition}")
        if cluster.account:
            argv.append(f"--account={cluster.account}")
        if cluster.qos:
            argv.append(f"--qos={cluster.qos}")
    if request.array_size:
        argv.append(f"--array=0-{request.array_size - 1}")
    if request.depends_on:
        argv.append(f"--dependency={request.dependency}:" + ":".join(request.depends_on))
        # A job whose upstream failed is cancelled instead of pending forever.
        argv.append("--kill-on-invalid-dep=yes")
    argv += request.default_args
    if cluster is not None:
        argv += cluster.extra_args
    argv.append(str(script))
    return argv


class SlurmBackend:
    """Submit stage jobs to Slurm. ``timeout_s`` bounds every scheduler command."""

    name = "slurm"

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        # None until tried; False once sacct has failed (accounting disabled), so a
        # cluster without accounting costs one failed call, not one per poll.
        self._sacct_works: bool | None = None
        self._max_array: int | None = None

    def __repr__(self) -> str:
        return f"SlurmBackend(timeout_s={self.timeout_s!r})"

    def check(self) -> None:
        for command in ("sbatch", "squeue", "scontrol", "scancel"):
            if shutil.which(command) is None:
                raise BackendError(f"{command} not found on PATH: {_HINT}")

    def submit(self, *, request: JobRequest) -> str:
        script = write_script(request)
        result = run_command(
            sbatch_argv(request, script=script), timeout_s=self.timeout_s, hint=_HINT
        )
        return parse_sbatch_output(result.stdout)

    def status(self, *, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        result = run_command(
            # -r: one line per array task ("123_4"), pending ones included.
            ["squeue", "--all", "-h", "-r", "-t", "all", "-O", _SQUEUE_FORMAT, "-j", ",".join(ids)],
            timeout_s=self.timeout_s,
            check=False,
            hint=_HINT,
        )
        if result.returncode == 0:
            known = parse_squeue(result.stdout)
        elif _INVALID_ID.search(result.stderr):
            # squeue fails outright when *none* of the ids is known (it skips unknown ones
            # when some are known).
            known = {}
        else:
            raise BackendError(
                f"squeue failed with exit status {result.returncode}: {result.stderr.strip()}"
            )
        missing = [job_id for job_id in ids if job_id not in known]
        for job_id in missing:
            info = self._scontrol(job_id)
            if info is not None:
                known[job_id] = info
        missing = [job_id for job_id in ids if job_id not in known]
        if missing:
            known.update(self._sacct(missing))
        return {
            job_id: known.get(job_id)
            or JobInfo(
                job_id=job_id,
                state=JobState.VANISHED,
                reason="unknown to squeue, scontrol and sacct (purged after MinJobAge?)",
            )
            for job_id in job_ids
        }

    def _scontrol(self, job_id: str) -> JobInfo | None:
        result = run_command(
            ["scontrol", "show", "job", "-o", job_id],
            timeout_s=self.timeout_s,
            check=False,
            hint=_HINT,
        )
        if result.returncode != 0:
            if _INVALID_ID.search(result.stderr + result.stdout):
                return None
            raise BackendError(
                f"scontrol show job {job_id} failed with exit status {result.returncode}: "
                f"{result.stderr.strip()}"
            )
        return parse_scontrol_job(result.stdout)

    def _sacct(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        if self._sacct_works is False or shutil.which("sacct") is None:
            return {}
        result = run_command(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", ",".join(job_ids)],
            timeout_s=self.timeout_s,
            check=False,
        )
        self._sacct_works = result.returncode == 0
        return parse_sacct(result.stdout, job_ids=job_ids) if self._sacct_works else {}

    def nodes(self) -> set[str] | None:
        """The cluster's node names (``sinfo``, expanded by ``scontrol show hostnames``);
        ``None`` when Slurm does not answer."""
        try:
            listed = run_command(["sinfo", "-h", "-o", "%N"], timeout_s=self.timeout_s)
        except BackendError:
            return None
        found: set[str] = set()
        for ranged in listed.stdout.split():
            try:
                expanded = run_command(
                    ["scontrol", "show", "hostnames", ranged], timeout_s=self.timeout_s
                ).stdout.split()
            except BackendError:
                expanded = []
            found.update(expanded or [ranged])
        return found

    def max_array_size(self) -> int:
        """Slurm's ``MaxArraySize`` (indices must stay below it); 0 where arrays are off."""
        if self._max_array is None:
            result = run_command(
                ["scontrol", "show", "config"], timeout_s=self.timeout_s, check=False, hint=_HINT
            )
            self._max_array = parse_max_array_size(result.stdout)
        return self._max_array

    def find(self, *, prefix: str) -> dict[str, JobInfo]:
        """This user's pending and running jobs whose name starts with ``prefix``."""
        result = run_command(
            ["squeue", "-u", getpass.getuser(), "-h", "-O", "JobID:|,Name:|,State:|,Reason:|"],
            timeout_s=self.timeout_s,
            hint=_HINT,
        )
        return parse_squeue_named(result.stdout, prefix=prefix)

    def cancel(self, *, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        # scancel is silent and exits 0 for jobs already finished or unknown.
        run_command(["scancel", *job_ids], timeout_s=self.timeout_s, hint=_HINT)

"""Unit tests of the batch-backend layer: parsers on captured scheduler output, argument
builders, the job script, and the PBS status-dialect detection with fake commands on PATH.

The Slurm and Torque-wrapper samples were captured from the CI cluster (.ci/slurm-up:
Debian 12, Slurm 22.05, slurm-wlm-torque). The PBS Pro JSON and the Torque text samples are
written from those schedulers' documented output formats.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_physpipe.cluster.backends import (
    BATCH_BACKENDS,
    JobInfo,
    JobRequest,
    JobState,
    PbsBackend,
    SlurmBackend,
    batch_backend,
    log_tail,
    render_script,
    script_path,
    write_script,
)
from pytest_physpipe.cluster.backends.base import mem_mib, run_command
from pytest_physpipe.cluster.backends.pbs import (
    array_of,
    depend_clause,
    format_pbs_walltime,
    map_pbs_state,
    parse_qstat_json,
    parse_qstat_text,
    parse_qsub_output,
    qsub_argv,
)
from pytest_physpipe.cluster.backends.slurm import (
    decode_exit_code,
    format_slurm_time,
    map_slurm_state,
    parse_sacct,
    parse_sbatch_output,
    parse_scontrol_job,
    parse_squeue,
    sbatch_argv,
)
from pytest_physpipe.errors import BackendError, PhyspipeError
from pytest_physpipe.models import ClusterOptions, Resources

# --- captured from the CI cluster ---------------------------------------------------------

# squeue --all -h -t all -O "JobID:|,State:|,Reason:|,exit_code:|" -j 2,3,4,12,13,16,18,99999
SQUEUE = """\
3|CANCELLED|None|15|
4|CANCELLED|DependencyNeverSatisfied|0|
12|COMPLETED|None|0|
2|FAILED|NonZeroExitCode|768|
13|FAILED|NonZeroExitCode|768|
18|PENDING|JobHeldUser|0|
16|RUNNING|None|0|
20|TIMEOUT|TimeLimit|15|
"""

# scontrol show job -o 13
SCONTROL_FAILED = (
    "JobId=13 JobName=slurm-b UserId=root(0) GroupId=root(0) MCS_label=N/A "
    "Priority=4294901747 Nice=0 Account=(null) QOS=(null) JobState=FAILED "
    "Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 "
    "ExitCode=3:0 RunTime=00:00:00 TimeLimit=01:00:00 TimeMin=N/A "
    "SubmitTime=2026-11-25T12:23:32 EligibleTime=2026-11-25T12:23:33 "
    "AccrueTime=2026-11-25T12:23:33 StartTime=2026-11-25T12:23:33 "
    "EndTime=2026-11-25T12:23:33 Deadline=N/A SuspendTime=None SecsPreSuspend=0 "
    "LastSchedEval=2026-11-25T12:23:33 Scheduler=Main Partition=debug "
    "AllocNode:Sid=localhost:2387 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm "
    "BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* "
    "TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* "
    "MinCPUsNode=1 MinMemoryNode=4G MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 "
    "OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) "
    "Command=/tmp/smoke/slurm-b.job.sh WorkDir=/tmp/smoke StdErr=/tmp/smoke/slurm-b.log "
    "StdIn=/dev/null StdOut=/tmp/smoke/slurm-b.log Power= KillOInInvalidDependent=Yes \n"
)

# scontrol show job -o 18 (submitted with --hold)
SCONTROL_HELD = (
    "JobId=18 JobName=held UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=0 Nice=0 "
    "Account=(null) QOS=(null) JobState=PENDING Reason=JobHeldUser Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 "
    "TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-25T12:23:39 EligibleTime=Unknown "
    "AccrueTime=Unknown StartTime=Unknown EndTime=Unknown Deadline=N/A SuspendTime=None "
    "SecsPreSuspend=0 LastSchedEval=2026-11-25T12:23:39 Scheduler=Main Partition=debug "
    "AllocNode:Sid=localhost:2387 ReqNodeList=(null) ExcNodeList=(null) NodeList= "
    "NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* "
    "TRES=cpu=1,mem=24105M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* "
    "CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) "
    "DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) "
    "Command=/tmp/cap/ok.sh WorkDir=/tmp/cap StdErr=/tmp/cap/slurm-18.out StdIn=/dev/null "
    "StdOut=/tmp/cap/slurm-18.out Power= \n"
)

# sbatch --parsable --cpus-per-task=1000 ok.sh (stderr; exit status 1)
SBATCH_REJECTED = (
    "sbatch: error: Batch job submission failed: More processors requested than permitted\n"
)

# qstat -f 13 16 18 through slurm-wlm-torque: tab-indented, Q/R/C only, no exit status.
QSTAT_WRAPPER = (
    "Job Id:\t13\n"
    "\tJob_Name = slurm-b\n"
    "\tJob_Owner = root@localhost\n"
    "\tjob_state = C\n"
    "\tqueue = debug\n"
    "\tqtime = Wed Nov 25 12:23:32 2026\n"
    "\tmtime = Wed Nov 25 12:23:33 2026\n"
    "\tctime = Wed Nov 25 12:23:33 2026\n"
    "\texec_host = vm/1\n"
    "\tPriority = 4294901747\n"
    "\teuser = root(0)\n"
    "\tegroup = root(0)\n"
    "\tResource_List.walltime = 01:00:00\n"
    "\tResource_List.nodect = 1\n"
    "\tResource_List.ncpus = 1\n"
    "\n"
    "Job Id:\t16\n"
    "\tJob_Name = tmo\n"
    "\tJob_Owner = root@localhost\n"
    "\tjob_state = R\n"
    "\tqueue = debug\n"
    "\tqtime = Wed Nov 25 12:23:38 2026\n"
    "\tmtime = Wed Nov 25 12:23:38 2026\n"
    "\tctime = Wed Nov 25 12:24:38 2026\n"
    "\texec_host = vm/1\n"
    "\tPriority = 4294901744\n"
    "\teuser = root(0)\n"
    "\tegroup = root(0)\n"
    "\tResource_List.walltime = 00:01:00\n"
    "\tResource_List.nodect = 1\n"
    "\tResource_List.ncpus = 1\n"
    "\n"
    "Job Id:\t18\n"
    "\tJob_Name = held\n"
    "\tJob_Owner = root@localhost\n"
    "\tjob_state = Q\n"
    "\tqueue = debug\n"
    "\tqtime = Wed Nov 25 12:23:39 2026\n"
    "\tPriority = 0\n"
    "\teuser = root(0)\n"
    "\tegroup = root(0)\n"
    "\tResource_List.walltime = 71582788:15:00\n"
    "\tResource_List.nodect = 1\n"
    "\tResource_List.ncpus = 1\n"
    "\n"
)

# --- written from the documented formats --------------------------------------------------

# Torque 6 `qstat -f`: four-space attributes, tab-indented continuation lines.
QSTAT_TORQUE = """\
Job Id: 2231.torque01.cluster
    Job_Name = heat-3f9a
    Job_Owner = alice@login01.cluster
    resources_used.cput = 00:00:00
    resources_used.mem = 0kb
    resources_used.walltime = 00:00:01
    job_state = C
    queue = batch
    server = torque01.cluster
    Error_Path = login01.cluster:/home/alice/run/heat-3f9a.log
    exec_host = node01/0-1
    Join_Path = oe
    Output_Path = login01.cluster:/home/alice/run/heat-3f9a.log
    Resource_List.mem = 4096mb
    Resource_List.nodect = 1
    Resource_List.nodes = 1:ppn=2
    Resource_List.walltime = 01:00:00
    Variable_List = PBS_O_QUEUE=batch,PBS_O_HOME=/home/alice,
\tPBS_O_LOGNAME=alice,PBS_O_WORKDIR=/home/alice/run
    comment = Job started on Mon Nov 25 at 10:01
    exit_status = 3
    submit_host = login01.cluster

Job Id: 2232.torque01.cluster
    Job_Name = heat-3f9b
    job_state = H
    queue = batch
    depend = afterok:2231.torque01.cluster

Job Id: 2233.torque01.cluster
    Job_Name = long-run
    job_state = C
    exit_status = -11
    comment = Job exceeded its walltime limit. Job was aborted

Job Id: 2234.torque01.cluster
    Job_Name = deleted
    job_state = C
    exit_status = 271

Job Id: 2235.torque01.cluster
    Job_Name = fine
    job_state = C
    exit_status = 0
"""


def _pbspro_job(state: str, **extra: object) -> dict[str, object]:
    job: dict[str, object] = {
        "Job_Name": "heat-3f9a",
        "Job_Owner": "alice@login01.cluster",
        "job_state": state,
        "queue": "workq",
        "server": "pbs01",
        "Error_Path": "login01.cluster:/home/alice/run/heat-3f9a.log",
        "Join_Path": "oe",
        "Output_Path": "login01.cluster:/home/alice/run/heat-3f9a.log",
        "Resource_List": {
            "mem": "4096mb",
            "ncpus": 2,
            "nodect": 1,
            "place": "free",
            "select": "1:ncpus=2:mem=4096mb",
            "walltime": "01:00:00",
        },
        "Variable_List": {"PBS_O_HOME": "/home/alice", "PBS_O_WORKDIR": "/home/alice/run"},
        "Submit_arguments": "-N heat-3f9a -o /home/alice/run/heat-3f9a.log -j oe -V "
        "-l select=1:ncpus=2:mem=4096mb -l walltime=01:00:00 heat-3f9a.job.sh",
        "project": "_pbs_project_default",
    }
    job.update(extra)
    return job


# PBS Pro 2022 `qstat -f -F json -x 4101 ... 4107`
QSTAT_PBSPRO_JSON = json.dumps(
    {
        "timestamp": 1732537800,
        "pbs_version": "2022.1.3",
        "pbs_server": "pbs01",
        "Jobs": {
            "4101.pbs01": _pbspro_job(
                "F",
                Exit_status=0,
                comment="Job run at Mon Nov 25 at 10:01 on (node01:ncpus=2:mem=4194304kb) "
                "and finished",
                resources_used={"cput": "00:01:02", "mem": "51200kb", "walltime": "00:01:05"},
            ),
            "4102.pbs01": _pbspro_job("F", Exit_status=3, comment="Job run at ... and failed"),
            "4103.pbs01": _pbspro_job("F", Exit_status=-29, comment="Job run at ... and finished"),
            "4104.pbs01": _pbspro_job("F", Exit_status=271, comment="Job run at ... and finished"),
            "4105.pbs01": _pbspro_job("R", comment="Job run at Mon Nov 25 at 10:05 on (node02)"),
            "4106.pbs01": _pbspro_job("Q", comment="Not Running: Insufficient amount of resource"),
            "4107.pbs01": _pbspro_job("H", depend="afterok:4106.pbs01"),
        },
    },
    indent=4,
)


# --- JobState / JobRequest ----------------------------------------------------------------


def test_finished_states() -> None:
    assert not JobState.PENDING.finished
    assert not JobState.RUNNING.finished
    for state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "VANISHED"):
        assert JobState(state).finished
    assert JobState.COMPLETED == "COMPLETED"  # a str enum: prints and compares as its name


def test_request_needs_a_command(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="argv must name a command"):
        JobRequest(name="x", argv=[], cwd=tmp_path, log_path=tmp_path / "x.log")


def test_backend_error_is_a_physpipe_error_and_pickles() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(BackendError("sbatch not found on PATH")))
    assert isinstance(err, PhyspipeError)
    assert isinstance(err, RuntimeError)
    assert str(err) == "sbatch not found on PATH"


def test_batch_backend_by_name() -> None:
    assert set(BATCH_BACKENDS) == {"slurm", "pbs"}
    assert isinstance(batch_backend("slurm"), SlurmBackend)
    pbs = batch_backend("pbs", timeout_s=5)
    assert isinstance(pbs, PbsBackend)
    assert pbs.timeout_s == 5
    with pytest.raises(BackendError, match=r"unknown batch backend 'lsf'.*pbs, slurm"):
        batch_backend("lsf")


# --- job script -----------------------------------------------------------------------------

NASTY_ARGS = ["plain", "with space", "it's", 'say "hi"', "$HOME", "`date`", "a\nb", "*", ""]


def _request(tmp_path: Path, **kwargs: object) -> JobRequest:
    base: dict[str, object] = {
        "name": "heat[n=64]",
        "argv": [sys.executable, "-c", "print('ok')"],
        "cwd": tmp_path,
        "log_path": tmp_path / "logs" / "heat-1a2b.log",
    }
    base.update(kwargs)
    return JobRequest(**base)  # type: ignore[arg-type]


def test_script_shape(tmp_path: Path) -> None:
    request = _request(
        tmp_path,
        env={"PHYSPIPE_DIR": "/store/with space", "B": "x,y"},
        cluster=ClusterOptions(setup=("module load gcc/12",)),
    )
    text = render_script(request)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -euo pipefail" in lines
    # Sorted, shell-quoted exports before anything else runs.
    assert lines.index("export B=x,y") < lines.index("export PHYSPIPE_DIR='/store/with space'")
    assert lines[lines.index("module load gcc/12") - 1] == "set +u"
    assert lines[lines.index("module load gcc/12") + 1] == "set -u"
    assert lines[-2] == f"cd {tmp_path}" or lines[-2] == f"cd '{tmp_path}'"
    assert lines[-1].startswith("exec ")
    assert text.endswith("\n")


def test_script_round_trips_argv_and_env(tmp_path: Path) -> None:
    """Run the rendered script with bash: the command must see exactly the argv and env."""
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    probe = "import json, os, sys; print(json.dumps([sys.argv[1:], os.getcwd(), os.environ['V']]))"
    request = _request(
        tmp_path,
        argv=[sys.executable, "-c", probe, *NASTY_ARGS],
        cwd=workdir,
        env={"V": 'it\'s $X, "quoted"\n'},
        cluster=ClusterOptions(setup=("echo setup $UNSET_VARIABLE_IS_FINE >&2",)),
    )
    script = write_script(request)
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    argv, cwd, value = json.loads(result.stdout)
    assert argv == NASTY_ARGS
    assert cwd == str(workdir)
    assert value == 'it\'s $X, "quoted"\n'
    assert result.stderr == "setup\n"


def test_script_exit_status_is_the_commands(tmp_path: Path) -> None:
    script = write_script(_request(tmp_path, argv=["bash", "-c", "exit 3"]))
    assert subprocess.run(["bash", str(script)], check=False).returncode == 3
    failing_setup = _request(tmp_path, cluster=ClusterOptions(setup=("false",)))
    assert subprocess.run(["bash", str(write_script(failing_setup))], check=False).returncode == 1


def test_write_script_is_atomic_and_private(tmp_path: Path) -> None:
    request = _request(tmp_path)
    path = write_script(request)
    assert path == script_path(request.log_path) == tmp_path / "logs" / "heat-1a2b.job.sh"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert path.read_text() == render_script(request)
    # Rewriting replaces the file and leaves no temporary behind.
    write_script(request)
    assert sorted(p.name for p in path.parent.iterdir()) == ["heat-1a2b.job.sh"]


def test_bad_env_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="'A-B' is not valid in a shell"):
        render_script(_request(tmp_path, env={"A-B": "1"}))


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    assert log_tail(log) == f"(no log at {log})"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, max_lines=3) == "line 97\nline 98\nline 99"
    # A byte window that cuts a line drops the partial line.
    assert log_tail(log, max_lines=50, max_bytes=20) == "line 98\nline 99"


def test_mem_mib_rounds_up() -> None:
    assert mem_mib(Resources(mem="4G")) == 4096
    assert mem_mib(Resources(mem="1.5G")) == 1536
    assert mem_mib(Resources(mem="100K")) == 1
    assert mem_mib(Resources(mem="512")) == 512  # a bare number is MB, as in Slurm


# --- run_command ------------------------------------------------------------------------------


def test_run_command_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no-such-cmd-xyz not found on PATH: load it"):
        run_command(["no-such-cmd-xyz"], timeout_s=5, hint="load it")
    with pytest.raises(BackendError, match=r"did not answer within 0\.2 s"):
        run_command(["sleep", "5"], timeout_s=0.2)
    with pytest.raises(BackendError, match="exit status 1: sbatch: error: Batch job"):
        run_command(["bash", "-c", f"printf %s '{SBATCH_REJECTED}' >&2; exit 1"], timeout_s=5)
    result = run_command(["bash", "-c", "exit 4"], timeout_s=5, check=False)
    assert result.returncode == 4


# --- Slurm ------------------------------------------------------------------------------------


def test_parse_squeue() -> None:
    jobs = parse_squeue(SQUEUE)
    assert jobs["12"] == JobInfo(
        job_id="12", state=JobState.COMPLETED, raw_state="COMPLETED", exit_code=0
    )
    assert jobs["2"].state is JobState.FAILED
    assert jobs["2"].exit_code == 3
    assert jobs["2"].reason == "NonZeroExitCode"
    assert jobs["3"].state is JobState.CANCELLED
    assert jobs["3"].exit_code == -15
    assert jobs["4"].reason == "DependencyNeverSatisfied"
    assert jobs["18"].state is JobState.PENDING
    assert jobs["18"].exit_code is None  # not finished: no exit code
    assert jobs["18"].reason == "JobHeldUser"
    assert jobs["16"].state is JobState.RUNNING
    assert jobs["20"].state is JobState.TIMEOUT
    assert "99999" not in jobs
    assert parse_squeue("") == {}


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("PENDING", JobState.PENDING),
        ("CONFIGURING", JobState.PENDING),
        ("REQUEUE_HOLD", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("SUSPENDED", JobState.RUNNING),
        ("COMPLETED", JobState.COMPLETED),
        ("FAILED", JobState.FAILED),
        ("NODE_FAIL", JobState.FAILED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("BOOT_FAIL", JobState.FAILED),
        ("DEADLINE", JobState.FAILED),
        ("CANCELLED", JobState.CANCELLED),
        ("CANCELLED by 1000", JobState.CANCELLED),
        ("PREEMPTED", JobState.CANCELLED),
        ("TIMEOUT", JobState.TIMEOUT),
        ("SOME_NEW_STATE", JobState.RUNNING),
    ],
)
def test_map_slurm_state(raw: str, state: JobState) -> None:
    assert map_slurm_state(raw) is state


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("0", 0),
        ("768", 3),
        ("15", -15),
        ("9", -9),
        ("3:0", 3),
        ("0:9", -9),
        ("", None),
        ("x", None),
    ],
)
def test_decode_exit_code(text: str, code: int | None) -> None:
    assert decode_exit_code(text) == code


def test_parse_scontrol_job() -> None:
    failed = parse_scontrol_job(SCONTROL_FAILED)
    assert failed == JobInfo(
        job_id="13",
        state=JobState.FAILED,
        raw_state="FAILED",
        exit_code=3,
        reason="NonZeroExitCode",
    )
    held = parse_scontrol_job(SCONTROL_HELD)
    assert held is not None
    assert held.state is JobState.PENDING
    assert held.exit_code is None
    assert parse_scontrol_job("") is None
    assert parse_scontrol_job("slurm_load_jobs error: Invalid job id specified") is None


def test_parse_sacct() -> None:
    text = "41|COMPLETED|0:0\n42|CANCELLED by 1000|0:15\n43|FAILED|2:0\n430|FAILED|1:0\n"
    jobs = parse_sacct(text, job_ids=["41", "42", "43"])
    assert jobs["41"].state is JobState.COMPLETED
    assert jobs["42"].state is JobState.CANCELLED
    assert jobs["42"].exit_code == -15
    assert jobs["43"].exit_code == 2
    assert "430" not in jobs


def test_parse_sbatch_output() -> None:
    assert parse_sbatch_output("123\n") == "123"
    assert parse_sbatch_output("4567;cluster2\n") == "4567"
    assert parse_sbatch_output("sbatch: warning: something\n89\n") == "89"
    with pytest.raises(BackendError, match="sbatch printed no job id"):
        parse_sbatch_output("Submitted batch job\n")


@pytest.mark.parametrize(
    ("walltime", "text"),
    [
        ("30", "00:30:00"),
        ("1:00:00", "01:00:00"),
        ("2-00:00:00", "2-00:00:00"),
        ("0:90", "00:01:30"),
    ],
)
def test_format_slurm_time(walltime: str, text: str) -> None:
    assert format_slurm_time(Resources(walltime=walltime).walltime_s) == text


def test_sbatch_argv(tmp_path: Path) -> None:
    request = _request(
        tmp_path,
        log_path=tmp_path / "100%" / "heat.log",
        resources=Resources(cpu=4, gpu=2, mem="8G", walltime="2:30:00"),
        cluster=ClusterOptions(
            account="phys", qos="long", queue="batch", extra_args=("--exclusive",)
        ),
        depends_on=("11", "12"),
        default_args=("--constraint=avx2",),
    )
    script = tmp_path / "heat.job.sh"
    argv = sbatch_argv(request, script=script)
    assert argv[:2] == ["sbatch", "--parsable"]
    assert "--job-name=heat_n=64_" in argv
    assert f"--output={tmp_path}/100%%/heat.log" in argv
    assert f"--chdir={tmp_path}" in argv
    for expected in (
        "--cpus-per-task=4",
        "--gres=gpu:2",
        "--mem=8192M",
        "--time=02:30:00",
        "--partition=batch",  # queue stands in for a partition on Slurm
        "--account=phys",
        "--qos=long",
        "--dependency=afterok:11:12",
        "--kill-on-invalid-dep=yes",
        "--export=ALL",
    ):
        assert expected in argv
    # Site defaults, then the stage's own extra args, then the script.
    assert argv[-3:] == ["--constraint=avx2", "--exclusive", str(script)]


def test_sbatch_argv_minimal(tmp_path: Path) -> None:
    argv = sbatch_argv(_request(tmp_path), script=tmp_path / "s.sh")
    assert not any(
        a.startswith(("--gres", "--partition", "--dependency", "--account")) for a in argv
    )
    assert "--mem=4096M" in argv
    assert "--time=01:00:00" in argv


# --- PBS --------------------------------------------------------------------------------------


def test_parse_qstat_wrapper_text() -> None:
    jobs = parse_qstat_text(QSTAT_WRAPPER)
    assert set(jobs) == {"13", "16", "18"}
    # Job 13 failed with exit 3, but the wrapper cannot say so.
    assert jobs["13"].state is JobState.COMPLETED
    assert jobs["13"].exit_code is None
    assert "no exit status" in jobs["13"].reason
    assert jobs["16"].state is JobState.RUNNING
    assert jobs["18"].state is JobState.PENDING
    assert jobs["18"].raw_state == "Q"


def test_parse_qstat_torque_text() -> None:
    jobs = parse_qstat_text(QSTAT_TORQUE)
    failed = jobs["2231.torque01.cluster"]
    assert failed.state is JobState.FAILED
    assert failed.exit_code == 3
    assert failed.reason == "Job started on Mon Nov 25 at 10:01"
    assert jobs["2232.torque01.cluster"].state is JobState.PENDING
    timeout = jobs["2233.torque01.cluster"]
    assert timeout.state is JobState.TIMEOUT
    assert timeout.exit_code is None  # PBS's own code, not the script's
    assert timeout.reason.startswith("Exit_status=-11: Job exceeded")
    deleted = jobs["2234.torque01.cluster"]
    assert deleted.state is JobState.CANCELLED
    assert deleted.exit_code == -15
    assert jobs["2235.torque01.cluster"].state is JobState.COMPLETED
    assert jobs["2235.torque01.cluster"].exit_code == 0


def test_parse_qstat_text_continuation_lines() -> None:
    text = "Job Id: 7.s\n    comment = first part\n\tsecond part\n    job_state = R\n"
    assert parse_qstat_text(text)["7.s"].reason == "first partsecond part"
    assert parse_qstat_text("") == {}


def test_parse_qstat_pbspro_json() -> None:
    jobs = parse_qstat_json(QSTAT_PBSPRO_JSON)
    assert jobs["4101.pbs01"].state is JobState.COMPLETED
    assert jobs["4101.pbs01"].exit_code == 0
    assert jobs["4101.pbs01"].raw_state == "F"
    assert jobs["4102.pbs01"].state is JobState.FAILED
    assert jobs["4102.pbs01"].exit_code == 3
    assert jobs["4103.pbs01"].state is JobState.TIMEOUT
    assert jobs["4104.pbs01"].state is JobState.CANCELLED
    assert jobs["4105.pbs01"].state is JobState.RUNNING
    assert jobs["4105.pbs01"].exit_code is None
    assert jobs["4106.pbs01"].state is JobState.PENDING
    assert jobs["4106.pbs01"].reason.startswith("Not Running")
    assert jobs["4107.pbs01"].state is JobState.PENDING


def test_parse_qstat_json_edge_cases() -> None:
    # What PBS Pro prints when none of the ids is known.
    assert parse_qstat_json('{"timestamp": 1, "pbs_version": "2022.1.3", "pbs_server": "s"}') == {}
    assert parse_qstat_json("") == {}
    # A raw control character inside a string, as some versions print.
    assert parse_qstat_json('{"Jobs": {"1.s": {"job_state": "R", "comment": "a\tb"}}}')
    # PBS Pro's own bug: Variable_List values with "\," are invalid JSON escapes.
    with pytest.raises(ValueError, match=r"Invalid .escape"):
        parse_qstat_json('{"Jobs": {"1.s": {"Variable_List": "X=a\\,b"}}}')
    with pytest.raises(ValueError, match="not an object"):
        parse_qstat_json("[1, 2]")


@pytest.mark.parametrize(
    ("letter", "exit_status", "comment", "state"),
    [
        ("Q", None, "", JobState.PENDING),
        ("H", None, "", JobState.PENDING),
        ("W", None, "", JobState.PENDING),
        ("T", None, "", JobState.PENDING),
        ("R", None, "", JobState.RUNNING),
        ("E", None, "", JobState.RUNNING),
        ("B", None, "", JobState.RUNNING),
        ("S", None, "", JobState.RUNNING),
        ("C", None, "", JobState.COMPLETED),
        ("C", 0, "", JobState.COMPLETED),
        ("F", 1, "", JobState.FAILED),
        ("F", -1, "", JobState.FAILED),
        ("F", 265, "", JobState.FAILED),
        ("F", 271, "", JobState.CANCELLED),
        ("F", None, "Job deleted by alice", JobState.CANCELLED),
        ("F", -29, "", JobState.TIMEOUT),
        ("C", -11, "", JobState.TIMEOUT),
        ("F", 271, "Job exceeded resource walltime", JobState.TIMEOUT),
        ("X", 0, "", JobState.COMPLETED),
    ],
)
def test_map_pbs_state(letter: str, exit_status: int | None, comment: str, state: JobState) -> None:
    assert map_pbs_state(letter, exit_status=exit_status, comment=comment) is state


def test_parse_qsub_output() -> None:
    assert parse_qsub_output("7\n") == "7"
    assert parse_qsub_output("4101.pbs01\n") == "4101.pbs01"
    assert parse_qsub_output("2231.torque01.cluster\n") == "2231.torque01.cluster"
    with pytest.raises(BackendError, match="qsub printed no job id"):
        parse_qsub_output("")


def test_format_pbs_walltime() -> None:
    assert format_pbs_walltime(Resources(walltime="2-00:00:00").walltime_s) == "48:00:00"
    assert format_pbs_walltime(Resources(walltime="0:90").walltime_s) == "00:01:30"


def test_qsub_argv_torque(tmp_path: Path) -> None:
    request = _request(
        tmp_path,
        resources=Resources(cpu=4, gpu=1, mem="2G", walltime="0:30:00"),
        cluster=ClusterOptions(
            partition="short", account="phys", qos="ignored", extra_args=("-m", "n")
        ),
        depends_on=("11.s", "12.s"),
        default_args=("-W", "group_list=physics"),
    )
    script = tmp_path / "s.sh"
    argv = qsub_argv(request, script=script, flavor="torque")
    assert argv[:3] == ["qsub", "-N", "heat_n_64_"]
    assert argv[argv.index("-o") + 1] == str(request.log_path)
    assert argv[argv.index("-j") + 1] == "oe"
    assert "-V" in argv
    assert argv[argv.index("-l") + 1] == "nodes=1:ppn=4:gpus=1,mem=2048mb,walltime=00:30:00"
    assert argv[argv.index("-q") + 1] == "short"  # partition stands in for a queue on PBS
    assert argv[argv.index("-A") + 1] == "phys"
    assert "depend=afterok:11.s:12.s" in argv
    assert "ignored" not in argv
    assert argv[-5:] == ["-W", "group_list=physics", "-m", "n", str(script)]


def test_qsub_argv_pbspro(tmp_path: Path) -> None:
    request = _request(tmp_path, resources=Resources(cpu=2, gpu=1, mem="4G"))
    argv = qsub_argv(request, script=tmp_path / "s.sh", flavor="pbspro")
    limits = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-l"]
    assert limits == ["select=1:ncpus=2:mem=4096mb:ngpus=1", "walltime=01:00:00"]
    # A name that does not start with a letter is made to.
    assert (
        qsub_argv(_request(tmp_path, name="3d-grid"), script=tmp_path / "s.sh", flavor="torque")[2]
        == "j3d-grid"
    )


# --- PBS dialect detection, with fake qstat/qsub/qdel on PATH ---------------------------------


def _fake_commands(directory: Path, scripts: dict[str, str]) -> None:
    directory.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
        path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory


def test_pbs_pro_status_uses_json(fake_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "qstat.json").write_text(QSTAT_PBSPRO_JSON)
    calls = tmp_path / "calls"
    _fake_commands(
        fake_bin,
        {
            "qstat": f"""\
                echo "$*" >> {calls}
                if [ "$1" = --version ]; then echo "pbs_version = 2022.1.3"; exit 0; fi
                cat {tmp_path / "qstat.json"}
                echo "qstat: Unknown Job Id 9999.pbs01" >&2
                exit 153
                """,
            "qsub": "echo 4108.pbs01\n",
        },
    )
    backend = PbsBackend()
    states = backend.status(job_ids=["4101.pbs01", "4102", "9999.pbs01"])
    assert states["4101.pbs01"].state is JobState.COMPLETED
    assert states["4102"].state is JobState.FAILED  # matched by its sequence number
    assert states["4102"].job_id == "4102"
    assert states["9999.pbs01"].state is JobState.VANISHED
    backend.status(job_ids=["4105.pbs01"])
    assert calls.read_text().splitlines() == [
        "-f -F json -x 4101.pbs01 4102 9999.pbs01",
        "-f -F json -x 4105.pbs01",
    ]
    assert backend.flavor == "pbspro"
    assert backend.submit(request=_request(tmp_path)) == "4108.pbs01"


def test_torque_status_falls_back_to_text_and_remembers(fake_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "qstat.txt").write_text(QSTAT_TORQUE)
    calls = tmp_path / "calls"
    _fake_commands(
        fake_bin,
        {
            "qstat": f"""\
                echo "$*" >> {calls}
                if [ "$2" = -F ]; then
                    echo "qstat: invalid option -- 'F'" >&2
                    echo "usage: qstat [-f [-1]] [-W site_specific] [-x] [ job_identifier... ]" >&2
                    exit 2
                fi
                cat {tmp_path / "qstat.txt"}
                """,
        },
    )
    backend = PbsBackend()
    first = backend.status(job_ids=["2231.torque01.cluster", "2235"])
    assert first["2231.torque01.cluster"].exit_code == 3
    assert first["2235"].state is JobState.COMPLETED
    backend.status(job_ids=["2233"])
    assert calls.read_text().splitlines() == [
        "-f -F json -x 2231.torque01.cluster 2235",
        "-f 2231.torque01.cluster 2235",
        "-f 2233",  # the JSON attempt is not repeated
    ]


def test_invalid_pbspro_json_is_read_as_text(fake_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "qstat.txt").write_text(QSTAT_TORQUE)
    _fake_commands(
        fake_bin,
        {
            "qstat": f"""\
                if [ "$2" = -F ]; then
                    echo '{{"Jobs": {{"2231.t": {{"Variable_List": "a\\,b"}}}}}}'
                    exit 0
                fi
                [ "$2" = -x ] || exit 9
                cat {tmp_path / "qstat.txt"}
                """,
        },
    )
    states = PbsBackend(flavor="pbspro").status(job_ids=["2231.torque01.cluster"])
    assert states["2231.torque01.cluster"].state is JobState.FAILED


def test_qstat_failure_is_reported(fake_bin: Path) -> None:
    _fake_commands(
        fake_bin, {"qstat": "echo 'cannot connect to server pbs01 (errno=111)' >&2; exit 2\n"}
    )
    with pytest.raises(BackendError, match="cannot connect to server pbs01"):
        PbsBackend(flavor="torque").status(job_ids=["1"])


def test_qdel_tolerates_finished_jobs(fake_bin: Path) -> None:
    _fake_commands(
        fake_bin,
        {
            "qdel": "echo 'qdel: Unknown Job Id 12.s' >&2\n"
            "echo 'qdel: Job has finished 13.s' >&2\n"
            "exit 153\n"
        },
    )
    PbsBackend().cancel(job_ids=["12.s", "13.s"])
    _fake_commands(fake_bin, {"qdel": "echo 'qdel: Unauthorized Request  12.s' >&2; exit 159\n"})
    with pytest.raises(BackendError, match="Unauthorized Request"):
        PbsBackend().cancel(job_ids=["12.s"])


def test_slurm_status_falls_back_to_scontrol(fake_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "scontrol.txt").write_text(SCONTROL_FAILED)
    _fake_commands(
        fake_bin,
        {
            "squeue": "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1\n",
            "scontrol": f"""\
                if [ "$4" = 13 ]; then cat {tmp_path / "scontrol.txt"}; exit 0; fi
                echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1
                """,
            "sacct": "echo 'Slurm accounting storage is disabled' >&2; exit 1\n",
        },
    )
    backend = SlurmBackend()
    states = backend.status(job_ids=["13", "14"])
    assert states["13"].state is JobState.FAILED
    assert states["13"].exit_code == 3
    assert states["14"].state is JobState.VANISHED
    assert backend.status(job_ids=[]) == {}


def test_check_names_the_missing_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendError, match="sbatch not found on PATH: load the Slurm module"):
        SlurmBackend().check()
    with pytest.raises(BackendError, match="qsub not found on PATH: load the PBS/Torque module"):
        PbsBackend().check()


# --- PBS job arrays: command lines, checked against a recording qsub -----------------------------


def test_qsub_array_command_lines(tmp_path: Path) -> None:
    array = _request(tmp_path, array_size=4, depends_on=("77[].pbs01",), dependency="aftercorr")
    pro = qsub_argv(array, script=tmp_path / "s.sh", flavor="pbspro")
    assert pro[pro.index("-J") + 1] == "0-3"
    assert pro[pro.index("-o") + 1] == str(tmp_path / "logs" / "task-^array_index^.log")
    # No per-task dependency on PBS: the whole upstream array.
    assert pro[pro.index("-W") + 1] == "depend=afterok:77[].pbs01"
    torque = qsub_argv(array, script=tmp_path / "s.sh", flavor="torque")
    assert torque[torque.index("-t") + 1] == "0-3"
    assert torque[torque.index("-W") + 1] == "depend=afterokarray:77[].pbs01"
    assert "-J" not in torque
    # A one-task array is a plain job (PBS Pro wants two subjobs at least).
    single = qsub_argv(_request(tmp_path, array_size=1), script=tmp_path / "s.sh", flavor="pbspro")
    assert "-J" not in single
    assert "-t" not in single


def test_a_subjob_dependency_waits_for_its_array() -> None:
    assert array_of("123[4].pbs01") == "123[].pbs01"
    assert array_of("123[].pbs01") == "123[].pbs01"
    assert array_of("123.pbs01") == "123.pbs01"
    ids = ("5.s", "123[4].s", "123[7].s", "9[0]")
    assert depend_clause(ids, flavor="pbspro") == "depend=afterok:5.s:123[].s:9[]"
    assert depend_clause(ids, flavor="torque") == "depend=afterok:5.s,afterokarray:123[].s:9[]"
    assert depend_clause(("2409",), flavor="torque") == "depend=afterok:2409"  # Slurm's wrapper


@pytest.mark.parametrize(
    ("version", "qmgr", "largest"),
    [
        ("pbs_version = 2022.1.3", "    max_array_size = 500", 500),
        ("pbs_version = 2022.1.3", None, 1000),
        ("Version: 6.1.3", "    max_job_array_size = 64", 64),
        ("Unknown option: version", "    max_array_size = 500", 0),  # Slurm's wrapper
    ],
)
def test_pbs_arrays_follow_the_server(
    fake_bin: Path, tmp_path: Path, version: str, qmgr: str | None, largest: int
) -> None:
    calls = tmp_path / "qsub.calls"
    scripts = {
        "qstat": f"echo '{version}'\n",
        "qsub": f'echo "$*" >> {calls}\necho "310[].pbs01"\n',
    }
    if qmgr is not None:
        scripts["qmgr"] = f"echo 'Server pbs01'\necho '{qmgr}'\n"
    _fake_commands(fake_bin, scripts)
    backend = PbsBackend()
    assert backend.max_array_size() == largest
    if not largest:
        return
    job_id = backend.submit(request=_request(tmp_path, array_size=3))
    assert job_id == "310[].pbs01"
    assert backend.task_id(job_id, 2) == "310[2].pbs01"
    assert backend.task_id("311.pbs01", 0) == "311.pbs01"
    (line,) = calls.read_text().splitlines()
    assert (" -J 0-2 " if backend.flavor == "pbspro" else " -t 0-2 ") in f" {line} "

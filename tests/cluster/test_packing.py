"""Packing: short instances of a job array run several per task, on the real Slurm cluster.

Each instance still computes exactly once, has its own result record and log, and a failure
is the failing instance's alone: the others of its task are committed, and its dependent says
which upstream failed.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest
from campaign_kit import Jobs, project, run

if TYPE_CHECKING:
    from physpipe_testing import CallLog

pytestmark = pytest.mark.cluster

PACKED = """
SHORT = Resources(cpu=1, mem="100M", walltime="1:00")


@stage(slow=True, resources=SHORT, params=sweep(Point, n=[1, 2, 3, 4, 5, 6]))
def point(config: Point):
    log(f"point {config.n}")
    if config.n == 5:
        raise ValueError("point 5 diverged")
    return config.n


@stage(slow=True, resources=SHORT)
def dependent(point):
    log(f"dependent {point}")
    return point * 10


def test_dependent(dependent):
    assert dependent % 10 == 0
"""


def _time_limit(job_id: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=False
    ).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("TimeLimit=")), "?")


def test_short_instances_are_packed_computed_once_and_failures_stay_their_own(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs
) -> None:
    project(pytester, PACKED)
    # 3:00 of budget, 1:00 each: three instances per task, two tasks per array.
    result = run(pytester, "slurm", "-o", "physpipe_pack_walltime=3:00", "-p", "no:xdist")
    result.assert_outcomes(passed=5, errors=1)
    output = str(result.stdout)
    result.stdout.fnmatch_lines(
        [
            "*submitted point[[]n=1] .. point[[]n=6] (6 instances) as slurm array job * "
            "(tasks 0-1, up to 3 instances per task)",
            "*submitted dependent[[]n=1] .. dependent[[]n=6] (6 instances) as slurm array job * "
            "(tasks 0-1, up to 3 instances per task) aftercorr *",
        ]
    )
    assert output.count("as slurm array job") == 2
    submitted = jobs.submitted()
    points = {n: submitted[f"point[n={n}]"] for n in range(1, 7)}
    array = points[1]["job_id"].split("_")[0]
    # Task 0 computes n=1..3, task 1 n=4..6; every key records its task and the pack size.
    assert {n: p["job_id"] for n, p in points.items()} == {
        n: f"{array}_{(n - 1) // 3}" for n in range(1, 7)
    }
    assert {p["pack"] for p in points.values()} == {3}
    # The task asked for the walltime of its three instances.
    assert _time_limit(f"{array}_0") == "00:03:00"
    # Exactly once each, in the jobs; the failed point's dependent never ran its stage.
    assert calls.take() == dict.fromkeys(
        [f"point {n}" for n in range(1, 7)] + [f"dependent {n}" for n in (1, 2, 3, 4, 6)], 1
    )
    # Every instance has its own outcome record, the failure only the failing one.
    outcomes = {label: jobs.result(label) for label in submitted}
    assert {label: o["status"] for label, o in outcomes.items() if o["status"] != "computed"} == {
        "point[n=5]": "failed",
        "dependent[n=5]": "failed",
    }
    assert "point 5 diverged" in outcomes["point[n=5]"]["error"]
    assert "upstream 'point'" in outcomes["dependent[n=5]"]["error"]
    assert all(o["job_id"] == submitted[label]["job_id"] for label, o in outcomes.items())
    # The error names the instance that failed, its task, and its own log.
    result.stdout.fnmatch_lines(
        [
            f"*stage point[[]n=5] (*): slurm job {array}_1 ended FAILED; nothing was committed.",
            "*ValueError: point 5 diverged",
        ]
    )
    log = pytester.path / "store" / "jobs" / points[5]["key"] / "job.log"
    assert "point 5 diverged" in log.read_text()
    assert "point 4 diverged" not in log.read_text()

    # A rerun submits only what failed (point 5 and its dependent), as plain jobs.
    rerun = run(pytester, "slurm", "-o", "physpipe_pack_walltime=3:00", "-p", "no:xdist")
    rerun.assert_outcomes(passed=5, errors=1)
    assert str(rerun.stdout).count("physpipe: submitted") == 2
    assert calls.take() == {"point 5": 1}

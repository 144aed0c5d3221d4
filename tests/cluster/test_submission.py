"""How a campaign submits, on the real Slurm cluster: arrays split at the site's
``MaxArraySize``, and ``physpipe_submit_rate`` spacing the submit calls.

Slurm is real throughout; a wrapper on ``PATH`` only records the calls (with their times) or,
for ``scontrol show config``, reports a small ``MaxArraySize`` (the campaign reads the limit
from there; the test cluster's own is 1001).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from campaign_kit import Jobs, project, run

if TYPE_CHECKING:
    from physpipe_testing import CallLog

pytestmark = pytest.mark.cluster

SWEEP = """
@stage(slow=True, resources=R, params=sweep(Point, n=list(range(12))))
def point(config: Point):
    log(f"point {config.n}")
    return config.n


@stage(slow=True, resources=R)
def dependent(point):
    log(f"dependent {point}")
    return point + 100


def test_dependent(dependent):
    assert dependent >= 100
"""

#: Records each call (time, arguments) and runs the real command.
RECORDING = """#!/bin/bash
echo "$(date +%s.%N) $*" >> {log}
exec {real} "$@"
"""

#: `scontrol show config` with a small MaxArraySize; anything else goes to the real scontrol.
SMALL_ARRAYS = """#!/bin/bash
if [[ "$1" == show && "$2" == config ]]; then
    {real} "$@" | sed 's/^MaxArraySize *=.*/MaxArraySize            = {size}/'
    exit "${{PIPESTATUS[0]}}"
fi
exec {real} "$@"
"""


def _wrap(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    body: str,
    **kw: object,
) -> Path:
    """Put a wrapper of ``command`` first on PATH; the file its calls are recorded in."""
    real = subprocess.run(["which", command], capture_output=True, text=True, check=True)
    folder = pytester.path / "wrap-bin"
    folder.mkdir(exist_ok=True)
    log = pytester.path / f"{command}.calls"
    wrapper = folder / command
    wrapper.write_text(body.format(real=real.stdout.strip(), log=log, **kw))
    wrapper.chmod(0o755)
    if not os.environ["PATH"].startswith(f"{folder}{os.pathsep}"):
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


def _calls(log: Path) -> list[tuple[float, str]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [(float(stamp), args) for stamp, _, args in (line.partition(" ") for line in lines)]


def test_an_array_larger_than_max_array_size_is_split_and_dependencies_follow(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wrap(pytester, monkeypatch, "scontrol", SMALL_ARRAYS, size=5)
    sbatch = _wrap(pytester, monkeypatch, "sbatch", RECORDING)
    project(pytester, SWEEP)
    result = run(pytester, "slurm", "-o", "physpipe_pack_walltime=0", "-p", "no:xdist")
    result.assert_outcomes(passed=12)
    submitted = jobs.submitted()
    # Twelve points: arrays of 5, 5 and 2 tasks; the dependents likewise, each chunk after
    # the points' array it lines up with, task by task.
    arrays = [args for _, args in _calls(sbatch)]
    assert [a.split("--array=", 1)[1].split()[0] for a in arrays] == ["0-4", "0-4", "0-1"] * 2
    tasks = {label: data["job_id"].split("_") for label, data in submitted.items()}
    assert all(int(index) < 5 for _, index in tasks.values())
    for n in range(12):
        point, dependent = tasks[f"point[n={n}]"], tasks[f"dependent[n={n}]"]
        assert point[1] == dependent[1]
        assert submitted[f"dependent[n={n}]"]["depends_on"] == [f"aftercorr:{point[0]}"]
    assert len({array for array, _ in tasks.values()}) == 6
    assert calls.take() == dict.fromkeys(
        [f"point {n}" for n in range(12)] + [f"dependent {n}" for n in range(12)], 1
    )


def test_the_submit_rate_spaces_the_submit_calls(
    pytester: pytest.Pytester, calls: CallLog, jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    sbatch = _wrap(pytester, monkeypatch, "sbatch", RECORDING)
    project(pytester, SWEEP.replace("range(12)", "range(4)"))
    result = run(
        pytester,
        "slurm",
        "-o",
        "physpipe_job_arrays=false",
        "-o",
        "physpipe_submit_rate=2",
        "-p",
        "no:xdist",
    )
    result.assert_outcomes(passed=4)
    stamps = [stamp for stamp, _ in _calls(sbatch)]
    assert len(stamps) == 8  # one job per instance
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    # At most two calls per second: 0.5 s apart (less a little for process start jitter).
    assert min(gaps) >= 0.45, gaps

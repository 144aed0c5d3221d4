"""Marks per instance on the real Slurm cluster (.ci/slurm-up): exactly the instances marked
``slow`` are dispatched, and a gather of them waits on their jobs."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from physpipe_testing import CallLog

pytestmark = pytest.mark.cluster

PROJECT = """
import pytest
from physlog import log
from pytest_physpipe import Resources, StageConfig, gather, stage, sweep

R = Resources(cpu=1, mem="100M", walltime="5:00")


class MeshConfig(StageConfig):
    level: int = 3


@stage(params=PARAMS, resources=R)
def mesh(config: MeshConfig) -> int:
    log(f"mesh {config.level}")
    return config.level


@stage
def error(mesh) -> float:
    log(f"error {mesh}")
    return 2.0 ** -mesh


@stage
def study(errors=gather("error")) -> list:
    log("study")
    return [e.coords["level"] for e in errors]


def test_error(error):
    assert error < 1


def test_study(study):
    assert study == [3, 4, 5, 6]
"""

PARAMS = {
    "param": """[
        MeshConfig(level=3),
        MeshConfig(level=4),
        pytest.param(MeshConfig(level=5), marks=pytest.mark.slow),
        pytest.param(MeshConfig(level=6), marks=pytest.mark.slow),
    ]""",
    "sweep": "sweep(MeshConfig, level=[3, 4, 5, 6], "
    "marks=lambda c: [pytest.mark.slow] if c.level >= 5 else [])",
}


def _submitted(store: Path) -> dict[str, dict[str, object]]:
    found = {}
    for path in sorted(store.glob("jobs/*/submitted.json")):
        data = json.loads(path.read_text())
        found[str(data["stage"])] = data
    return found


@pytest.fixture
def store(pytester: pytest.Pytester, calls: CallLog, slurm_cluster: None) -> Iterator[Path]:
    path = pytester.path / "store"
    yield path
    ids = [str(d["job_id"]) for d in _submitted(path).values()]
    if ids:  # leave nothing queued on the shared cluster
        subprocess.run(["scancel", *ids], check=False)


@pytest.mark.parametrize("how", ["param", "sweep"])
def test_only_the_slow_instances_are_dispatched_and_the_gather_waits_for_them(
    pytester: pytest.Pytester, calls: CallLog, store: Path, how: str
) -> None:
    body = PROJECT.replace("PARAMS", textwrap.dedent(PARAMS[how]))
    pytester.makepyfile(test_marks_cluster=body)
    common = ["-p", "no:cacheprovider", "-p", "no:benchmark", f"--physpipe-dir={store}"]
    result = pytester.runpytest_subprocess(
        *common, "--physpipe-backend=slurm", "--physpipe-report=report.json", timeout=180
    )
    result.assert_outcomes(passed=5)
    assert sorted(_submitted(store)) == ["mesh[level=5]", "mesh[level=6]"]
    computed = [f"{stage} {level}" for stage in ("mesh", "error") for level in (3, 4, 5, 6)]
    assert calls.take() == dict.fromkeys([*computed, "study"], 1)
    report = json.loads((pytester.path / "report.json").read_text())
    status = {(r["name"], r["param_id"]): r["status"] for r in report["stages"]}
    assert status["mesh", "level=5"] == status["mesh", "level=6"] == "loaded-from-job"
    assert status["mesh", "level=4"] == "computed"
    assert status["study", None] == "computed"

    # `-m "not slow"` dispatches nothing and computes nothing new.
    result = pytester.runpytest_subprocess(
        *common, "--physpipe-backend=slurm", "-m", "not slow", timeout=180
    )
    result.assert_outcomes(passed=2, deselected=3)
    assert "submitted" not in result.stdout.str()
    assert calls.take() == {}

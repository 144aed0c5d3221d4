"""Fixtures shared by the cluster tests: the real Slurm cluster of .ci/slurm-up."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from campaign_kit import Jobs, live, queued

if TYPE_CHECKING:
    from physpipe_testing import CallLog


def cluster_reason() -> str | None:
    """Why no Slurm cluster can be used here, or None when one answers (cf. .ci/slurm-up)."""
    if shutil.which("sinfo") is None:
        return "no Slurm here (sinfo not on PATH): run .ci/slurm-up to start a test cluster"
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5, check=False
        )
    except subprocess.TimeoutExpired:
        return "Slurm did not answer `sinfo` within 5 s: is .ci/slurm-up's cluster up?"
    states = result.stdout.split()
    if result.returncode != 0 or not any(
        s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states
    ):
        return (
            f"Slurm has no usable node (sinfo: {result.stdout.strip() or result.stderr.strip()}): "
            "run .ci/slurm-up"
        )
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip unless a Slurm controller answers (start one with .ci/slurm-up)."""
    reason = cluster_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def jobs(pytester: pytest.Pytester, calls: CallLog, slurm_cluster: None) -> Iterator[Jobs]:
    """The per-test store's jobs; any job still queued at the end is cancelled."""
    found = Jobs(pytester.path / "store")
    yield found
    leftover = live(found.ids()) | set(queued(found.store.parent))
    if leftover:
        subprocess.run(["scancel", *sorted(leftover)], check=False)


@pytest.fixture(params=["slurm", "pbs"])
def dialect(request: pytest.FixtureRequest, slurm_cluster: None) -> str:
    name: str = request.param
    if name == "pbs" and shutil.which("qsub") is None:
        pytest.skip("no qsub (Slurm's Torque wrapper, package slurm-wlm-torque): run .ci/slurm-up")
    return name

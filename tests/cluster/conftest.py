"""Fixtures shared by the cluster tests: the real Slurm cluster of .ci/slurm-up."""

from __future__ import annotations

import shutil
import subprocess

import pytest


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

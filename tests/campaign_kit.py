"""Helpers of the campaign tests: an inner project, inner pytest runs, the store's job files,
and what Slurm still has queued."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: Inner runs: no benchmark plugin (it warns under xdist), no cache (faster, nothing to clean).
BASE_ARGS = ("-p", "no:benchmark", "-p", "no:cacheprovider", "-p", "no:randomly")

HEADER = """
import json
import os
import time
from pathlib import Path

from physlog import log
from pytest_physpipe import Resources, StageConfig, stage, sweep

# One CPU, a little memory: the 8-CPU test node runs the whole fan-out at once.
R = Resources(cpu=1, mem="100M", walltime="5:00")


class Point(StageConfig):
    n: int = 1
"""


# -- fixtures and helpers -------------------------------------------------------------------------


class Jobs:
    """The campaign's job files in one store, read between runs."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def submitted(self) -> dict[str, dict[str, Any]]:
        """``submitted.json`` of every key, by stage label."""
        found = {}
        for path in sorted(self.store.glob("jobs/*/submitted.json")):
            data = json.loads(path.read_text())
            found[data["stage"]] = data
        return found

    def result(self, label: str) -> dict[str, Any]:
        key_dir = next(
            p.parent
            for p in self.store.glob("jobs/*/submitted.json")
            if json.loads(p.read_text())["stage"] == label
        )
        result: dict[str, Any] = json.loads((key_dir / "result.json").read_text())
        return result

    def ids(self) -> set[str]:
        return {data["job_id"] for data in self.submitted().values()}


def live(job_ids: set[str]) -> set[str]:
    """Which of these jobs Slurm still has pending or running (what `squeue` lists)."""
    if not job_ids:
        return set()
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i", "-t", "PD,R,CG,CF,S", "-j", ",".join(sorted(job_ids))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return set(out.split()) & job_ids


def wait_until_gone(job_ids: set[str], *, timeout_s: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while (queued := live(job_ids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return queued


def project(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(test_campaign_project=HEADER + textwrap.dedent(body))


def args(pytester: pytest.Pytester, backend: str, *extra: str) -> list[str]:
    return [
        *BASE_ARGS,
        f"--physpipe-backend={backend}",
        f"--physpipe-dir={pytester.path / 'store'}",
        *extra,
    ]


def run(pytester: pytest.Pytester, backend: str, *extra: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args(pytester, backend, *extra), timeout=180)


@contextmanager
def background(
    pytester: pytest.Pytester, backend: str, *extra: str, new_session: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """An inner pytest in the background (to signal it, or to run a second one beside it).

    ``new_session``: in a process group of its own, so that ``os.killpg(pid, SIGINT)`` is
    what Ctrl-C at a terminal does (the signal reaches pytest and the ``sbatch`` it runs).
    """
    inner = pytester.popen(
        [sys.executable, "-m", "pytest", *args(pytester, backend, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=new_session,
    )
    try:
        yield inner
    finally:
        if inner.poll() is None:
            inner.kill()
        inner.wait()
        assert inner.stdout is not None
        inner.stdout.close()


def wait_for(condition: Any, what: str, *, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def last_job_id() -> int:
    """The highest job id Slurm knows now (ids only grow): jobs after it are a test's own."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-t", "all"], capture_output=True, text=True, check=False
    ).stdout
    return max((int(i.split("_")[0]) for i in out.split()), default=0)


def queued(workdir: Path, *, states: str = "PD,R,CG,CF,S", after: int = 0) -> dict[str, str]:
    """Slurm's jobs (array tasks one by one) in ``states`` that run in ``workdir`` (an inner
    project's), by id: name.

    Finds the jobs whose id no file records (a submission cut short). ``-t all`` also lists
    finished ones, which Slurm keeps for MinJobAge (an hour on the test cluster); ``after`` (a
    :func:`last_job_id`) leaves out older ones.
    """
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i|%Z|%j", "-t", states],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        job_id, _, rest = line.partition("|")
        folder, _, name = rest.partition("|")
        if int(job_id.split("_")[0]) > after and Path(folder) == workdir:
            found[job_id] = name
    return found

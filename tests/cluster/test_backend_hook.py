"""A backend registered by a plugin (``pytest_physpipe_register_backends``) runs a campaign.

No cluster needed: the conftest's backend runs each job's command at once, in a subprocess, as
a scheduler would on a compute node. This exercises the campaign end to end (submission order,
dependencies, the worker entry point, waiting on the store, records) through the public hook.
"""

from __future__ import annotations

import json

import pytest
from physpipe_testing import CallLog

CONFTEST = """
import json
import os
import subprocess
from pathlib import Path

from pytest_physpipe.cluster.backends import JobInfo, JobState

SUBMITTED = Path(__file__).parent / "submitted.jsonl"


class InlineBackend:
    name = "inline"

    def __init__(self):
        self.states = {}

    def check(self):
        return None

    def submit(self, *, request):
        job_id = str(len(self.states) + 100)
        with SUBMITTED.open("a") as handle:
            handle.write(json.dumps({"id": job_id, "name": request.name,
                                     "after": list(request.depends_on)}) + "\\n")
        # Dependencies are already done: this "scheduler" runs each job to completion.
        assert all(self.states[d] is JobState.COMPLETED for d in request.depends_on)
        with open(request.log_path, "w") as log:
            done = subprocess.run(list(request.argv), cwd=request.cwd, stdout=log,
                                  stderr=subprocess.STDOUT, check=False)
        self.states[job_id] = JobState.COMPLETED if done.returncode == 0 else JobState.FAILED
        return job_id

    def status(self, *, job_ids):
        return {j: JobInfo(job_id=j, state=self.states.get(j, JobState.VANISHED)) for j in job_ids}

    def cancel(self, *, job_ids):
        return None


def pytest_physpipe_register_backends(backends):
    backends["inline"] = InlineBackend
"""

STAGES = """
from physlog import log
from pytest_physpipe import stage


@stage
def base():
    log("base")
    return 1.0


@stage(slow=True)
def middle(base):
    log("middle")
    return base + 1


@stage(slow=True)
def top(middle):
    log("top")
    return {"x": middle * 10}


@stage(slow=True)
def broken():
    raise ValueError("the solver diverged")


def test_top(top):
    assert top["x"] == 20.0


def test_broken(broken):
    pass
"""


def test_a_plugin_backend_runs_the_slow_stages_as_jobs(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_campaign=STAGES)
    result = pytester.runpytest_subprocess(
        "--physpipe-backend", "inline", "--physpipe-report", "report.json", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*submitted middle as inline job 10?*",
            "*submitted top as inline job 10? after 10?*",
            "*inline job 10? ended FAILED*",
            "*ValueError: the solver diverged*",
        ]
    )
    # Each stage ran once (the fast upstream locally, before the jobs), in dependency order.
    assert calls.take() == {"base": 1, "middle": 1, "top": 1}
    submitted = [
        json.loads(line) for line in (pytester.path / "submitted.jsonl").read_text().splitlines()
    ]
    # Job names are tagged: physpipe-<key[:12]>-<run tag>-<stage>.
    by_name = {s["name"].split("-", 3)[3]: s for s in submitted}
    assert by_name["top"]["after"] == [by_name["middle"]["id"]]
    records = {
        r["name"]: r for r in json.loads((pytester.path / "report.json").read_text())["stages"]
    }
    assert records["top"]["status"] == "loaded-from-job"
    assert (records["top"]["backend"], records["top"]["job_id"]) == (
        "inline",
        by_name["top"]["id"],
    )
    assert records["broken"]["status"] == "failed"

    # A rerun is served from the store: only the failed stage goes out again.
    (pytester.path / "submitted.jsonl").unlink()
    again = pytester.runpytest_subprocess("--physpipe-backend", "inline", "-p", "no:cacheprovider")
    again.assert_outcomes(passed=1, errors=1)
    assert calls.take() == {}
    names = [
        json.loads(line)["name"].split("-", 3)[3]
        for line in (pytester.path / "submitted.jsonl").read_text().splitlines()
    ]
    assert names == ["broken"]


def test_an_unknown_backend_is_a_usage_error(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(test_campaign=STAGES)
    result = pytester.runpytest_subprocess("--physpipe-backend", "lsf", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--physpipe-backend lsf (or ini physpipe_backend): no such backend; choose local, "
            "*pbs*slurm*"
        ]
    )
    assert calls.take() == {}


HOOKS_CONFTEST = (
    CONFTEST
    + """

class Pair:
    def __init__(self, a, b):
        self.a, self.b = a, b


class PairCodec:
    name = "pair"

    def accepts(self, value):
        return isinstance(value, Pair)

    def encode(self, value, dest):
        (dest / "pair.txt").write_text(f"{value.a} {value.b}")
        return {}

    def decode(self, src, meta, *, mmap_min):
        a, b = (src / "pair.txt").read_text().split()
        return Pair(float(a), float(b))


def pytest_physpipe_register_codecs(registry):
    registry.add(PairCodec())


@pytest.hookimpl(wrapper=True)
def pytest_physpipe_run_stage(record, ctx, call):
    ctx.metric("middleware", os.getpid())
    return (yield)
"""
).replace("import json\n", "import json\nimport pytest\n", 1)

HOOK_STAGES = """
import os
from conftest import Pair
from pytest_physpipe import stage


@stage(slow=True, codec="pair")
def pair():
    return Pair(1.5, 2.5)


def test_pair(pair, physpipe):
    assert (type(pair).__name__, pair.a, pair.b) == ("Pair", 1.5, 2.5)
    # The middleware ran in the job's process, not in this one.
    assert physpipe.record("pair").metrics["middleware"] != os.getpid()
"""


def test_a_batch_job_runs_the_plugin_codecs_and_middleware(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOKS_CONFTEST)
    pytester.makepyfile(test_pair=HOOK_STAGES)
    result = pytester.runpytest_subprocess("--physpipe-backend", "inline", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*submitted pair as inline job*", "*1 loaded from jobs*"])

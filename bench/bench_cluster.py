"""Cluster campaigns against a real scheduler: what batch dispatch buys, and what it costs.

Run: ``python bench/bench_cluster.py [--backend slurm|pbs] [--repeat 1] [--latency-repeat 5]
[--parts 1,2,3] [--ways packed,arrays,jobs] [--check]`` with a Slurm cluster up
(``.ci/slurm-up``). Prints one table; ``--check`` exits 1 when part 3's packed campaign needs
more than 4 submit calls (it asserts nothing about time).

1. Wall time of a pytest run whose 8 tests each need an independent slow stage that sleeps
   5 s: with ``--physpipe-backend slurm`` (8 jobs at once on the 8-CPU test node) against the
   same suite run serially (``--physpipe-backend local -p no:xdist``). Each run is a fresh
   ``python -m pytest`` process on a fresh store, so it includes start-up, submission and
   waiting.
2. Per-job overhead of the plugin over a bare ``sbatch --wrap`` of the same command (a Python
   that sleeps ``--job-seconds``): submit -> COMPLETED for the bare job (``scontrol`` polled
   every 0.1 s, as the plugin polls the store), submit -> value in the test for a one-stage
   campaign, both timed from the moment the submit command returned; medians over
   ``--latency-repeat`` jobs run one at a time. The plugin's time is split into queueing
   (submit -> job start), the job (imports, upstream loads, the stage, the commit) and
   detection (commit -> the test body runs).
3. A campaign of ``2 x --points`` instances: a sweep of ``--points`` points of a
   ``--point-seconds`` stage, and one dependent (as long) per point. Counts the ``sbatch``
   (or ``qsub``) calls through a wrapper on ``PATH`` and times the run, side by side, with
   packed job arrays (the default: the stages declare ``--walltime`` 1:00, so the default
   ``physpipe_pack_walltime`` of 5:00 packs five per task), with one instance per array task
   (``physpipe_pack_walltime = 0``) and with one job per instance (``physpipe_job_arrays =
   false``), against the ideal: total compute divided by the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchutil import timed_pytest

SUITE = """
import os
import time
from pathlib import Path

from pytest_physpipe import Resources, StageConfig, stage, sweep


class Job(StageConfig):
    i: int = 0


SECONDS = float(os.environ["BENCH_SECONDS"])


@stage(slow=True, resources=Resources(cpu=1, mem="100M", walltime="10:00"),
       params=sweep(Job, i=list(range(int(os.environ["BENCH_STAGES"])))))
def work(config: Job):
    time.sleep(SECONDS)
    return config.i


def test_work(work):
    # When the value reached the test (part 2 reads it).
    Path(f"done-{work}.txt").write_text(repr(time.time()))
    assert work >= 0
"""

CAMPAIGN = """
import os
import time

from pytest_physpipe import Resources, StageConfig, stage, sweep

R = Resources(cpu=1, mem="100M", walltime=os.environ["BENCH_WALLTIME"])
SECONDS = float(os.environ["BENCH_SECONDS"])


class Point(StageConfig):
    i: int = 0


@stage(slow=True, resources=R, params=sweep(Point, i=list(range(int(os.environ["BENCH_POINTS"])))))
def point(config: Point):
    time.sleep(SECONDS)
    return config.i


@stage(slow=True, resources=R)
def dependent(point):
    time.sleep(SECONDS)
    return point + 1


def test_dependent(dependent):
    assert dependent >= 1
"""

COUNTING = """#!/bin/bash
echo x >> {log}
exec {real} "$@"
"""


PYTEST = ("-q", "-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:randomly")


def _project(root: Path, *, stages: int, seconds: float) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_bench_cluster.py").write_text(textwrap.dedent(SUITE))
    env = dict(os.environ, BENCH_STAGES=str(stages), BENCH_SECONDS=repr(seconds))
    env.pop("PHYSPIPE_DIR", None)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _pytest(root: Path, env: dict[str, str], *args: str) -> float:
    """Run pytest in ``root`` on a fresh store; its wall time. Fails loudly if a test fails."""
    store = root / "store"
    shutil.rmtree(store, ignore_errors=True)
    for done in root.glob("done-*.txt"):
        done.unlink()
    elapsed, _ = timed_pytest([*PYTEST, f"--physpipe-dir={store}", *args], cwd=root, env=env)
    return elapsed


def campaign_vs_serial(
    work: Path, *, backend: str, stages: int, seconds: float, repeat: int
) -> tuple[list[float], list[float]]:
    root = work / "fanout"
    env = _project(root, stages=stages, seconds=seconds)
    cluster, serial = [], []
    for _ in range(repeat):  # interleaved, so a busy spell hits both
        cluster.append(_pytest(root, env, f"--physpipe-backend={backend}"))
        serial.append(_pytest(root, env, "--physpipe-backend=local", "-p", "no:xdist"))
    return cluster, serial


def plugin_latency(
    work: Path, *, backend: str, seconds: float, repeat: int
) -> list[dict[str, float]]:
    """Submit -> value in the test for one-stage campaigns, split into its parts."""
    root = work / "single"
    env = _project(root, stages=1, seconds=seconds)
    samples = []
    for _ in range(repeat):
        _pytest(root, env, f"--physpipe-backend={backend}")
        (job,) = (root / "store" / "jobs").iterdir()
        submitted = json.loads((job / "submitted.json").read_text())["submitted_at"]
        outcome = json.loads((job / "result.json").read_text())
        done = float((root / "done-0.txt").read_text())
        ended = outcome["started_at"] + outcome["duration_s"]
        samples.append(
            {
                "total": done - submitted,
                "queue": outcome["started_at"] - submitted,
                "job": outcome["duration_s"],
                "detect": done - ended,
            }
        )
    return samples


def _scontrol_state(job_id: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=False
    ).stdout
    for word in out.split():
        key, _, value = word.partition("=")
        if key == "JobState":
            return value
    return ""


def bare_latency(work: Path, *, seconds: float, repeat: int) -> list[float]:
    """Submit -> COMPLETED of ``sbatch --wrap`` running the same Python sleep."""
    command = shlex.join([sys.executable, "-c", f"import time; time.sleep({seconds!r})"])
    samples = []
    for _ in range(repeat):
        result = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--job-name=bench-bare",
                f"--output={work / 'bare-%j.log'}",
                "--cpus-per-task=1",
                "--mem=100M",
                "--time=10:00",
                f"--wrap={command}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        submitted = time.time()
        job_id = result.stdout.strip().split(";")[0]
        while (state := _scontrol_state(job_id)) in ("PENDING", "CONFIGURING", "RUNNING", ""):
            time.sleep(0.1)
        if state != "COMPLETED":
            sys.exit(f"bare job {job_id} ended {state}")
        samples.append(time.time() - submitted)
    return samples


#: Part 3's ways of submitting the campaign: ini overrides, by name.
WAYS = {
    "packed": ("physpipe_job_arrays=true",),
    "arrays": ("physpipe_job_arrays=true", "physpipe_pack_walltime=0"),
    "jobs": ("physpipe_job_arrays=false",),
}
WAY_NAMES = {
    "packed": "job arrays, packed (default)",
    "arrays": "job arrays, one instance per task",
    "jobs": "one job per instance",
}


def campaign_calls(
    work: Path, *, backend: str, points: int, seconds: float, walltime: str, way: str
) -> tuple[float, int]:
    """Wall time and submit calls of the sweep-plus-dependents campaign."""
    root = work / f"campaign-{way}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_bench_campaign.py").write_text(textwrap.dedent(CAMPAIGN))
    command = "sbatch" if backend == "slurm" else "qsub"
    real = shutil.which(command)
    assert real is not None
    folder = root / "bin"
    folder.mkdir(exist_ok=True)
    calls = root / "calls.log"
    calls.unlink(missing_ok=True)
    wrapper = folder / command
    wrapper.write_text(COUNTING.format(log=calls, real=real))
    wrapper.chmod(0o755)
    env = dict(
        os.environ,
        BENCH_POINTS=str(points),
        BENCH_SECONDS=repr(seconds),
        BENCH_WALLTIME=walltime,
    )
    env["PATH"] = f"{folder}{os.pathsep}{env['PATH']}"
    env.pop("PHYSPIPE_DIR", None)
    env.pop("PYTEST_ADDOPTS", None)
    store = root / "store"
    shutil.rmtree(store, ignore_errors=True)
    ini = [arg for option in WAYS[way] for arg in ("-o", option)]
    elapsed, _ = timed_pytest(
        [*PYTEST, f"--physpipe-dir={store}", f"--physpipe-backend={backend}", *ini],
        cwd=root,
        env=env,
    )
    return elapsed, len(calls.read_text().splitlines())


def _cluster_ready(backend: str) -> str | None:
    needed = ["sinfo", "sbatch", "scontrol"] + (["qsub"] if backend == "pbs" else [])
    missing = [c for c in needed if shutil.which(c) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH: start a cluster with .ci/slurm-up"
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    if not any(s.rstrip("*~#") in ("idle", "mixed") for s in done.stdout.split()):
        return f"no idle Slurm node (sinfo: {done.stdout.strip() or done.stderr.strip()})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["slurm", "pbs"], default="slurm")
    parser.add_argument("--stages", type=int, default=8, help="slow stages in part 1")
    parser.add_argument("--seconds", type=float, default=5.0, help="each stage's sleep, part 1")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side in part 1")
    parser.add_argument("--job-seconds", type=float, default=1.0, help="the job's sleep, part 2")
    parser.add_argument("--latency-repeat", type=int, default=5, help="jobs per side, part 2")
    parser.add_argument("--points", type=int, default=100, help="sweep points, part 3")
    parser.add_argument("--point-seconds", type=float, default=0.2, help="each stage, part 3")
    parser.add_argument(
        "--walltime", default="1:00", help="each stage's declared walltime, part 3 (packing)"
    )
    parser.add_argument(
        "--ways",
        default="packed,arrays,jobs",
        help="part 3's submission ways, side by side: packed, arrays, jobs",
    )
    parser.add_argument("--parts", default="1,2,3", help="which parts to run (1,2,3)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if part 3 packed needs over 4 calls"
    )
    args = parser.parse_args()
    args.failed = False
    parts = {p.strip() for p in args.parts.split(",")}
    reason = _cluster_ready(args.backend)
    if reason:
        sys.exit(f"bench_cluster: {reason}")
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="physpipe-bench-cluster-") as tmp:
        work = Path(tmp)
        if "1" in parts or "2" in parts:
            rows += parts_1_and_2(work, args, parts)
        if "3" in parts:
            rows += part_3(work, args)
    width = max(len(r[1]) for r in rows)
    print(
        f"bench_cluster: {args.backend}, medians of {args.repeat} (part 1) and "
        f"{args.latency_repeat} (part 2) runs; {os.cpu_count()} cores"
    )
    print(f"{'part':<5} {'what':<{width}}  {'value':>9}")
    for number, what, value in rows:
        print(f"{number:<5} {what:<{width}}  {value:>9}")
    if args.failed:
        sys.exit(1)


def part_3(work: Path, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    n, s = args.points, args.point_seconds
    cores = os.cpu_count() or 1
    ideal = 2 * n * s / cores
    rows = [
        (
            "3",
            f"{n} points x {s:g} s + {n} dependents (walltime {args.walltime}): "
            f"ideal (compute / {cores} cores)",
            f"{ideal:.2f} s",
        )
    ]
    command = "sbatch" if args.backend == "slurm" else "qsub"
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    results: dict[str, tuple[float, int]] = {}
    for way in ways:  # side by side, in one run
        results[way] = campaign_calls(
            work,
            backend=args.backend,
            points=n,
            seconds=s,
            walltime=args.walltime,
            way=way,
        )
    for way in ways:
        elapsed, calls = results[way]
        how = WAY_NAMES[way]
        rows.append(("3", f"{how}: {command} calls", str(calls)))
        rows.append(("3", f"{how}: wall time", f"{elapsed:.2f} s"))
        rows.append(("3", f"{how}: wall time / ideal", f"{elapsed / ideal:.1f}x"))
    if "packed" in results and "jobs" in results:
        ratio = results["packed"][0] / results["jobs"][0]
        rows.append(("3", "packed / one job per instance (wall time)", f"{ratio:.2f}x"))
    if args.check and "packed" in results:
        elapsed, calls = results["packed"]
        if calls > 4:
            print(f"bench_cluster: --check: {calls} {command} calls (goal: at most 4)")
            args.failed = True
    return rows


def parts_1_and_2(
    work: Path, args: argparse.Namespace, parts: set[str]
) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []

    def med(values: list[float]) -> float:
        return statistics.median(values)

    if "1" in parts:
        cluster, serial = campaign_vs_serial(
            work,
            backend=args.backend,
            stages=args.stages,
            seconds=args.seconds,
            repeat=args.repeat,
        )
        n, s = args.stages, args.seconds
        rows += [
            (
                "1",
                f"{n} x {s:g} s slow stages, --physpipe-backend {args.backend}",
                f"{med(cluster):.2f} s",
            ),
            ("1", "same suite, serial (local backend, -p no:xdist)", f"{med(serial):.2f} s"),
            ("1", "speed-up", f"{med(serial) / med(cluster):.1f}x"),
        ]
    if "2" not in parts:
        return rows
    bare = bare_latency(work, seconds=args.job_seconds, repeat=args.latency_repeat)
    plugin = plugin_latency(
        work, backend=args.backend, seconds=args.job_seconds, repeat=args.latency_repeat
    )
    part = {key: med([s[key] for s in plugin]) for key in ("total", "queue", "job", "detect")}
    rows += [
        (
            "2",
            f"bare sbatch --wrap, submit -> COMPLETED ({args.job_seconds:g} s job)",
            f"{med(bare):.2f} s",
        ),
        ("2", f"plugin ({args.backend}), submit -> value in the test", f"{part['total']:.2f} s"),
        ("", "  queue (submit -> job starts)", f"{part['queue']:.2f} s"),
        ("", "  job (imports, stage, commit)", f"{part['job']:.2f} s"),
        ("", "  detection (commit -> test body)", f"{part['detect']:.2f} s"),
        ("2", "plugin overhead per job (plugin - bare)", f"{part['total'] - med(bare):+.2f} s"),
    ]
    return rows


if __name__ == "__main__":
    main()

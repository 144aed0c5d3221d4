"""xdist as the local scheduler: duplicate work under -n 8, and makespan of --physpipe-dist.

Run: ``python bench/bench_xdist.py [--repeat 3] [--check]``. Prints two tables (medians over
the repeats, every run on a fresh store). ``--check`` exits 1 when a target is missed: the
only one is part 1's 1.00 computations per instance (exactly once); times are reported, not
checked.

1. Shared upstream work on ``-n 8``: how many times each stage instance was computed
   (target 1.00x), the wall time against the serial run (worker start-up included), and the
   test phase alone (first stage start to last test end).
2. Uneven stage costs on ``-n 2``: the makespan of the test phase (first stage or test start
   to last test end, from timestamps the stages and tests log) with ``--dist load`` and with
   ``--physpipe-dist`` (cold: no cost history; warm: costs from an earlier run), against the
   lower bound ``max(critical path, total work / workers)``.

Stages sleep instead of computing, so a shared, small machine measures scheduling, not CPU
contention; ``--physpipe-cpus`` is raised so that slots do not serialize the sleepers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

from benchutil import timed_pytest

LOGGER = """
import json, os, time
from pathlib import Path

LOG = Path(__file__).parent / "events.log"


def event(kind, name, **extra):
    with LOG.open("a") as handle:  # O_APPEND: one short write per line, never torn
        handle.write(json.dumps({"kind": kind, "name": name, "t": time.time(),
                                 "pid": os.getpid(), **extra}) + "\\n")
"""

CONFTEST = """
import pytest
from benchlog import event

@pytest.fixture(autouse=True)
def _timed(request):
    event("test-start", request.node.nodeid)
    yield
    event("test-end", request.node.nodeid)
"""

# 1. A DAG whose stages share upstream work: grid -> 4 x heat -> 2 x post each; 3 tests per leaf.
SHARED = """
import time
import pytest
from benchlog import event
from pytest_physpipe import StageConfig, stage, sweep

class H(StageConfig):
    i: int = 0

class P(StageConfig):
    j: int = 0

def work(name, seconds):
    event("stage", name)
    time.sleep(seconds)

@stage
def grid():
    work("grid", 0.3)
    return 1

@stage(params=sweep(H, i=[0, 1, 2, 3]))
def heat(grid, config: H):
    work(f"heat{config.i}", 0.2)
    return config.i

@stage(params=sweep(P, j=[0, 1]))
def post(heat, config: P):
    work(f"post{heat}-{config.j}", 0.1)
    return heat

@pytest.mark.parametrize("k", range(3))
def test_post(post, k):
    assert post >= 0
"""
SHARED_INSTANCES = 1 + 4 + 8

# 2. Uneven costs: many cheap independent stages collected first, one expensive stage shared by
# four tests, and a chain of two.
UNEVEN_COSTS = {"cheap": 0.2, "big": 1.6, "first": 0.8, "second": 0.8}
UNEVEN = """
import time
import pytest
from benchlog import event
from pytest_physpipe import StageConfig, stage, sweep

class C(StageConfig):
    i: int = 0

@stage(params=sweep(C, i=list(range(6))))
def cheap(config: C):
    event("stage-start", f"cheap{config.i}")
    time.sleep(0.2)
    return config.i

@stage
def big():
    event("stage-start", "big")
    time.sleep(1.6)
    return 1

@stage
def first():
    event("stage-start", "first")
    time.sleep(0.8)
    return 1

@stage
def second(first):
    event("stage-start", "second")
    time.sleep(0.8)
    return first

def test_cheap(cheap):
    assert cheap >= 0

@pytest.mark.parametrize("k", range(4))
def test_big(big, k):
    assert big == 1

@pytest.mark.parametrize("k", range(2))
def test_chain(second, k):
    assert second == 1
"""
UNEVEN_TOTAL = 6 * 0.2 + 1.6 + 0.8 + 0.8
UNEVEN_CRITICAL = 0.8 + 0.8


def _project(base: Path, body: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="physpipe-bench-", dir=base))
    (path / "benchlog.py").write_text(textwrap.dedent(LOGGER))
    (path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (path / "test_bench.py").write_text(textwrap.dedent(body))
    (path / "pytest.ini").write_text("[pytest]\n")
    return path


def _run(project: Path, *args: str) -> tuple[float, list[dict[str, object]]]:
    (project / "events.log").unlink(missing_ok=True)
    shutil.rmtree(project / ".physpipe" / "entries", ignore_errors=True)
    env = dict(os.environ)
    env["PYTEST_ADDOPTS"] = "-p no:benchmark -p no:hypothesispytest -p no:cacheprovider"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PHYSPIPE_DIR", None)
    wall, _ = timed_pytest(["-q", *args], cwd=project, env=env)
    events = [json.loads(line) for line in (project / "events.log").read_text().splitlines()]
    return wall, events


def _makespan(events: list[dict[str, object]]) -> float:
    # From the first stage or test start to the last test end. Stages are session fixtures, set
    # up before a test's own (autouse) fixtures, so stage events come before "test-start".
    times = [float(e["t"]) for e in events]  # type: ignore[arg-type]
    ends = [float(e["t"]) for e in events if e["kind"] == "test-end"]  # type: ignore[arg-type]
    return max(ends) - min(times)


#: Targets missed in this run (``--check`` exits 1 when any).
MISSED: list[str] = []


def bench_shared(base: Path, repeat: int) -> list[str]:
    project = _project(base, SHARED)
    rows: dict[str, list[tuple[float, float, float]]] = {"serial": [], "-n 8": []}
    for _ in range(repeat):
        for label, args in (("serial", ["-p", "no:xdist"]), ("-n 8", ["-n", "8"])):
            wall, events = _run(project, *args, "--physpipe-cpus", "8")
            computed = Counter(str(e["name"]) for e in events if e["kind"] == "stage")
            assert len(computed) == SHARED_INSTANCES, computed
            dup = sum(computed.values()) / SHARED_INSTANCES
            if dup != 1.0:
                MISSED.append(f"part 1, {label}: {dup:.2f} computations per instance (target 1)")
            rows[label].append((dup, wall, _makespan(events)))
    serial_wall = statistics.median(w for _, w, _ in rows["serial"])
    serial_span = statistics.median(s for _, _, s in rows["serial"])
    lines = [
        "1. shared upstream work (13 stage instances, 24 tests), medians",
        f"{'run':<8} {'computations/instance':>22} {'wall s':>8} {'vs serial':>10} "
        f"{'test phase s':>13} {'vs serial':>10}",
    ]
    for label, values in rows.items():
        dup = statistics.median(d for d, _, _ in values)
        wall = statistics.median(w for _, w, _ in values)
        span = statistics.median(s for _, _, s in values)
        lines.append(
            f"{label:<8} {dup:>21.2f}x {wall:>8.2f} {wall / serial_wall:>9.2f}x "
            f"{span:>13.2f} {span / serial_span:>9.2f}x"
        )
    return lines


def bench_uneven(base: Path, repeat: int) -> list[str]:
    bound = max(UNEVEN_CRITICAL, UNEVEN_TOTAL / 2)
    modes = {
        "--dist load": ["--dist", "load"],
        "--physpipe-dist (cold)": ["--physpipe-dist"],
        "--physpipe-dist (warm)": ["--physpipe-dist"],
    }
    spans: dict[str, list[float]] = {mode: [] for mode in modes}
    project = _project(base, UNEVEN)
    for _ in range(repeat):
        for mode, args in modes.items():
            if mode.endswith("(cold)"):
                (project / ".physpipe" / "runs" / "durations.json").unlink(missing_ok=True)
            elif mode.endswith("(warm)") and not spans[mode]:
                _run(project, "-n", "2", "--physpipe-cpus", "2", *args)  # records the costs
            _, events = _run(project, "-n", "2", "--physpipe-cpus", "2", *args)
            spans[mode].append(_makespan(events))
    lines = [
        f"2. uneven stage costs on -n 2: total work {UNEVEN_TOTAL:.1f} s, critical path "
        f"{UNEVEN_CRITICAL:.1f} s, lower bound {bound:.2f} s; medians",
        f"{'mode':<24} {'makespan s':>11} {'vs bound':>9}",
    ]
    for mode, values in spans.items():
        span = statistics.median(values)
        lines.append(f"{mode:<24} {span:>11.2f} {span / bound:>8.2f}x")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="physpipe-bench-") as tmp:
        base = Path(tmp)
        for line in [*bench_shared(base, args.repeat), "", *bench_uneven(base, args.repeat)]:
            print(line)
    if args.check and MISSED:
        print("--check: missed: " + "; ".join(MISSED), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

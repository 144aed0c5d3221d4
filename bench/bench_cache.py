"""What a cache hit costs: one table, every number measured side by side in this run.

    python bench/bench_cache.py            # all three parts (needs ~3.5 GiB free in $TMPDIR)
    python bench/bench_cache.py --quick    # fewer repeats, 256 MiB instead of 1 GiB in (c)
    python bench/bench_cache.py --check    # exit 1 when a target below is missed
    python bench/bench_cache.py --sizes 200,2000,10000 --skip bc   # the scale table

(a) Per suite size: a cold run (computes and fills the store), then interleaved fresh
    ``python -m pytest -q -p no:cacheprovider`` processes, medians: the cached rerun against
    bare pytest running the same tests with a plain parametrized session fixture and the plugin
    disabled (``-p no:physpipe``), and against bare pytest whose params are frozen pydantic
    models (what a physpipe suite's StageConfigs import anyway: the difference is physpipe's
    own cost; with two sizes or more it is split into a cost per run and one per instance, a
    line through the smallest and the largest); cached and both bare sides under ``-n 2``
    (xdist) from 2000 instances on. Bare with pydantic configs over bare is the floor of the
    cached / bare ratio, printed with what each ratio target leaves physpipe (target x bare
    minus bare with pydantic configs: a target that leaves nothing cannot be met here);
    ``--physpipe-plan`` against bare ``--collect-only`` (the plan's own cost is the
    difference). Both sides run in one bare virtual environment holding only the runtime
    dependencies (``--venv``; made on first use, then reused) with this checkout first on
    ``PYTHONPATH``: the same interpreter and the same plugins, physpipe aside.
(b) The cost of one hit, for a small dict and for a 64 MiB float64 array: our
    ``StageRunner.lookup`` (what a stage fixture does on a hit: load, verify, record) and
    ``Store.load`` against a cached ``joblib.Memory`` call returning the same value. joblib is
    a test dependency: where this interpreter lacks it, (b) runs under one that has it.
(c) Loading a cached 1 GiB array: ours, ``np.load`` (no mmap) and ``pickle.load``, each in its
    own process: time, and how much the resident set grew (VmHWM, the peak, minus VmRSS
    before the load).

Targets (see bench/README.md): (a) cached / bare <= 1.2 at 200 instances, <= 1.1 at 2000,
cached / bare under ``-n 2`` <= 1.15 at 2000, the plan's own cost <= 1 s at 10,000 instances,
physpipe's own cost (cached minus bare with pydantic configs) <= 0.1 ms per instance;
(b) StageRunner.lookup <= 0.05 ms for the small dict, <= 0.3 ms for 64 MiB; (c) ours does not
copy the array (RSS grows by less than a tenth of it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchutil import Row, check_exit, print_table, timed_pytest

from pytest_physpipe import StageConfig, stage

#: (a)'s suite sizes and the largest cached / bare ratio each may show.
RATIO_TARGETS = {200: 1.2, 2000: 1.1}
#: (a) physpipe's own cost per cached instance: cached minus bare with pydantic configs is
#: at most this many seconds times the suite size (imports, plan, hits, summary together).
OWN_COST_PER_INSTANCE_S = 0.1e-3
#: (a) under ``-n 2``: from this many instances on, and the largest ratio at each size.
XDIST_FROM, XDIST_TARGETS = 2000, {2000: 1.15}
#: (a) the plan's own cost (``--physpipe-plan`` minus bare ``--collect-only``), seconds.
PLAN_TARGETS = {10000: 1.0}
#: The repository this script belongs to: the code measured.
REPO = Path(__file__).resolve().parent.parent
#: (b)'s StageRunner.lookup targets, seconds.
SMALL_HIT_S, BIG_HIT_S = 0.05e-3, 0.3e-3


# The two stages of (b), declared as a user would.
class BigConfig(StageConfig):
    n: int = (64 << 20) // 8


@stage
def bench_small() -> dict[str, Any]:
    return {"energy": 0.123456789, "steps": 1000, "converged": True, "label": "heat"}


@stage
def bench_big(config: BigConfig) -> np.ndarray:
    return np.arange(config.n, dtype=np.float64)


PHYSPIPE_CONFTEST = """
from pytest_physpipe import StageConfig, stage


class PointConfig(StageConfig):
    i: int = 0


@stage(params=[PointConfig(i=i) for i in range({size})])
def point(config: PointConfig) -> dict:
    return {{"i": config.i, "square": config.i * config.i}}
"""

BARE_CONFTEST = """
import pytest


@pytest.fixture(scope="session", params=range({size}))
def point(request):
    i = request.param
    return {{"i": i, "square": i * i}}
"""

# Bare pytest again, with configs a user would write without physpipe: frozen pydantic models
# as the params. A physpipe suite imports pydantic for its StageConfigs; this side pays for that
# import (and the first model) too, so cached minus this is physpipe's own cost.
BARE_PYDANTIC_CONFTEST = """
import pytest
from pydantic import BaseModel, ConfigDict


class PointConfig(BaseModel):
    model_config = ConfigDict(frozen=True)
    i: int = 0


@pytest.fixture(scope="session", params=[PointConfig(i=i) for i in range({size})])
def point(request):
    i = request.param.i
    return {{"i": i, "square": i * i}}
"""

TEST_MODULE = """
def test_point(point):
    assert point["square"] == point["i"] ** 2
"""

# A process per method for (c): RSS is per process, and page cache from an earlier method must
# not be mistaken for this one's copy.
LOAD_SCRIPT = r"""
import os, pickle, sys, time
import numpy as np

def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)

method, path = sys.argv[1], sys.argv[2]
if method == "physpipe":
    from pytest_physpipe.store.entries import Store
    store = Store(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(path)))))
    key = os.path.basename(os.path.dirname(path))
before = status("VmRSS")
started = time.perf_counter()
if method == "physpipe":
    value = store.load(key).value
elif method == "np.load":
    value = np.load(path, allow_pickle=False)
else:
    with open(path, "rb") as handle:
        value = pickle.load(handle)
elapsed = time.perf_counter() - started
assert value.shape == (int(sys.argv[3]),), value.shape
print(elapsed, status("VmHWM") - before, type(value).__name__)
"""


def median_time(func: Callable[[], object], repeats: int) -> float:
    """Median wall time of one call, in seconds (after one warm-up call)."""
    func()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def write_suite(folder: Path, conftest: str) -> None:
    folder.mkdir(parents=True)
    # An ini file makes the folder the rootdir, so the repository's own config is not read.
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "conftest.py").write_text(textwrap.dedent(conftest))
    (folder / "test_suite.py").write_text(textwrap.dedent(TEST_MODULE))


def bench_env(tree: Path = REPO) -> dict[str, str]:
    """The environment of (a)'s pytest processes: this checkout (or ``--baseline``'s) first
    on the path, and bytecode cached as in any installation (``PYTHONDONTWRITEBYTECODE`` would
    make every run compile, and pytest rewrite, the plugin's modules anew: a cost no user pays
    twice)."""
    drop = ("PHYSPIPE_DIR", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    )
    return env


def default_venv() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "physpipe-bench" / "venv"


def ensure_venv(venv: Path) -> str:
    """The interpreter of ``venv``, made (runtime dependencies only) if it is not there."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv}: python -m venv, then pip install -e {REPO} (no extras)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(REPO)], check=True)
    return str(python)


def describe_venv(python: str) -> list[str]:
    """Which interpreter and plugins each side of (a) has, as lines for the header."""
    probe = (
        "import importlib.metadata as m, sys, pytest_physpipe, pytest; "
        "print(sys.version.split()[0]); print(pytest.__version__); "
        "print(pytest_physpipe.__file__); "
        "print(' '.join(sorted({e.name for e in m.entry_points(group='pytest11')})))"
    )
    out = subprocess.run(
        [python, "-c", probe], env=bench_env(), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    version, pytest_version, physpipe_file, plugins = [*out, "", "", "", ""][:4]
    others = " ".join(p for p in plugins.split() if p != "physpipe") or "none"
    return [
        f"(a) both sides: {python} (python {version}, pytest {pytest_version})",
        f"(a) physpipe measured from {Path(physpipe_file).parent}",
        f"(a) cached side plugins: physpipe {others}; bare side: {others} (-p no:physpipe)",
        "(a) bytecode cached on both sides"
        + (
            " (PYTHONDONTWRITEBYTECODE dropped)"
            if os.environ.get("PYTHONDONTWRITEBYTECODE")
            else ""
        ),
    ]


def describe_baseline(tree: Path) -> list[str]:
    """The ``--baseline`` header line. pytest marks a plugin's package for its assertion
    rewriting from the first metadata of the distribution on the path: an ``egg-info`` in a
    checkout (``pip install -e`` writes one) counts, so the two trees are alike only if both
    have one or neither has."""
    if not (tree / "pytest_physpipe" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {tree} is not a checkout of pytest-physpipe")
    ours, theirs = (any(t.glob("*.egg-info")) for t in (REPO, tree))
    line = f"(a) baseline: {tree}"
    if ours != theirs:
        line += (
            " (WARNING: only one of the two trees has an egg-info, so pytest loads only"
            " one through its assertion-rewriting loader; copy it for a like-for-like run)"
        )
    return [line]


def run_pytest(python: str, folder: Path, size: int, *extra: str, tree: Path = REPO) -> float:
    elapsed, result = timed_pytest(
        ["-q", "-p", "no:cacheprovider", *extra], cwd=folder, env=bench_env(tree), python=python
    )
    if f"{size} passed" not in result.stdout:
        raise SystemExit(f"pytest in {folder} did not run {size} tests:\n{result.stdout}")
    return elapsed


def run_listing(python: str, folder: Path, size: int, *extra: str) -> float:
    """A run that executes no test: ``--physpipe-plan`` or ``--collect-only``."""
    elapsed, result = timed_pytest(
        ["-q", "-p", "no:cacheprovider", *extra],
        cwd=folder,
        env=bench_env(),
        python=python,
        ok=(0, 5),  # 5: no tests ran, as a plan says
    )
    expected = f"{size} stage instance(s)" if "--physpipe-plan" in extra else f"{size} tests"
    if expected not in result.stdout:
        command = " ".join(extra)
        raise SystemExit(f"pytest {command} in {folder} did not list {size}:\n{result.stdout}")
    return elapsed


def ratio_row(label: str, ours: float, bare: float, target: float | None) -> Row:
    ratio = ours / bare
    return (
        label,
        f"{ratio:.2f}",
        f"<= {target}" if target else "",
        None if target is None else ratio <= target,
    )


def floor_rows(
    size: int, how: str, pydantic: float, bare: float, target: float | None
) -> list[Row]:
    """What bare pytest with pydantic configs alone is to bare pytest: the ratio a cached rerun
    cannot go under, since its StageConfigs are pydantic models. With a ratio target, also what
    that target leaves physpipe itself (target x bare - bare with pydantic configs): at or
    under zero, the target cannot be met on this machine whatever physpipe does."""
    rows: list[Row] = [
        (
            f"(a) {how}floor: bare with pydantic configs / bare at {size}",
            f"{pydantic / bare:.2f}",
            "the ratio's floor",
            None,
        )
    ]
    if target is not None:
        left = target * bare - pydantic
        rows.append(
            (
                f"(a) {how}what <= {target} leaves physpipe at {size}",
                f"{left:.3f} s",
                f"{left / size * 1e3:.3f} ms per instance" if left > 0 else "nothing: unreachable",
                None,
            )
        )
    return rows


def interleaved(repeats: int, *runs: Callable[[], float]) -> list[float]:
    """Medians of ``runs``, each run once per round so machine noise hits them alike."""
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, times in zip(runs, samples, strict=True):
            times.append(run())
    return [statistics.median(times) for times in samples]


def part_a(
    tmp: Path,
    python: str,
    repeats: int,
    size: int,
    scale: dict[int, dict[str, float]],
    baseline: Path | None = None,
) -> list[Row]:
    ours, bare = tmp / f"suite_physpipe_{size}", tmp / f"suite_bare_{size}"
    bare_pydantic = tmp / f"suite_bare_pydantic_{size}"
    write_suite(ours, PHYSPIPE_CONFTEST.format(size=size))
    write_suite(bare, BARE_CONFTEST.format(size=size))
    write_suite(bare_pydantic, BARE_PYDANTIC_CONFTEST.format(size=size))
    cold = run_pytest(python, ours, size)  # computes and fills the store; then all hits
    run_pytest(python, bare, size, "-p", "no:physpipe")  # every side's bytecode cached
    run_pytest(python, bare_pydantic, size, "-p", "no:physpipe")
    runs = [
        lambda: run_pytest(python, ours, size),
        lambda: run_pytest(python, bare, size, "-p", "no:physpipe"),
        lambda: run_pytest(python, bare_pydantic, size, "-p", "no:physpipe"),
    ]
    if baseline is not None:  # its entries stored too (its keys may differ), its bytecode cached
        run_pytest(python, ours, size, tree=baseline)
        runs.append(lambda: run_pytest(python, ours, size, tree=baseline))
    med_ours, med_bare, med_pydantic, *med_baseline = interleaved(repeats, *runs)
    own, own_target = med_ours - med_pydantic, size * OWN_COST_PER_INSTANCE_S
    plan, listed = interleaved(
        max(3, repeats // 2),
        lambda: run_listing(python, ours, size, "--physpipe-plan"),
        lambda: run_listing(python, bare, size, "--collect-only", "-p", "no:physpipe"),
    )
    scale[size] = {
        "cold": cold,
        "cached": med_ours,
        "bare": med_bare,
        "bare+pydantic": med_pydantic,
        "plan": plan,
    }
    plan_target = PLAN_TARGETS.get(size)
    rows: list[Row] = [
        (f"(a) cold run, {size} stage instances (one run)", f"{cold:.3f} s", "", None),
        (f"(a) bare pytest, {size} tests (-p no:physpipe)", f"{med_bare:.3f} s", "", None),
        (f"(a) cached rerun, {size} stage instances", f"{med_ours:.3f} s", "", None),
        ratio_row(
            f"(a) ratio cached / bare at {size}", med_ours, med_bare, RATIO_TARGETS.get(size)
        ),
        (
            f"(a) bare pytest with pydantic configs, {size} tests",
            f"{med_pydantic:.3f} s",
            "",
            None,
        ),
        *floor_rows(size, "", med_pydantic, med_bare, RATIO_TARGETS.get(size)),
        (
            f"(a) physpipe's own cost at {size} (cached - that)",
            f"{own:.3f} s",
            f"<= {own_target:.3f} s ({OWN_COST_PER_INSTANCE_S * 1e3} ms each)",
            own <= own_target,
        ),
        *(
            (
                f"(a) cached rerun, {size} instances, baseline {baseline}",
                f"{then:.3f} s",
                f"own cost {then - med_pydantic:.3f} s",
                None,
            )
            for then in med_baseline
        ),
        (f"(a) --physpipe-plan, {size} instances", f"{plan:.3f} s", "", None),
        (f"(a) bare --collect-only, {size} tests", f"{listed:.3f} s", "", None),
        (
            f"(a) the plan's own cost at {size} (plan - collect-only)",
            f"{plan - listed:.3f} s",
            f"<= {plan_target} s" if plan_target else "",
            None if plan_target is None else plan - listed <= plan_target,
        ),
    ]
    if size >= XDIST_FROM:
        x_runs = [
            lambda: run_pytest(python, ours, size, "-n", "2"),
            lambda: run_pytest(python, bare, size, "-n", "2", "-p", "no:physpipe"),
            lambda: run_pytest(python, bare_pydantic, size, "-n", "2", "-p", "no:physpipe"),
        ]
        if baseline is not None:
            x_runs.append(lambda: run_pytest(python, ours, size, "-n", "2", tree=baseline))
        x_ours, x_bare, x_pydantic, *x_baseline = interleaved(repeats, *x_runs)
        rows += [
            (f"(a) -n 2 bare pytest, {size} tests", f"{x_bare:.3f} s", "", None),
            (f"(a) -n 2 cached rerun, {size} instances", f"{x_ours:.3f} s", "", None),
            ratio_row(
                f"(a) -n 2 ratio cached / bare at {size}", x_ours, x_bare, XDIST_TARGETS.get(size)
            ),
            (
                f"(a) -n 2 bare pytest with pydantic configs, {size} tests",
                f"{x_pydantic:.3f} s",
                "",
                None,
            ),
            *floor_rows(size, "-n 2 ", x_pydantic, x_bare, XDIST_TARGETS.get(size)),
            *(
                (f"(a) -n 2 cached rerun, baseline {baseline}", f"{then:.3f} s", "", None)
                for then in x_baseline
            ),
        ]
    return rows


def own_cost_split(scale: dict[int, dict[str, float]]) -> list[Row]:
    """Physpipe's own cost (cached minus bare with pydantic configs) at the smallest and the
    largest size, split into what every run pays once (imports, the session, the summary)
    and what each instance adds (plan, hit, record): a straight line through the two."""
    if len(scale) < 2:
        return []
    small, large = min(scale), max(scale)
    own = {n: scale[n]["cached"] - scale[n]["bare+pydantic"] for n in (small, large)}
    per_instance = (own[large] - own[small]) / (large - small)
    fixed = own[small] - per_instance * small
    return [
        (
            f"(a) own cost per instance ({small} to {large})",
            f"{per_instance * 1e3:.3f} ms",
            "",
            None,
        ),
        (f"(a) own cost per run (at 0 instances, from {small})", f"{fixed:.3f} s", "", None),
    ]


def part_b(tmp: Path, repeats: int) -> list[Row]:
    import joblib

    from pytest_physpipe.execute import StageRunner
    from pytest_physpipe.plan import Planner
    from pytest_physpipe.stage import registry
    from pytest_physpipe.store.entries import Store

    store = Store(tmp / "store_b")
    runner = StageRunner(store=store, run_id="bench")
    planner = Planner(registry=registry)

    def instance(name: str) -> Any:
        spec = registry.get(name)
        assert spec is not None
        return planner.instance(spec, spec.default_config, {})

    small, big = instance("bench_small"), instance("bench_big")
    runner.provide(small, {})
    runner.provide(big, {})
    assert runner.lookup(small) is not None
    assert runner.lookup(big) is not None

    memory = joblib.Memory(tmp / "joblib", verbose=0)
    memory_mmap = joblib.Memory(tmp / "joblib_mmap", mmap_mode="r", verbose=0)

    def small_value(label: str) -> dict[str, Any]:
        return {"energy": 0.123456789, "steps": 1000, "converged": True, "label": label}

    def big_value(n: int) -> np.ndarray:
        return np.arange(n, dtype=np.float64)

    jl_small = memory.cache(small_value)
    jl_big = memory.cache(big_value)
    jl_big_mmap = memory_mmap.cache(big_value)
    n_big = BigConfig().n

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"

    rows: list[Row] = []
    cases: list[tuple[str, Callable[[], object], float | None, int]] = [
        (
            "(b) small dict: physpipe StageRunner.lookup",
            lambda: runner.lookup(small),
            SMALL_HIT_S,
            1,
        ),
        ("(b) small dict: physpipe Store.load", lambda: store.load(small.key), None, 1),
        ("(b) small dict: joblib.Memory cached call", lambda: jl_small("heat"), None, 1),
        ("(b) 64 MiB array: physpipe StageRunner.lookup", lambda: runner.lookup(big), BIG_HIT_S, 4),
        ("(b) 64 MiB array: physpipe Store.load", lambda: store.load(big.key), None, 4),
        ("(b) 64 MiB array: joblib.Memory cached call", lambda: jl_big(n_big), None, 40),
        ("(b) 64 MiB array: joblib.Memory(mmap_mode='r')", lambda: jl_big_mmap(n_big), None, 4),
    ]
    for label, func, target, divisor in cases:
        seconds = median_time(func, max(5, repeats * 20 // divisor))
        note = f"<= {us(target)}" if target else ""
        rows.append((label, us(seconds), note, None if target is None else seconds <= target))
    return rows


def part_c(tmp: Path, size_bytes: int) -> list[Row]:
    import pickle

    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.store.entries import Store

    n = size_bytes // 8
    array = np.arange(n, dtype=np.float64)
    store = Store(tmp / "store_c")
    store.ensure()
    key = "c" * 32
    entry = store.commit(
        key,
        value=array,
        codec="npy",
        record=StageRecord(key=key, name="bench_gib"),
        run_id="bench",
    )
    np.save(tmp / "plain.npy", array, allow_pickle=False)
    with (tmp / "plain.pkl").open("wb") as handle:
        pickle.dump(array, handle, protocol=pickle.HIGHEST_PROTOCOL)
    del array
    paths = {
        "physpipe": entry / "value.npy",
        "np.load": tmp / "plain.npy",
        "pickle.load": tmp / "plain.pkl",
    }
    label = f"{size_bytes >> 30} GiB" if size_bytes >= 1 << 30 else f"{size_bytes >> 20} MiB"
    rows: list[Row] = []
    for method, path in paths.items():
        # Best of three runs (the file is in the page cache after the first).
        results = []
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, "-c", LOAD_SCRIPT, method, str(path), str(n)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            results.append((float(out[0]), int(out[1]), out[2]))
        elapsed, grown, kind = min(results)
        ours = method == "physpipe"
        rows.append(
            (
                f"(c) load {label}: {method} ({kind})",
                f"{elapsed * 1e3:.1f} ms",
                f"RSS +{grown / (1 << 20):.0f} MiB" + (" (target: no copy)" if ours else ""),
                grown < size_bytes / 10 if ours else None,
            )
        )
    return rows


def part_b_elsewhere(python: str, repeats: int) -> list[Row]:
    """(b) under another interpreter (one with joblib), its rows back as JSON."""
    out = subprocess.run(
        [python, __file__, "--skip", "ac", "--repeats", str(repeats), "--rows-json"],
        env=bench_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(row) for row in json.loads(out.splitlines()[-1])]


def joblib_python() -> str | None:
    """This interpreter if it has joblib, else the first ``python3``/``python`` that does."""
    candidates = [sys.executable, shutil.which("python3"), shutil.which("python")]
    for python in dict.fromkeys(c for c in candidates if c):
        probe = subprocess.run(
            [python, "-c", "import joblib, numpy, pytest_physpipe"],
            env=bench_env(),
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return python
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller (c)")
    parser.add_argument("--repeats", type=int, default=None, help="pytest runs per suite in (a)")
    parser.add_argument("--skip", default="", help="parts to skip, e.g. --skip c")
    parser.add_argument("--sizes", default="200,2000", help="(a)'s suite sizes, e.g. 200,2000")
    parser.add_argument(
        "--venv",
        type=Path,
        default=None,
        help=f"(a)'s bare virtual environment, made if missing (default {default_venv()})",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="(a): also time the cached reruns with this other checkout of physpipe first on "
        "the path (a git worktree or git archive of another revision), interleaved with the rest",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--rows-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    rows: list[Row] = []
    header: list[str] = []
    scale: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="physpipe-bench-") as name:
        tmp = Path(name)
        if "a" not in args.skip:
            python = ensure_venv(args.venv or default_venv())
            header += describe_venv(python)
            if args.baseline is not None:
                header += describe_baseline(args.baseline.resolve())
            for size in (int(s) for s in args.sizes.split(",")):
                rows += part_a(tmp, python, repeats, size, scale, args.baseline)
            rows += own_cost_split(scale)
        if "b" not in args.skip:
            try:
                import joblib  # noqa: F401
            except ImportError:
                other = joblib_python()
                if other is None:
                    raise SystemExit("(b) needs joblib: pip install joblib (or .[test])") from None
                header.append(f"(b) run by {other} (joblib is not installed here)")
                rows += part_b_elsewhere(other, repeats)
            else:
                header.append(f"(b) run by {sys.executable}")
                rows += part_b(tmp, repeats)
        if "c" not in args.skip:
            rows += part_c(tmp, (256 << 20) if args.quick else (1 << 30))
    if args.rows_json:
        print(json.dumps(rows))
        return 0
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus")
    print_table(rows, header)
    if scale:
        print()
        columns = ("cold", "cached", "bare", "bare+pydantic", "plan")
        print(f"| instances | {' | '.join(columns)} |")
        print("|---" * (len(columns) + 1) + "|")
        for size, times in scale.items():
            figures = " | ".join(f"{times[k]:.2f} s" for k in columns)
            print(f"| {size:,} | {figures} |")
    return check_exit(rows, args.check)


if __name__ == "__main__":
    raise SystemExit(main())

"""Plan time with automatic code tracking, against the same plan without following helpers.

Generates a project of MODULES x FUNCS helper functions (each calling two others, one of them
in another module, and reading a module constant) and STAGES stages swept over PARAMS configs
each (2000 instances by default), every stage reaching a share of the helpers. Then, each in a
fresh process, medians of --repeats:

- (a) planning in-process: import the stages, fingerprint them, compute the 2000 keys
  (``Planner.instance``), with tracking (the default) and with ``follow=False`` (the stage
  function alone, as before tracking existed);
- (b) a whole ``pytest --physpipe-plan`` process over 2000 tests, both ways.

    python bench/bench_codefp.py            # ~1 minute
    python bench/bench_codefp.py --check    # small and quick: does it run, is tracking on?
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from benchutil import timed_pytest

REPO = Path(__file__).resolve().parent.parent

PLAN_SCRIPT = """
import sys, time
sys.path.insert(0, {project!r})
follow = {follow!r}
started = time.perf_counter()
import functools
import pytest_physpipe.stage
from pytest_physpipe import codefp
stage_module = sys.modules["pytest_physpipe.stage"]  # the package exports a function `stage`
if not follow:
    stage_module.code_of = functools.partial(codefp.code_of, follow=False)
import stages
from pytest_physpipe.plan import Planner
from pytest_physpipe.stage import registry
imported = time.perf_counter()
planner = Planner(registry=registry)
count = 0
parts = 0
for spec in registry.all():
    for config in spec.params:
        planner.instance(spec, config, {{}})
        count += 1
    parts += len(spec.code_info.parts)
done = time.perf_counter()
print(count, parts, imported - started, done - imported)
"""


def make_project(root: Path, *, modules: int, funcs: int, stages: int, params: int) -> None:
    helpers = root / "helpers"
    helpers.mkdir(parents=True)
    (helpers / "__init__.py").write_text("")
    for m in range(modules):
        lines = [f"from helpers import m{(m + 1) % modules} as other", "", f"K{m} = {m}.5", ""]
        for f in range(funcs):
            callee = f"f{f + 1}(x)" if f + 1 < funcs else "x"
            lines += [
                f"def f{f}(x):",
                f'    """Helper {f} of module {m}."""',
                f"    return {callee} + other.f{(f + 3) % funcs}(0) * K{m} if x > {f} else x",
                "",
            ]
        (helpers / f"m{m}.py").write_text("\n".join(lines) + "\n")
    body = [
        "from pytest_physpipe import StageConfig, stage, sweep",
        "import helpers.m0",
        *(f"from helpers.m{m} import f0 as entry{m}" for m in range(modules)),
        "",
        "class Config(StageConfig):",
        "    i: int = 0",
        "",
    ]
    for s in range(stages):
        body += [
            f"@stage(params=sweep(Config, i=list(range({params}))))",
            f"def stage{s}(config: Config):",
            f"    return entry{s % modules}(config.i) + helpers.m0.f{s % funcs}(1)",
            "",
        ]
    (root / "stages.py").write_text("\n".join(body) + "\n")
    tests = ["pytest_plugins = ['stages']", ""]
    for s in range(stages):
        tests += [f"def test_{s}(stage{s}):", "    pass", ""]
    (root / "test_plan.py").write_text("\n".join(tests))
    (root / "conftest.py").write_text(
        textwrap.dedent(
            """
            import functools, os, sys
            if os.environ.get("BENCH_NO_FOLLOW"):
                from pytest_physpipe import codefp
                stage_module = sys.modules["pytest_physpipe.stage"]
                stage_module.code_of = functools.partial(codefp.code_of, follow=False)
            """
        )
    )


def plan_in_process(project: Path, follow: bool) -> tuple[int, int, float, float]:
    script = PLAN_SCRIPT.format(project=str(project), follow=follow)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(project)])}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1]), float(out[2]), float(out[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="small and quick")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.check:
        sizes = {"modules": 4, "funcs": 5, "stages": 4, "params": 5}
        repeats = 1
    else:
        sizes = {"modules": 20, "funcs": 16, "stages": 20, "params": 100}
        repeats = args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        make_project(project, **sizes)
        helpers = sizes["modules"] * sizes["funcs"]
        rows = []
        for follow in (True, False):
            runs = [plan_in_process(project, follow) for _ in range(repeats)]
            count, parts = runs[0][0], runs[0][1]
            plan = statistics.median(r[3] for r in runs)
            rows.append((follow, count, parts, plan))
        env = {**os.environ, "PYTHONPATH": str(REPO), "PHYSPIPE_DIR": str(project / ".store")}
        whole = {}
        for follow in (True, False):
            run_env = dict(env) if follow else {**env, "BENCH_NO_FOLLOW": "1"}
            times = [
                timed_pytest(["-q", "-p", "no:cacheprovider", "--physpipe-plan"], cwd=project,
                             env=run_env)[0]
                for _ in range(repeats)
            ]  # fmt: skip
            whole[follow] = statistics.median(times)
    print(f"project: {helpers} helper functions in {sizes['modules']} modules; "
          f"{rows[0][1]} stage instances; medians of {repeats}")  # fmt: skip
    print(f"{'':34}{'tracking':>12}{'stage only':>12}{'ratio':>8}")
    on, off = rows[0], rows[1]
    print(f"{'pieces of code covered (all stages)':34}{on[2]:>12}{off[2]:>12}")
    print(
        f"{'(a) plan in-process (keys, s)':34}{on[3]:>12.3f}{off[3]:>12.3f}{on[3] / off[3]:>8.2f}"
    )
    print(f"{'(b) pytest --physpipe-plan (s)':34}{whole[True]:>12.3f}{whole[False]:>12.3f}"
          f"{whole[True] / whole[False]:>8.2f}")  # fmt: skip
    if args.check and on[2] <= off[2]:
        raise SystemExit("tracking covered nothing more than the stage functions")


if __name__ == "__main__":
    main()

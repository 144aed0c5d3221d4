"""``Workflow``: the suite's stages from a script, against the same store and keys as pytest.

Every ``Workflow`` here runs in a child process, as a notebook or a script would: a fresh
interpreter importing the project's stages. pytest runs through pytester.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from physpipe_testing import REPO, CallLog, wait_for

STAGES = """
from physlog import log
from pytest_physpipe import Resources, StageConfig, stage, sweep


class GridConfig(StageConfig):
    n: int = 8
    length: float = 1.0


@stage(params=sweep(GridConfig, n=[8, 16]))
def grid(config: GridConfig) -> list:
    log(f"grid n={config.n}")
    return [i * config.length / config.n for i in range(config.n + 1)]


class HeatConfig(StageConfig):
    steps: int = 10
    alpha: float = 0.5


@stage
def heat(grid: list, config: HeatConfig) -> dict:
    log(f"heat n={len(grid) - 1} steps={config.steps}")
    return {"n": len(grid) - 1, "steps": config.steps, "total": sum(grid) * config.steps}


@stage
def energy(heat: dict) -> float:
    log(f"energy n={heat['n']}")
    return heat["total"] / 2


@stage(resources=Resources(cpu=2))
def wide(grid: list) -> str:
    import os

    log(f"wide n={len(grid) - 1} threads={os.environ.get('OMP_NUM_THREADS')}")
    return os.environ.get("OMP_NUM_THREADS", "")
"""

TESTS = """
def test_energy(energy, heat, physpipe):
    print("KEY", physpipe.key("heat"), physpipe.record("heat").label)
    assert energy == heat["total"] / 2
"""


def project(pytester: pytest.Pytester, ini: str = "") -> None:
    pytester.makeini(f"[pytest]\n{ini}")
    pytester.makepyfile(stages=STAGES, test_heat=TESTS)
    pytester.makeconftest('pytest_plugins = ["stages"]')


def script(path: Path, code: str, *args: object) -> subprocess.Popen[str]:
    """Start ``code`` with ``wf``, a Workflow over the project at ``path``, in a child process;
    what it prints as its last line is read back as JSON by :func:`result`."""
    prelude = (
        "import json, sys\n"
        "from pytest_physpipe import Workflow\n"
        "wf = Workflow(rootdir=sys.argv[1], modules=['stages'], progress=False)\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code), str(path), *map(str, args)],
        cwd=path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(child: subprocess.Popen[str]) -> Any:
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, f"workflow script failed:\n{out}\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def run_workflow(path: Path, code: str, *args: object) -> Any:
    return result(script(path, code, *args))


def report(pytester: pytest.Pytester, *args: str) -> dict[str, dict[str, Any]]:
    """Run pytest with a JSON report; its records by label."""
    out = pytester.runpytest("-p", "no:cacheprovider", "--physpipe-report=report.json", *args)
    out.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "report.json").read_text())
    return {r["name"] + (f"[{r['param_id']}]" if r["param_id"] else ""): r for r in data["stages"]}


def test_pytest_computes_then_workflow_hits_with_the_same_key(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(pytester)
    records = report(pytester)
    assert calls.take() == {
        "grid n=8": 1,
        "grid n=16": 1,
        "heat n=8 steps=10": 1,
        "heat n=16 steps=10": 1,
        "energy n=8": 1,
        "energy n=16": 1,
    }
    got = run_workflow(
        pytester.path,
        """
        value = wf.get("energy", grid={"n": 16})
        record = wf.record("energy", grid={"n": 16})
        heat = wf.record("heat", grid="n=16")
        print(json.dumps({"value": value, "key": record.key, "status": record.status,
                          "heat": heat.key, "label": record.label,
                          "computed": {k: r.status for k, r in wf.records.items()}}))
        """,
    )
    assert calls.take() == {}  # everything was a hit: nothing computed, not even upstream
    assert got["key"] == records["energy[n=16]"]["key"]
    assert got["heat"] == records["heat[n=16]"]["key"]
    assert got["status"] == "hit"
    assert got["label"] == "energy[n=16]"
    assert got["value"] == pytest.approx(sum(i / 16 for i in range(17)) * 10 / 2)
    assert set(got["computed"].values()) == {"hit"}


def test_workflow_computes_then_pytest_hits(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(pytester)
    got = run_workflow(
        pytester.path,
        """
        before = str(wf.store.root.exists())
        value = wf.get("energy", grid={"n": 8})
        print(json.dumps({"before": before, "value": value,
                          "status": wf.record("energy", grid={"n": 8}).status,
                          "reason": wf.record("energy", grid={"n": 8}).reason,
                          "keys": {r.label: k for k, r in wf.records.items()}}))
        """,
    )
    assert got["before"] == "False"  # get created the store, as a pytest run does
    assert got["status"] == "computed"
    assert got["reason"] == "new"
    assert calls.take() == {"grid n=8": 1, "heat n=8 steps=10": 1, "energy n=8": 1}
    records = report(pytester)
    # Only the other sweep point is computed; the workflow's entries are pytest's hits.
    assert calls.take() == {"grid n=16": 1, "heat n=16 steps=10": 1, "energy n=16": 1}
    for label in ("grid[n=8]", "heat[n=8]", "energy[n=8]"):
        assert records[label]["status"] == "hit"
        assert records[label]["key"] == got["keys"][label]
    assert records["energy[n=16]"]["status"] == "computed"


def test_rebuild_recomputes_only_the_instance_under_the_same_key(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(pytester)
    report(pytester)
    calls.take()
    got = run_workflow(
        pytester.path,
        """
        key = wf.key("heat", grid={"n": 8})
        wf.rebuild("heat", grid={"n": 8})
        record = wf.record("heat", grid={"n": 8})
        again = wf.rebuild("heat", grid={"n": 8})
        print(json.dumps({"key": key, "after": record.key, "status": record.status,
                          "reason": record.reason, "again": again["n"]}))
        """,
    )
    assert got["key"] == got["after"]
    assert got["status"] == "computed"
    assert got["reason"] == "rebuild"
    assert got["again"] == 8
    assert calls.take() == {"heat n=8 steps=10": 2}  # each rebuild recomputes; grid is a hit
    records = report(pytester)
    assert calls.take() == {}
    assert records["heat[n=8]"]["status"] == "hit"


def test_selection_resolves_as_indirect_parametrization_and_ini_settings(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    # The ini's salt and physpipe_set apply to the workflow's keys as to a run's.
    project(pytester, ini="physpipe_salt = s1\nphyspipe_set = heat.alpha=0.25\n")
    pytester.makepyfile(
        test_indirect="""
        import pytest
        from stages import GridConfig, HeatConfig

        @pytest.mark.parametrize("heat", [HeatConfig(steps=5)], indirect=True)
        def test_steps(heat, physpipe):
            print("INDIRECT", physpipe.key("heat"))

        @pytest.mark.parametrize("grid", [{"n": 12}], indirect=True)
        def test_outside_sweep(heat, physpipe):
            print("OUTSIDE", physpipe.key("heat"))
        """
    )
    out = pytester.runpytest("-p", "no:cacheprovider", "-s", "-k", "steps or outside")
    out.assert_outcomes(passed=3)
    printed = re.findall(r"(INDIRECT|OUTSIDE) ([0-9a-f]{32})", out.stdout.str())
    indirect = {key for label, key in printed if label == "INDIRECT"}
    outside = {key for label, key in printed if label == "OUTSIDE"}
    got = run_workflow(
        pytester.path,
        """
        from stages import GridConfig, HeatConfig
        print(json.dumps({
            "by_dict": [wf.key("heat", grid={"n": n}, heat={"steps": 5}) for n in (8, 16)],
            "by_id": wf.key("heat", grid="n=16", heat={"steps": 5}),
            "by_config": wf.key("heat", grid=GridConfig(n=16), heat=HeatConfig(steps=5)),
            "outside": wf.key("heat", grid=GridConfig(n=12)),
        }))
        """,
    )
    assert set(got["by_dict"]) == indirect
    assert got["by_id"] == got["by_config"] == got["by_dict"][1]
    assert {got["outside"]} == outside
    assert calls.take()  # pytest computed; the workflow only resolved keys


def test_status_record_and_plan_compute_nothing(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(pytester)
    got = run_workflow(
        pytester.path,
        """
        from pytest_physpipe.errors import NotInStoreError
        try:
            wf.status("heat", grid={"n": 8})
        except NotInStoreError as exc:
            no_store = str(exc)
        wf.get("grid", grid={"n": 8})
        status = wf.status("heat", grid={"n": 8})
        try:
            wf.record("heat", grid={"n": 8})
        except NotInStoreError as exc:
            not_stored = str(exc)
        plan = wf.plan("energy", grid={"n": 8})
        print(json.dumps({"no_store": no_store, "status": status, "missing": status == "missing",
                          "reason": status.reason, "not_stored": not_stored,
                          "plan": [[r.label, r.status] for r in plan], "table": str(plan),
                          "cached": wf.status("grid", grid={"n": 8})}))
        """,
    )
    assert "there is no physpipe store at" in got["no_store"]
    assert "the default, <rootdir>/.physpipe" in got["no_store"]
    assert got["status"] == "missing"
    assert got["missing"] is True
    assert got["reason"] == "new"  # no entry of heat[n=8] ever
    assert got["cached"] == "cached"
    assert "wf.get('heat', ...) computes it" in got["not_stored"]
    assert got["plan"] == [
        ["grid[n=8]", "cached"],
        ["heat[n=8]", "missing"],
        ["energy[n=8]", "missing"],
    ]
    assert "3 stage instance(s): 1 cached, 2 missing" in got["table"]
    assert calls.take() == {"grid n=8": 1}


def test_status_says_why_an_instance_is_missing_as_the_plan_does(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(pytester)
    report(pytester)
    calls.take()
    # Edit the project after pytest computed everything: heat's default steps, 10 -> 12.
    pytester.makepyfile(stages=STAGES.replace("steps: int = 10", "steps: int = 12"))
    plan = pytester.runpytest("-p", "no:cacheprovider", "--physpipe-plan", "-k", "8")
    got = run_workflow(
        pytester.path,
        """
        statuses = {n: wf.status(n, grid={"n": 8}) for n in ("grid", "heat", "energy")}
        print(json.dumps({
            "statuses": {n: [s, s.reason] for n, s in statuses.items()},
            "table": str(wf.plan("energy", grid={"n": 8})),
        }))
        """,
    )
    assert got["statuses"] == {
        "grid": ["cached", None],
        "heat": ["missing", "config steps 10 → 12"],
        "energy": ["missing", "upstream heat"],
    }
    # The same table, reasons and all, as pytest's plan of the test that uses these instances.
    lines = plan.stdout.lines
    start = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    assert lines[start : start + 5] == got["table"].splitlines()
    assert "upstream heat" in got["table"]
    assert calls.take() == {}


def test_errors_name_the_stage_and_say_what_to_do(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(pytester)
    pytester.makepyfile(helpers="def helper():\n    return 1\n")
    got = run_workflow(
        pytester.path,
        """
        from pytest_physpipe import PhyspipeError, Workflow
        errors = {}
        def attempt(label, call):
            try:
                call()
            except PhyspipeError as exc:
                errors[label] = [type(exc).__name__, str(exc)]
        attempt("unknown stage", lambda: wf.get("hot", grid={"n": 8}))
        attempt("unknown field", lambda: wf.get("heat", grid={"n": 8}, heat={"step": 3}))
        attempt("not upstream", lambda: wf.get("grid", heat={"steps": 3}))
        attempt("several", lambda: wf.get("heat", grid={"length": 1.0}))
        attempt("none", lambda: wf.get("heat", grid={"n": 9}))
        attempt("unswept", lambda: wf.get("heat"))
        attempt("invalid", lambda: wf.get("heat", grid={"n": 8}, heat={"steps": "many"}))
        attempt("no stage", lambda: Workflow(rootdir=".", modules=["helpers"]))
        attempt("no module", lambda: Workflow(rootdir=".", modules=["stagez"]))
        attempt("no file", lambda: Workflow(rootdir=".", modules=["sub/stages.py"]))
        attempt("setting", lambda: Workflow(rootdir=".", settings={"physpipe_sallt": "x"}))
        attempt("not ini", lambda: Workflow(rootdir=".", settings={"addopts": "-x"}))
        attempt("no dir", lambda: Workflow(rootdir="nowhere"))
        attempt("bad lock", lambda: Workflow(rootdir=".", settings={"physpipe_lock": "nfs"}))
        other = Workflow(rootdir=".", modules=["stages.py"], store="elsewhere")
        attempt("no store", lambda: other.plan("heat", grid={"n": 8}))
        narrow = Workflow(rootdir=".", modules=["stages"], settings={"physpipe_cpus": 1})
        attempt("budget", lambda: narrow.get("wide", grid={"n": 8}))
        print(json.dumps(errors))
        """,
    )
    assert got["unknown stage"] == [
        "SelectionError",
        "there is no stage named 'hot' (stages: energy, grid, heat, wide). Check the spelling, or "
        "add the module declaring it to Workflow(modules=[...]).",
    ]
    assert "HeatConfig has no field 'step' (fields: steps, alpha)" in got["unknown field"][1]
    assert "stage 'heat' is not 'grid' nor upstream of it" in got["not upstream"][1]
    assert got["several"] == [
        "SelectionError",
        "grid={'length': 1.0} matches 2 params entries of stage 'grid': n=8, n=16. Give more "
        "fields to pick one.",
    ]
    assert "matches none of the 2 params entries of stage 'grid' (n=8, n=16)" in got["none"][1]
    assert "grid=GridConfig(...)" in got["none"][1]
    assert got["unswept"] == [
        "SelectionError",
        "stage 'grid' is swept over 2 instances (n=8, n=16); say which one 'heat' should use: "
        "wf.get('heat', grid={'n': 8}).",
    ]
    assert got["invalid"][0] == "ConfigError"
    assert "stage 'heat'" in got["invalid"][1]
    assert "steps" in got["invalid"][1]
    assert got["no stage"][0] == "ProjectError"
    assert "module 'helpers'" in got["no stage"][1]
    assert "declares no stage" in got["no stage"][1]
    assert "no module named 'stagez'" in got["no module"][1]
    assert "there is no file" in got["no file"][1]
    assert "there is no ini setting 'physpipe_sallt'" in got["setting"][1]
    assert "only physpipe_* ini settings" in got["not ini"][1]
    assert "is not a directory" in got["no dir"][1]
    assert got["bad lock"][0] == "ConfigError"
    assert "physpipe_lock" in got["bad lock"][1]
    assert got["no store"][0] == "NotInStoreError"
    assert "elsewhere (the location comes from store=)" in got["no store"][1]
    assert got["budget"][0] == "ResourceError"
    assert "Stage 'wide[n=8]' asks for 2 CPU(s)" in got["budget"][1]
    assert calls.take() == {}  # the budget is checked before anything is computed


def test_missing_upstream_is_computed_first_within_resource_slots(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(pytester, ini="physpipe_cpus = 3\n")
    got = run_workflow(pytester.path, 'print(json.dumps(wf.get("wide", grid="n=16")))')
    assert got == "2"  # the stage held 2 of the 3 CPU slots, its thread pools capped to them
    assert calls.take() == {"grid n=16": 1, "wide n=16 threads=2": 1}


def test_what_invalidates_and_the_diagram_of_the_examples(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(REPO / "examples", examples, ignore=shutil.ignore_patterns(".physpipe"))
    got = run_workflow(
        examples,
        """
        names = sorted(spec.name for spec in wf.registry.all())
        invalidates = {n: sorted(wf.what_invalidates(n)) for n in names}
        wf.store.ensure()  # the table and the diagram read statuses from the store
        print(json.dumps({
            "invalidates": invalidates,
            "diagram": wf.diagram(),
            "rows": len(wf.stages()),
        }))
        """,
    )
    assert got["invalidates"] == {
        "heat": ["heat_convergence", "heat_diagnostics"],
        "heat_convergence": [],
        "heat_diagnostics": ["heat_convergence"],
        "heat_grid": ["heat", "heat_convergence", "heat_diagnostics", "heat_initial"],
        "heat_initial": ["heat", "heat_convergence", "heat_diagnostics"],
        "kepler_initial": ["long_orbit", "orbit"],
        "long_orbit": [],
        "orbit": [],
    }
    # Four grids fan out heat_initial, heat and heat_diagnostics: 4 * 4 + 4 single instances.
    assert got["rows"] == 20
    diagram = got["diagram"]
    assert diagram.startswith("digraph physpipe {")
    # initial, heat, diagnostics; 2 orbits; heat_convergence gathers 4 diagnostics (dashed)
    assert diagram.count("->") == 4 * (1 + 2 + 3) + 2 + 4
    assert diagram.count("[style=dashed]") == 4
    assert 'label="heat[n=64]\\n' in diagram
    assert "missing" in diagram


def test_a_workflow_and_pytest_racing_for_one_missing_key_compute_it_once(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makeconftest('pytest_plugins = ["stages"]')
    pytester.makepyfile(
        stages="""
        import os, time
        from pathlib import Path
        from physlog import log
        from pytest_physpipe import stage

        HERE = Path(__file__).parent

        @stage(cache=False)
        def ready():
            (HERE / f"ready-{os.getpid()}").touch()  # this process now asks for `solve`

        @stage
        def solve(ready) -> dict:
            log(f"solve {os.getpid()}")
            (HERE / "computing").touch()
            end = time.monotonic() + 60
            while not (HERE / "release").exists() and time.monotonic() < end:
                time.sleep(0.01)
            return {"value": 42}
        """,
        test_solve="""
        def test_solve(solve, physpipe):
            assert solve == {"value": 42}
        """,
    )
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    runner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--physpipe-report=r.json"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    child = script(
        pytester.path,
        """
        value = wf.get("solve")
        print(json.dumps({"value": value, "status": wf.records[wf.key("solve")].status}))
        """,
    )
    deadline = time.monotonic() + 120
    while len(list(pytester.path.glob("ready-*"))) < 2:
        assert time.monotonic() < deadline, "the two processes never both asked for the stage"
        assert runner.poll() is None, runner.communicate()
        assert child.poll() is None, child.communicate()
        time.sleep(0.01)
    wait_for(pytester.path / "computing")
    time.sleep(0.5)  # the other process is waiting on the key's lock by now
    (pytester.path / "release").touch()
    got = result(child)
    out, _ = runner.communicate(timeout=300)
    assert runner.returncode == 0, out
    records = json.loads((pytester.path / "r.json").read_text())["stages"]
    from_pytest = next(r["status"] for r in records if r["name"] == "solve")
    assert got["value"] == {"value": 42}
    assert sorted([got["status"], from_pytest]) == ["computed", "hit"]
    assert len(calls.lines()) == 1  # computed once, by one of the two processes


def test_the_notebook_howto_runs_as_written(tmp_path: Path) -> None:
    """docs/howto-notebook.md's Python blocks, in order, from a copy of the repository root."""
    text = (REPO / "docs" / "howto-notebook.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks, "the how-to has no Python example"
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns(".*"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PHYSPIPE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "max error at t_end on n=64" in done.stdout
    assert "4 stage instance(s): 2 cached, 2 missing" in done.stdout
    assert "['heat', 'heat_convergence', 'heat_diagnostics']" in done.stdout
    assert (tmp_path / "pipeline.dot").read_text().startswith("digraph physpipe {")
    assert (tmp_path / "examples" / ".physpipe" / "entries").is_dir()  # the suite's own store
    assert "physpipe: computing heat[n=64-courant=0.125] (1 of 2)" in done.stderr


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_is_one_line_rewritten_on_a_terminal_and_plain_lines_elsewhere(
    tty: bool,
) -> None:
    from pytest_physpipe.execute import NoHooks
    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.workflow import _Progress

    stream = _Stream(tty)
    progress = _Progress(NoHooks(), enabled=True, stream=stream)
    records = [
        StageRecord(key="a" * 32, name="grid", param_id="n=64", duration_s=0.5),
        StageRecord(key="b" * 32, name="heat", param_id="n=64", duration_s=75.0),
    ]
    with progress.build(2):
        for record in records:
            progress.stage_start(record)
            progress.stage_end(record, "computed")
    lines = [
        "physpipe: computing grid[n=64] (1 of 2) ...",
        "physpipe: grid[n=64] computed in 0.50 s",
        "physpipe: computing heat[n=64] (2 of 2) ...",
        "physpipe: heat[n=64] computed in 1 min 15 s",
    ]
    if tty:
        expected = f"\r\x1b[K{lines[0]}\r\x1b[K{lines[1]}\n\r\x1b[K{lines[2]}\r\x1b[K{lines[3]}\n"
    else:
        expected = "".join(line + "\n" for line in lines)
    assert stream.getvalue() == expected
    quiet = _Stream(tty)
    silent = _Progress(NoHooks(), enabled=False, stream=quiet)
    silent.stage_start(records[0])
    silent.stage_end(records[0], "computed")
    assert quiet.getvalue() == ""


INI_FILES = {
    "pytest.ini": "[pytest]\n{}\n",
    "pyproject.toml": "[tool.pytest.ini_options]\n{}\n",
    "tox.ini": "[pytest]\n{}\n",
    "setup.cfg": "[tool:pytest]\n{}\n",
}


@pytest.mark.parametrize("inifile", list(INI_FILES))
def test_the_store_and_settings_come_from_the_ini_file_pytest_reads(
    tmp_path: Path, inifile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    lines = (
        'physpipe_dir = "results/store"\nphyspipe_salt = "s2"'
        if inifile == "pyproject.toml"
        else "physpipe_dir = results/store\nphyspipe_salt = s2"
    )
    (tmp_path / inifile).write_text(INI_FILES[inifile].format(lines))
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "stages.py").write_text(
        "from pytest_physpipe import stage\n\n@stage\ndef answer() -> int:\n    return 42\n"
    )
    code = """
        print(json.dumps([str(wf.store.root), str(wf.rootdir), wf.store_source,
                          wf.project.settings.salt]))
    """
    # From the tests folder, as `pytest tests/` would be run: the rootdir is the ini's folder.
    root, rootdir, source, salt = run_workflow(tests, code)
    assert root == str(tmp_path / "results" / "store")
    assert rootdir == str(tmp_path)
    assert source == f"ini physpipe_dir in {tmp_path / inifile}"
    assert salt == "s2"
    monkeypatch.setenv("PHYSPIPE_DIR", str(tmp_path / "env-store"))
    root, _, source, _ = run_workflow(tests, code)
    assert root == str(tmp_path / "env-store")
    assert source == "the environment variable PHYSPIPE_DIR"


GATHERING = """
from physlog import log
from pytest_physpipe import StageConfig, gather, stage, sweep


class PointConfig(StageConfig):
    kind: str = "P1"
    level: int = 1


@stage(params=sweep(PointConfig, kind=["P1", "P2"], level=[1, 2]))
def error(config: PointConfig) -> float:
    log(f"error {config.kind} {config.level}")
    return 1.0 / (config.level * (2 if config.kind == "P2" else 1))


@stage
def total(errors=gather("error")) -> float:
    log("total")
    return sum(e.value for e in errors)


@stage
def per_kind(errors=gather("error", over=["level"])) -> dict:
    log(f"per_kind {len(errors)}")
    return {"levels": [e.coords["level"] for e in errors], "sum": sum(e.value for e in errors)}
"""


def test_gathering_stages_from_a_workflow_are_hits_in_pytest(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        stages=GATHERING,
        test_gather="""
        def test_total(total):
            assert total == 1.0 + 0.5 + 0.5 + 0.25

        def test_per_kind(per_kind):
            assert per_kind["levels"] == [1, 2]
        """,
    )
    pytester.makeconftest('pytest_plugins = ["stages"]')
    got = run_workflow(
        pytester.path,
        """
        from pytest_physpipe.errors import SelectionError
        try:
            wf.get("per_kind")
        except SelectionError as exc:
            unchosen = str(exc)
        p2 = wf.get("per_kind", per_kind="kind=P2")
        p1 = wf.get("per_kind", per_kind={"kind": "P1"})
        total = wf.get("total")
        print(json.dumps({"unchosen": unchosen, "p2": p2, "p1": p1, "total": total,
                          "invalidates": sorted(wf.what_invalidates("error")),
                          "rows": [row.label for row in wf.stages("per_kind", "total")]}))
        """,
    )
    assert "stage 'per_kind' fans out over 2 gathers (kind=P1, kind=P2)" in got["unchosen"]
    assert got["p2"] == {"levels": [1, 2], "sum": 0.75}
    assert got["p1"] == {"levels": [1, 2], "sum": 1.5}
    assert got["total"] == 2.25
    assert got["invalidates"] == ["per_kind", "total"]
    assert got["rows"] == ["total", "per_kind[kind=P1]", "per_kind[kind=P2]"]
    computed = calls.take()
    assert computed == {
        "error P1 1": 1,
        "error P1 2": 1,
        "error P2 1": 1,
        "error P2 2": 1,
        "per_kind 2": 2,
        "total": 1,
    }
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)
    assert calls.take() == {}  # every instance, gathered and gathering, was a hit

"""Bad input, one case per row: every one gets a clear paragraph, none is silently accepted.

A row is a small project (stage module, ini, command line) or a ``physpipe`` command, and the
words its answer must contain. "Clear" means: the answer names the stage or option and says
what to do (the expected words), pytest does not crash (no INTERNALERROR), and no raw
traceback from inside the plugin is shown. ``docs/decisions.md#bad-input`` has the table of
what each gave before.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

GRID = """
from pytest_physpipe import stage, StageConfig

class GridConfig(StageConfig):
    n: int = 8

@stage
def grid(config: GridConfig):
    return list(range(config.n))

def test_grid(grid):
    assert len(grid) >= 0
"""


def module(body: str) -> str:
    return "from pytest_physpipe import stage, StageConfig, Retry, Resources\n" + textwrap.dedent(
        body
    )


@dataclass(frozen=True)
class Case:
    """One bad input: the project (or CLI call) and the words a clear answer contains."""

    id: str
    expect: tuple[str, ...]
    source: str = GRID
    args: tuple[str, ...] = ()
    ini: str = ""
    cli: tuple[str, ...] | None = None  # a `physpipe` command instead of a pytest run
    setup: str = ""  # python run in the project directory before (may prepare a store)
    outcome: str = "fails"  # "fails": nonzero exit; "warns": passes with a warning; "skips"
    extra: dict[str, str] = field(default_factory=dict)


STAGE_TESTS = "\ndef test_uses(a):\n    pass\n"

CASES = [
    # -- command-line options ------------------------------------------------------------------
    Case("cpus-zero", ("--physpipe-cpus",), args=("--physpipe-cpus", "0")),
    Case("cpus-negative", ("--physpipe-cpus",), args=("--physpipe-cpus=-3",)),
    Case("cpus-text", ("--physpipe-cpus",), args=("--physpipe-cpus", "many")),
    Case("gpus-negative", ("--physpipe-gpus",), args=("--physpipe-gpus=-1",)),
    Case("backend-unknown", ("--physpipe-backend",), args=("--physpipe-backend", "cloud")),
    Case("set-unknown-stage", ("nosuch", "--physpipe-set"), args=("--physpipe-set", "nosuch.n=1")),
    Case("set-unknown-field", ("grid", "nosuch"), args=("--physpipe-set", "grid.nosuch=1")),
    Case("set-bad-value", ("grid", "n"), args=("--physpipe-set", "grid.n=abc")),
    Case("set-no-equals", ("--physpipe-set", "NAME.FIELD=VALUE"), args=("--physpipe-set", "grid")),
    Case("set-no-field", ("--physpipe-set",), args=("--physpipe-set", "grid=3")),
    Case(
        "rebuild-unknown", ("--physpipe-rebuild", "nosuch"), args=("--physpipe-rebuild", "nosuch")
    ),
    Case("graph-extension", ("--physpipe-graph", ".dot"), args=("--physpipe-graph", "g.png")),
    Case(
        "report-unwritable",
        ("--physpipe-report", "missing"),
        args=("--physpipe-report", "missing/dir/report.json"),
        setup="open('missing', 'w').close()",
        outcome="fails",
    ),
    Case("report-is-directory", ("--physpipe-report",), args=("--physpipe-report", ".")),
    Case(
        "graph-unwritable",
        ("--physpipe-graph",),
        args=("--physpipe-graph", "missing/g.dot"),
        setup="open('missing', 'w').close()",
        outcome="fails",
    ),
    Case(
        "dir-is-a-file",
        ("store", "--physpipe-dir"),
        args=("--physpipe-dir", "store"),
        setup="open('store', 'w').write('x')",
    ),
    Case("dir-is-project", ("not part of a store", "--physpipe-dir"), args=("--physpipe-dir", ".")),
    Case(
        "cached-only-and-no-cache",
        ("--physpipe-cached-only", "--physpipe-no-cache"),
        args=("--physpipe-cached-only", "--physpipe-no-cache"),
    ),
    # -- ini -----------------------------------------------------------------------------------
    Case("ini-lock", ("physpipe_lock", "soft"), ini="physpipe_lock = maybe"),
    Case("ini-verify-max", ("physpipe_verify_max",), ini="physpipe_verify_max = 12 parsecs"),
    Case("ini-cpus", ("physpipe_cpus",), ini="physpipe_cpus = lots"),
    Case("ini-backend", ("physpipe_backend",), ini="physpipe_backend = cloud"),
    Case("ini-rtol", ("physpipe_snapshot_rtol",), ini="physpipe_snapshot_rtol = tight"),
    Case("ini-atol-negative", ("physpipe_snapshot_atol",), ini="physpipe_snapshot_atol = -1"),
    Case(
        "ini-dir-file",
        ("physpipe_dir",),
        ini="physpipe_dir = store",
        setup="open('store', 'w').write('x')",
    ),
    Case(
        "ini-track-packages",
        ("physpipe_track_packages", "not_a_pkg_xyz"),
        ini="physpipe_track_packages = not_a_pkg_xyz",
        outcome="warns",
    ),
    # -- configs -------------------------------------------------------------------------------
    Case(
        "params-wrong-type",
        ("grid", "n"),
        module("""
        class C(StageConfig):
            n: int
        @stage(params=[{"n": "ten"}])
        def grid(config: C):
            return 1
        def test_uses(grid):
            pass
        """),
    ),
    Case(
        "params-empty",
        ("grid", "params"),
        module("""
        class C(StageConfig):
            n: int = 1
        @stage(params=[])
        def grid(config: C):
            return 1
        def test_uses(grid):
            pass
        """),
    ),
    Case(
        "ids-count",
        ("grid", "ids"),
        module("""
        class C(StageConfig):
            n: int = 1
        @stage(params=[{"n": 1}, {"n": 2}], ids=["one"])
        def grid(config: C):
            return 1
        def test_uses(grid):
            pass
        """),
    ),
    Case(
        "ids-without-params",
        ("grid", "ids"),
        module("""
        class C(StageConfig):
            n: int = 1
        @stage(ids=["one"])
        def grid(config: C):
            return 1
        def test_uses(grid):
            pass
        """),
    ),
    Case(
        "config-without-parameter",
        ("grid", "config"),
        module("""
        class C(StageConfig):
            n: int = 1
        @stage(params=[{"n": 1}])
        def grid():
            return 1
        def test_uses(grid):
            pass
        """),
    ),
    Case(
        "config-not-stageconfig",
        ("grid", "StageConfig"),
        module("""
        @stage
        def grid(config: dict):
            return 1
        def test_uses(grid):
            pass
        """),
    ),
    Case(
        "params-unknown-field",
        ("grid", "nope"),
        module("""
        class C(StageConfig):
            n: int = 1
        @stage(params=[{"nope": 1}])
        def grid(config: C):
            return 1
        def test_uses(grid):
            pass
        """),
    ),
    Case(
        "config-required-field-no-default",
        ("grid", "n"),
        module("""
        class C(StageConfig):
            n: int
        @stage
        def grid(config: C):
            return 1
        def test_uses(grid):
            pass
        """),
    ),
    # -- stage signatures and declarations -----------------------------------------------------
    Case("star-args", ("a", "args"), module("@stage\ndef a(*args):\n    return 1" + STAGE_TESTS)),
    Case("star-kwargs", ("a", "kw"), module("@stage\ndef a(**kw):\n    return 1" + STAGE_TESTS)),
    Case(
        "upstream-default",
        ("a", "default"),
        module("@stage\ndef b():\n    return 1\n@stage\ndef a(b=2):\n    return b" + STAGE_TESTS),
    ),
    Case(
        "self-reference", ("a", "itself"), module("@stage\ndef a(a):\n    return 1" + STAGE_TESTS)
    ),
    Case(
        "unknown-upstream",
        ("a", "nosuch"),
        module("@stage\ndef a(nosuch):\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "cycle",
        ("cycle", "a", "b"),
        module("@stage\ndef a(b):\n    return 1\n@stage\ndef b(a):\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "name-not-identifier",
        ("name", "identifier"),
        module("@stage(name='my stage')\ndef a():\n    return 1\ndef test_x():\n    pass\n"),
    ),
    Case(
        "unknown-option",
        ("unknown option", "cahce"),
        module("@stage(cahce=False)\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "codec-not-str",
        ("a", "codec"),
        module("@stage(codec=5)\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "codec-unknown",
        ("a", "nosuch", "codec"),
        module("""
        from physlog import log
        @stage(codec="nosuch")
        def a():
            log("computed")
            return 1
        def test_uses(a):
            pass
        """),
    ),
    Case(
        "retry-on-not-exception",
        ("a", "Retry", "on"),
        module("@stage(retries=Retry(on=('TimeoutError',)))\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    Case(  # accepted by design: one exception class is read as a tuple of one
        "retry-on-single-class",
        ("1 passed",),
        module("@stage(retries=Retry(on=ValueError))\ndef a():\n    return 1" + STAGE_TESTS),
        outcome="ok",
    ),
    Case(
        "retry-zero-attempts",
        ("a", "max_attempts"),
        module("@stage(retries=Retry(max_attempts=0))\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "retries-negative",
        ("a", "retries"),
        module("@stage(retries=-1)\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "resources-negative",
        ("a", "cpu"),
        module("@stage(resources=Resources(cpu=-1))\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "resources-over-budget",
        ("a", "CPU"),
        module("@stage(resources=Resources(cpu=64))\ndef a():\n    return 1" + STAGE_TESTS),
        args=("--physpipe-cpus", "2"),
    ),
    Case(
        "resources-wrong-type",
        ("a", "resources"),
        module("@stage(resources='4 cores')\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "duplicate-names-one-file",
        ("a", "twice"),
        module("@stage\ndef a():\n    return 1\n@stage\ndef a():\n    return 2" + STAGE_TESTS),
    ),
    Case(
        "builtin-fixture-name",
        ("tmp_path", "fixture"),
        module("@stage\ndef tmp_path():\n    return 1\ndef test_x(tmp_path):\n    pass\n"),
    ),
    Case(
        "stage-on-class",
        ("plain functions",),
        module("@stage\nclass A:\n    pass\ndef test_x():\n    pass\n"),
    ),
    Case(
        "version-list",
        ("a", "version"),
        module("@stage(version=[1])\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    Case(
        "slow-not-bool",
        ("a", "slow"),
        module("@stage(slow='yes')\ndef a():\n    return 1" + STAGE_TESTS),
    ),
    # -- return values -------------------------------------------------------------------------
    Case(
        "unpicklable",
        ("a", "cache=False"),
        module("import threading\n@stage\ndef a():\n    return threading.Lock()" + STAGE_TESTS),
    ),
    Case(
        "deep-nesting",
        ("a", "nested deeper"),
        module("""
        @stage
        def a():
            value = []
            for _ in range(100_000):
                value = [value]
            return value
        def test_uses(a):
            pass
        """),
    ),
    Case(
        "codec-refuses-value",
        ("a", "npy"),
        module("@stage(codec='npy')\ndef a():\n    return {'x': 1}" + STAGE_TESTS),
    ),
    Case(
        "generator-return",
        ("a", "generator"),
        module("@stage\ndef a():\n    return (i for i in range(3))" + STAGE_TESTS),
    ),
    Case(
        "json-codec-refuses-tuple",
        ("a", "json", "codec="),
        module("@stage(codec='json')\ndef a():\n    return (1, 2)" + STAGE_TESTS),
    ),
    # -- store states --------------------------------------------------------------------------
    Case(
        "corrupt-entry",
        ("grid", "corrupt", "recomputing"),
        setup="CORRUPT",
        outcome="warns",
    ),
    Case("meta-not-json", ("grid", "corrupt"), setup="META", outcome="warns"),
    Case(
        "cached-only-corrupt",
        ("grid", "corrupt"),
        args=("--physpipe-cached-only",),
        setup="CORRUPT",
        outcome="skips",
    ),
    Case(
        "foreign-secret",
        ("a", "signed with another secret"),
        source=module("""
        class Mesh:
            n = 3
        @stage
        def a():
            return Mesh()
        def test_uses(a):
            assert a.n == 3
        """),
        setup="FOREIGN",
        outcome="warns",
        extra={"stage": "a"},
    ),
    Case("payload-missing", ("grid", "missing", "recomputing"), setup="MISSING", outcome="warns"),
    Case(
        "soft-lock-full-disk",
        ("grid", "lock", "without caching"),
        args=("--physpipe-rebuild", "grid"),
        ini="physpipe_lock = soft",
        setup="FULLDISK",
        outcome="warns",
    ),
    Case("full-disk-commit", ("grid", "not cached"), setup="FULLCOMMIT", outcome="warns"),
    Case("tmp-symlink", ("tmp",), cli=("prune",), setup="TMPLINK", outcome="ok"),
    # -- the physpipe command ------------------------------------------------------------------
    Case("cli-no-command", ("usage", "COMMAND"), cli=()),
    Case("cli-bad-duration", ("--older-than", "30d"), cli=("prune", "--older-than", "3x")),
    Case("cli-bad-size", ("--max-size", "20Q", "1G"), cli=("prune", "--max-size", "20Q")),
    Case("cli-rm-unknown", ("nosuch",), cli=("rm", "nosuch"), setup="STORE"),
    Case("cli-show-short-prefix", ("abc",), cli=("show", "abc"), setup="STORE"),
    Case("cli-no-store", ("does not exist", "--dir"), cli=("--dir", "nowhere", "ls")),
    Case("cli-not-a-store", ("not a physpipe store",), cli=("--dir", ".", "ls")),
    Case("cli-lock-mode", ("--lock", "soft"), cli=("ls", "--lock", "maybe")),
    Case("cli-verify-unknown-key", ("0123456789",), cli=("verify", "0123456789"), setup="STORE"),
]


PHYSLOG = "def log(line):\n    open('calls.log', 'a').write(line + '\\n')\n"
ALICE, BOB = "alice-" + "a" * 20, "bob-" + "b" * 20
# A traceback entry inside the plugin ("path:line: in func") or its crash line; warning
# locations in the warnings summary ("path:line: SomeWarning") are fine.
PLUGIN_FRAME = re.compile(r"pytest_physpipe[/\\][\w/\\]+\.py:\d+: (in |\w+Error)")


def _env(secret: str = ALICE) -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PHYSPIPE_SECRET": secret}
    env.pop("PHYSPIPE_DIR", None)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _pytest(path: Path, args: tuple[str, ...], *, secret: str = ALICE, **kw: Any) -> Any:
    plugins = ("no:cacheprovider", "no:xdist", "no:hypothesispytest", "no:benchmark")
    cmd = [sys.executable, "-m", "pytest", *(f"-p{p}" for p in plugins), "-rs", "-Wdefault", *args]
    return subprocess.run(
        cmd,
        cwd=path,
        env=_env(secret),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kw,
    )


def _entry_files(path: Path, name: str) -> Path:
    for meta in (path / ".physpipe" / "entries").rglob("meta.json"):
        if json.loads(meta.read_text())["record"]["name"] == name:
            return meta.parent
    raise AssertionError(f"no entry of {name} in {path}")


def _prepare(case: Case, path: Path) -> dict[str, Any]:
    """Put the project (and the store state the case needs) in ``path``; extra run options."""
    (path / "test_case.py").write_text(case.source)
    (path / "physlog.py").write_text(PHYSLOG)
    (path / "pytest.ini").write_text(f"[pytest]\n{case.ini}\n")
    options: dict[str, Any] = {}
    stage = case.extra.get("stage", "grid")
    if case.setup in ("STORE", "CORRUPT", "META", "MISSING", "FOREIGN", "TMPLINK", "FULLDISK"):
        first = _pytest(path, ())
        assert first.returncode == 0, first.stdout + first.stderr
        entry = _entry_files(path, stage)
        if case.setup == "STORE":
            pass
        elif case.setup == "CORRUPT":
            payload = next(p for p in entry.iterdir() if p.name.startswith("value"))
            data = payload.read_bytes()
            payload.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        elif case.setup == "MISSING":
            next(p for p in entry.iterdir() if p.name.startswith("value")).unlink()
        elif case.setup == "META":
            (entry / "meta.json").write_text("{")
        elif case.setup == "FOREIGN":
            options["secret"] = BOB
        elif case.setup == "FULLDISK":  # the store exists; no lock file can be written now
            options["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        else:
            outside = path / "outside"
            outside.mkdir()
            (outside / f"x.{os.uname().nodename}.999999999.ab").mkdir()
            tmp = path / ".physpipe" / "tmp"
            for item in tmp.iterdir():
                item.rmdir()
            tmp.rmdir()
            tmp.symlink_to(outside)
    elif case.setup == "FULLCOMMIT":
        options["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
    elif case.setup:
        subprocess.run([sys.executable, "-c", case.setup], cwd=path, check=True)
    return options


def _judge(case: Case, code: int, output: str) -> str:
    """``clear``, ``unclear`` (words missing or a raw plugin traceback), ``INTERNALERROR``,
    or ``silent`` (accepted without a word)."""
    if "INTERNALERROR" in output:
        return "INTERNALERROR"
    words = all(w.lower() in output.lower() for w in case.expect)
    accepted = {
        "fails": code != 0,
        "warns": code == 0,
        "skips": code == 0 and "skipped" in output,
        "passes-with-error": True,
        "ok": code == 0,
    }[case.outcome]
    if not words and code == 0 and case.outcome == "fails":
        return "silent"
    if not (words and accepted):
        return "unclear"
    if PLUGIN_FRAME.search(output) or "Traceback (most recent call last)" in output:
        return "unclear"
    return "clear"


def run_case(case: Case, path: Path) -> tuple[str, str]:
    options = _prepare(case, path)
    if case.cli is not None:
        done = subprocess.run(
            [sys.executable, "-m", "pytest_physpipe", *case.cli], cwd=path, env=_env(),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    else:
        done = _pytest(path, case.args, **options)
    output = done.stdout + done.stderr
    return _judge(case, done.returncode, output), output


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_answer(case: Case, tmp_path: Path) -> None:
    verdict, output = run_case(case, tmp_path)
    assert verdict == "clear", f"{case.id}: {verdict}\n{output[-4000:]}"
    if case.id == "codec-unknown":
        assert not (tmp_path / "calls.log").exists()  # refused before computing
    if case.id == "dir-is-project":
        assert not (tmp_path / ".gitignore").exists()


def test_the_table_has_at_least_sixty_rows() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 60


if __name__ == "__main__":  # print the table: python tests/test_bad_input.py [ID ...]
    import tempfile

    wanted = set(sys.argv[1:])
    for case in CASES:
        if wanted and case.id not in wanted:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            verdict, output = run_case(case, Path(tmp))
        print(f"{case.id:32} {verdict}", flush=True)
        if wanted:
            print(output[-3000:])

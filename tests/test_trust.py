"""A cached value is what a fresh run computes: faithful keys, isolated consumers, entries that
heal, and every recomputation explained. Run through pytester, as users see it."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from physpipe_testing import CallLog

COMMON = """
from typing import Any

import numpy as np
import pytest
from physlog import log
from pytest_physpipe import StageConfig, stage


class AnyConfig(StageConfig):
    model_config = {"arbitrary_types_allowed": True}
    value: Any = None
"""


def project(pytester: pytest.Pytester, body: str, **files: str) -> None:
    pytester.makepyfile(test_project=COMMON + textwrap.dedent(body), **files)


# -- keys faithful to types -----------------------------------------------------------------------


def test_look_alike_configs_are_computed_apart(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        LOOK_ALIKES = [{1: "v"}, {"1": "v"}, (1, 2), [1, 2], 1, 1.0, True]

        @stage(params=[AnyConfig(value=v) for v in LOOK_ALIKES], ids=[repr(v) for v in LOOK_ALIKES])
        def echo(config: AnyConfig):
            log(f"echo {config.value!r}")
            return repr(config.value)

        def test_each_gets_its_own(echo, request):
            assert echo == request.node.callspec.id
        """,
    )
    pytester.runpytest().assert_outcomes(passed=7)
    assert len(calls.take()) == 7
    pytester.runpytest().assert_outcomes(passed=7)
    assert calls.take() == Counter()


@pytest.mark.parametrize(
    ("value", "reason"), [("object()", "Unable to serialize"), ("b'\\xff'", "UTF-8|utf-8")]
)
def test_unencodable_config_field_is_a_clear_collection_error(
    pytester: pytest.Pytester, calls: CallLog, value: str, reason: str
) -> None:
    project(
        pytester,
        f"""
        @stage(config=AnyConfig(value={value}))
        def odd(config: AnyConfig):
            return 1

        def test_odd(odd):
            pass
        """,
    )
    result = pytester.runpytest()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(["*stage 'odd'*config field 'value' cannot be encoded*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert re.search(reason, result.stderr.str())


# -- consumers are isolated -----------------------------------------------------------------------

ISOLATION = """
class Box:
    def __init__(self, rows):
        self.rows = rows


@stage
def table():
    log("table")
    return {"rows": [1, 2, 3], "meta": {"unit": "m"}}


@stage(codec="pickle")
def boxed():
    log("boxed")
    return Box([1, 2, 3])


@stage
def greedy(table, boxed):
    # A stage that edits its upstream values in place (as some libraries do).
    table["rows"].append(99)
    boxed.rows.append(99)
    log("greedy")
    return {"n": len(table["rows"]), "m": len(boxed.rows)}


def test_a_mutates(table, boxed):
    table["rows"].append(4)
    table["meta"]["unit"] = "km"
    boxed.rows.append(4)


def test_b_sees_pristine(table, boxed, greedy):
    assert table == {"rows": [1, 2, 3], "meta": {"unit": "m"}}
    assert boxed.rows == [1, 2, 3]
    assert greedy == {"n": 4, "m": 4}


@stage
def after(table):
    # Computed after tests and greedy edited their copies: sees (and stores) the pristine value.
    log("after")
    return list(table["rows"])


def test_c_downstream_stored_pristine(after):
    assert after == [1, 2, 3]
"""


@pytest.mark.parametrize("mode", ["cold-then-warm", "no-cache"])
def test_consumers_get_values_no_other_consumer_can_change(
    pytester: pytest.Pytester, calls: CallLog, mode: str
) -> None:
    project(pytester, ISOLATION)
    args = ["--physpipe-no-cache"] if mode == "no-cache" else []
    pytester.runpytest(*args).assert_outcomes(passed=3)
    assert calls.take() == Counter({"table": 1, "boxed": 1, "greedy": 1, "after": 1})
    if mode == "cold-then-warm":
        pytester.runpytest().assert_outcomes(passed=3)  # served from the store: pristine too
        assert calls.take() == Counter()


def test_read_only_arrays_cannot_be_made_writable(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        @stage
        def small():
            return np.arange(4.0)

        @stage
        def nested():
            return {"a": np.arange(3.0), "b": [np.ones(2)]}

        @stage
        def large():
            return np.zeros(300_000)  # memory-mapped from 1 MiB

        def check(array):
            assert not array.flags.writeable
            with pytest.raises(ValueError):
                array.flags.writeable = True
            with pytest.raises(ValueError):
                array[0] = 5.0

        def test_flags(small, nested, large):
            for array in (small, nested["a"], nested["b"][0], large):
                check(array)
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--physpipe-no-cache").assert_outcomes(passed=1)


# -- entries that cannot be loaded heal -----------------------------------------------------------

LIBRARY = """
from pydantic import BaseModel


class Section:
    def __init__(self, area):
        self.area = area


class Props(BaseModel):
    area: float
"""

HEALING = """
import lib_sections


@stage(codec="pickle")
def section():
    log("section")
    return lib_sections.Section(2.0)


@stage
def props():
    log("props")
    return {"p": lib_sections.Props(area=3.0)}


def test_values(section, props):
    assert section.area == 2.0 and props["p"].area == 3.0
"""


def _installed_library(pytester: pytest.Pytester, impl: str = "lib_sections_impl") -> None:
    """A library whose public module re-exports classes from an internal module, as most do.

    It lives in a site-packages folder, so it is a library, not project code: upgrading it
    leaves keys as they are, which is exactly when stored pickles break (they name the
    internal module).
    """
    lib = pytester.path / "venv" / "site-packages"
    lib.mkdir(parents=True, exist_ok=True)
    for old in lib.glob("lib_sections*.py"):
        old.unlink()
    (lib / f"{impl}.py").write_text(textwrap.dedent(LIBRARY))
    (lib / "lib_sections.py").write_text(f"from {impl} import Props, Section  # noqa: F401\n")
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(lib)!r})\n")


def _meta_files(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".physpipe" / "entries").glob("*/*/meta.json"))


def _cli(pytester: pytest.Pytester, *args: str) -> tuple[int, str]:
    from pytest_physpipe.store.cli import main

    out = io.StringIO()
    lib = str(pytester.path / "venv" / "site-packages")
    sys.path.insert(0, lib)  # verify loads values: run it where the project's imports work
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = main(["--dir", str(pytester.path / ".physpipe"), *args])
    except SystemExit as exc:
        status = int(exc.code or 0)
    finally:
        sys.path.remove(lib)
        for name in [m for m in sys.modules if m.startswith("lib_sections")]:
            del sys.modules[name]
    return status, out.getvalue()


def _heals(pytester: pytest.Pytester, calls: CallLog, stages: set[str], cause: str) -> None:
    """The next run warns once per broken entry, naming ``cause``, and recomputes it."""
    status, text = _cli(pytester, "verify", "-q")
    assert status == 1, text
    assert re.search(cause, text), text
    result = pytester.runpytest("-W", "always")
    result.assert_outcomes(passed=1)
    assert "INTERNALERROR" not in result.stdout.str()
    assert set(calls.take()) == stages
    warned = result.stdout.str().count("recomputing it")
    assert warned == len(stages), result.stdout.str()
    assert re.search(cause, result.stdout.str())
    pytester.runpytest().assert_outcomes(passed=1)  # healed: a hit, no warning
    assert calls.take() == Counter()
    assert _cli(pytester, "verify", "-q")[0] == 0


def test_library_upgrade_that_moves_classes_heals(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    _installed_library(pytester)
    project(pytester, HEALING)
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter({"section": 1, "props": 1})
    _installed_library(pytester, impl="lib_sections_core")  # the upgrade moves the classes
    _heals(pytester, calls, {"section", "props"}, "cannot be imported")


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda meta: {**meta, "codec": 5}, "no codec named|cannot be loaded"),
        (lambda meta: {**meta, "record": [1, 2]}, "cannot be loaded|ValidationError"),
        (lambda meta: {**meta, "files": {"value.json": "big"}}, "cannot be loaded|TypeError"),
        (None, "not valid JSON"),  # nested deeper than any parser's stack
    ],
    ids=["codec-int", "record-list", "files-str", "deeply-nested"],
)
def test_damaged_meta_json_heals(
    pytester: pytest.Pytester, calls: CallLog, damage: Any, cause: str
) -> None:
    project(
        pytester,
        """
        @stage
        def rows():
            log("rows")
            return {"rows": [1, 2]}

        def test_rows(rows):
            assert rows == {"rows": [1, 2]}
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)
    calls.take()
    (meta_path,) = _meta_files(pytester)
    if damage is None:
        meta_path.write_text("[" * 200_000 + "]" * 200_000)
    else:
        meta_path.write_text(json.dumps(damage(json.loads(meta_path.read_text()))))
    for command in (["ls"], ["show", "rows"], ["prune", "--dry-run", "--max-size", "0"]):
        _, text = _cli(pytester, *command)
        assert "Traceback" not in text, (command, text)
    _heals(pytester, calls, {"rows"}, cause)


def test_rebuild_always_replaces_a_broken_entry(pytester: pytest.Pytester, calls: CallLog) -> None:
    _installed_library(pytester)
    project(pytester, HEALING)
    pytester.runpytest().assert_outcomes(passed=1)
    calls.take()
    _installed_library(pytester, impl="lib_sections_core")
    result = pytester.runpytest("--physpipe-rebuild", "all", "-W", "always")
    result.assert_outcomes(passed=1)
    assert calls.take() == Counter({"section": 1, "props": 1})
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter()


def test_locally_defined_model_is_a_clear_error(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        from pydantic import BaseModel

        def make():
            class Local(BaseModel):
                x: int = 1
            return Local()

        @stage
        def local():
            return make()

        def test_local(local):
            pass
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*stage 'local'*Local*"])
    assert "INTERNALERROR" not in result.stdout.str()
    assert _meta_files(pytester) == []


# -- why it recomputes ----------------------------------------------------------------------------

REASONS = """
from pathlib import Path

from physlog import log
from pytest_physpipe import InputFile, StageConfig, stage

import physics


class GridConfig(StageConfig):
    n: int = {n}


class HeatConfig(StageConfig):
    steps: int = {steps}
    mesh: InputFile = "mesh.msh"


@stage
def grid(config: GridConfig):
    return list(range(config.n))


@stage(version={version})
def heat(grid, config: HeatConfig):
    log("heat")
    return physics.step(len(grid)) * config.steps {body}


def test_heat(heat):
    assert heat
"""

PHYSICS_MODULE = "def step(x):\n    return x {op} 2\n"


def _write_reason_project(pytester: pytest.Pytester, **change: object) -> None:
    values: dict[str, Any] = {
        "n": 8, "steps": 200, "version": 1, "body": "", "op": "*", "salt": "",
        "mesh": "0 0\n1 1\n", "fakepkg": "1.0",
    } | change  # fmt: skip
    pytester.makepyfile(
        test_why_project=REASONS.format(**values), physics=PHYSICS_MODULE.format(op=values["op"])
    )
    (pytester.path / "mesh.msh").write_text(values["mesh"])
    site = pytester.path / "site"
    for old in site.glob("fakepkg-*.dist-info"):
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    dist = site / f"fakepkg-{values['fakepkg']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {values['fakepkg']}\n"
    )
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(site)!r})\n")
    pytester.makeini(
        f"[pytest]\nphyspipe_salt = {values['salt']}\nphyspipe_track_packages = fakepkg\n"
    )


@pytest.mark.parametrize(
    ("change", "heat_reason"),
    [
        ({"steps": 150}, "config steps 200 → 150"),
        ({"body": "+ 1"}, "code of heat"),
        ({"op": "+"}, "code of physics.step"),
        ({"n": 9}, "upstream grid"),
        ({"version": 2}, "version 1 → 2"),
        ({"salt": "pepper"}, "salt"),
        ({"mesh": "0 0\n2 2\n"}, "input file mesh.msh"),
        ({"fakepkg": "2.0"}, "package fakepkg 1.0 → 2.0"),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(v),
)
def test_each_missing_instance_says_why(
    pytester: pytest.Pytester, calls: CallLog, change: dict[str, object], heat_reason: str
) -> None:
    _write_reason_project(pytester)
    plan = pytester.runpytest("--physpipe-plan")
    plan.stdout.fnmatch_lines(["grid *missing*new", "heat *missing*new"])
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter({"heat": 1})

    _write_reason_project(pytester, **change)
    plan = pytester.runpytest("--physpipe-plan")
    plan.stdout.fnmatch_lines([f"heat *missing*{heat_reason}*"])
    report = pytester.path / "report.json"
    result = pytester.runpytest("-v", f"--physpipe-report={report}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*computed*heat*({heat_reason}*)"])
    records = {r["name"]: r for r in json.loads(report.read_text())["stages"]}
    assert records["heat"]["status"] == "computed"
    assert records["heat"]["reason"].startswith(heat_reason)
    assert calls.take() == Counter({"heat": 1})


def test_summary_names_the_pickled_stages(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        class Mesh:
            pass

        @stage
        def mesh():
            return Mesh()

        @stage
        def table():
            return {"a": 1}

        def test_both(mesh, table):
            pass
        """,
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["stored as pickles: 1 instance(s) of mesh *"])
    pytester.runpytest().stdout.fnmatch_lines(["stored as pickles: 1 instance(s) of mesh *"])


def test_show_lists_what_the_fingerprint_covered_and_versions(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    _write_reason_project(pytester)
    (pytester.path / "physics.py").write_text(
        "import filelock\nimport numpy as np\n\nSCALE = 2\n\n\n"
        "def step(x):\n    assert filelock.FileLock\n    return float(np.sqrt(x)) * SCALE\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)
    status, text = _cli(pytester, "show", "heat")
    assert status == 0, text
    covers = text[text.index("covers:") :]
    assert "physics.step = " in covers
    assert "physics.SCALE = " in covers
    assert "<stage> = " in covers
    versions = text[text.index("versions:") : text.index("covers:")]
    # The stage's code reached filelock (through physics.step): its version is recorded, and
    # is no part of the key.
    assert "filelock = " in versions

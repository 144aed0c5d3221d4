"""Declaring stages (options, the slow marker, hooks, clear errors), run through pytester."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from physpipe_testing import CallLog

COMMON = """
import numpy as np
import pytest
from physlog import log
from pytest_physpipe import (
    ClusterOptions, Resources, Retry, StageConfig, StageContext, stage, sweep,
)


class GridConfig(StageConfig):
    n: int = 4
    length: float = 1.0
"""


def project(pytester: pytest.Pytester, body: str, **files: str) -> None:
    """A test module ``test_project.py``: the COMMON imports and config, then ``body``."""
    pytester.makepyfile(test_project=COMMON + textwrap.dedent(body), **files)


# -- declaration ----------------------------------------------------------------------------------


def test_config_comes_from_decorator_then_parameter_default_then_class(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        @stage
        def bare(config: GridConfig):
            return config.n

        @stage()
        def from_default(config: GridConfig = GridConfig(n=7)):
            return config.n

        @stage(config=GridConfig(n=9))
        def from_decorator(config: GridConfig = GridConfig(n=7)):
            return config.n

        @stage(config={"n": 11})
        def from_dict(config: GridConfig):
            return config.n

        @stage
        def no_config():
            return "plain"

        def test_configs(bare, from_default, from_decorator, from_dict, no_config):
            assert (bare, from_default, from_decorator, from_dict) == (4, 7, 9, 11)
            assert no_config == "plain"
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_upstream_parameters_form_the_dag_and_name_renames_the_fixture(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        @stage
        def grid(config: GridConfig) -> np.ndarray:
            log("grid")
            return np.linspace(0.0, config.length, config.n)

        @stage(name="mesh")
        def build_mesh(grid):
            log("mesh")
            return {"points": grid * 2}

        @stage
        def heat(mesh, grid, ctx: StageContext):
            log("heat")
            return float(mesh["points"].sum() + grid.sum())

        def test_heat(heat):
            assert heat == pytest.approx(6.0)

        def test_mesh(mesh, grid):
            assert list(mesh["points"]) == pytest.approx(list(grid * 2))

        def test_no_fixture_under_the_function_name(request):
            with pytest.raises(pytest.FixtureLookupError):
                request.getfixturevalue("build_mesh")
        """,
    )
    pytester.runpytest().assert_outcomes(passed=3)
    assert calls.take() == Counter({"grid": 1, "mesh": 1, "heat": 1})


def test_stages_in_conftest_and_a_stages_module(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(
        stages="""
        from physlog import log
        from pytest_physpipe import stage

        @stage
        def base():
            log("base")
            return [1, 2, 3]
        """
    )
    pytester.makeconftest(
        """
        from physlog import log
        from pytest_physpipe import stage
        from stages import base

        @stage
        def doubled(base):
            log("doubled")
            return [2 * x for x in base]
        """
    )
    pytester.makepyfile(
        test_a="""
        def test_doubled(doubled):
            assert doubled == [2, 4, 6]
        """,
        test_b="""
        from stages import base

        def test_base(base):
            assert base == [1, 2, 3]
        """,
    )
    pytester.runpytest().assert_outcomes(passed=2)
    assert calls.take() == Counter({"base": 1, "doubled": 1})


def test_options_are_recorded_on_the_spec(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        from pytest_physpipe.stage import registry

        @stage(
            version=3,
            resources=Resources(cpu=1, mem="1G", walltime="0:10:00"),
            slow=True,
            cluster=ClusterOptions(partition="short", account="phys", extra_args=["--x"]),
            retries=Retry(max_attempts=2, backoff=0.0, on=(OSError,)),
            codec="json",
        )
        def solver(config: GridConfig):
            return {"n": config.n}

        def test_spec(solver):
            spec = registry.get("solver")
            assert spec.version == 3
            assert spec.resources == Resources(cpu=1, mem="1G", walltime="0:10:00")
            assert spec.slow and spec.codec == "json"
            assert spec.cluster == ClusterOptions(
                partition="short", account="phys", extra_args=("--x",)
            )
            assert spec.retry == Retry(max_attempts=2, backoff=0.0, on=(OSError,))
            assert solver == {"n": 4}
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("cluster={'partition': 1, 'bogus': 2}", "cluster"),
        ("resources={'cpu': 0}", "resources"),
        ("retries=-1", "retries"),
        ("colour='red'", "unknown option"),
        ("ids=['a']", "ids= given without params="),
        ("params=[]", "params= is empty"),
    ],
)
def test_invalid_options_are_errors_naming_the_stage(
    pytester: pytest.Pytester, calls: CallLog, options: str, message: str
) -> None:
    project(
        pytester,
        f"""
        @stage({options})
        def broken(config: GridConfig):
            return 1

        def test_broken(broken):
            pass
        """,
    )
    result = pytester.runpytest()
    assert result.ret != 0
    result.stdout.fnmatch_lines([f"*{message}*"])
    if message != "unknown option":
        result.stdout.fnmatch_lines(["*broken*"])


def test_async_stages_run_to_completion(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        import asyncio

        @stage
        async def fetched(config: GridConfig):
            await asyncio.sleep(0)
            log("fetched")
            return [config.n, config.n]

        @stage
        async def summed(fetched):
            await asyncio.sleep(0)
            return sum(fetched)

        def test_async(fetched, summed):
            assert fetched == [4, 4]
            assert summed == 8
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter({"fetched": 1})
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter()


# -- ctx ------------------------------------------------------------------------------------------


def test_stage_context(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        import logging
        from pytest_physpipe.keys import seed_from_key

        @stage(resources=Resources(cpu=1))
        def noisy(config: GridConfig, ctx: StageContext):
            assert ctx.workdir.is_dir()
            (ctx.workdir / "scratch.txt").write_text("x")
            assert ctx.config == config
            assert isinstance(ctx.log, logging.LoggerAdapter)
            assert ctx.log.logger is logging.getLogger("physpipe.noisy")
            assert ctx.resources.cpus == 1
            ctx.metric("energy", 0.5)
            ctx.artifact("note.txt", b"hello")
            return {
                "key": ctx.key,
                "seed": ctx.seed,
                "draws": ctx.rng.normal(size=3).tolist(),
                "workdir": str(ctx.workdir),
            }

        def test_ctx(noisy, physpipe):
            record = physpipe.record("noisy")
            assert noisy["key"] == record.key
            assert noisy["seed"] == seed_from_key(record.key)
            expected = np.random.default_rng(noisy["seed"]).normal(size=3).tolist()
            assert noisy["draws"] == expected
            assert record.metrics == {"energy": 0.5}
            with open(record.artifacts["note.txt"], "rb") as handle:
                assert handle.read() == b"hello"
            import os
            assert not os.path.exists(noisy["workdir"])  # scratch is cleaned up
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)
    # On a hit, metrics and artifacts come back from the store.
    pytester.runpytest().assert_outcomes(passed=1)


def test_ctx_log_is_one_logger_per_stage_naming_the_instance(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    # pytest visits every logger on each test phase: a logger per swept instance made long
    # sweeps quadratic. The instance is named in the message and in `physpipe_instance`.
    project(
        pytester,
        """
        import logging

        @stage(params=[GridConfig(n=n) for n in range(30)])
        def swept(config: GridConfig, ctx: StageContext):
            ctx.log.warning("solved %d%%", config.n)
            return config.n

        def test_swept(swept):
            pass

        def test_loggers(caplog):
            names = [n for n in logging.Logger.manager.loggerDict if n.startswith("physpipe.sw")]
            assert names == ["physpipe.swept"]
        """,
    )
    result = pytester.runpytest("-p", "no:randomly", "-o", "log_level=WARNING", "-rA")
    result.assert_outcomes(passed=31)
    result.stdout.fnmatch_lines(
        ["*WARNING*physpipe.swept*test_project.py:*swept[[]n=7[]]: solved 7%*"]
    )


# -- sweeps and overrides -------------------------------------------------------------------------


def test_sweep_fans_out_downstream_stages_and_tests(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        @stage(params=sweep(GridConfig, n=[2, 3], length=[1.0, 2.0]))
        def grid(config: GridConfig):
            log(f"grid {config.n} {config.length}")
            return np.linspace(0.0, config.length, config.n)

        @stage
        def total(grid):
            log(f"total {len(grid)}")
            return float(grid.sum())

        def test_total(grid, total):
            assert total == pytest.approx(float(np.sum(grid)))
        """,
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*test_total?n=2-length=1.0? PASSED*",
            "*test_total?n=2-length=2.0? PASSED*",
            "*test_total?n=3-length=1.0? PASSED*",
            "*test_total?n=3-length=2.0? PASSED*",
        ]
    )
    found = calls.take()
    assert sum(v for k, v in found.items() if k.startswith("grid")) == 4
    assert found["total 2"] == 2
    assert found["total 3"] == 2
    assert set(found.values()) == {1, 2}
    result = pytester.runpytest("--physpipe-plan")
    result.stdout.fnmatch_lines(
        ["grid[[]n=2-length=1.0[]] *cached*", "total[[]n=2-length=1.0[]] *cached*"],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(["8 stage instance(s): 8 cached, 0 missing"])


def test_sweep_with_explicit_ids_and_validation(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        @stage(params=[GridConfig(n=1), {"n": 2}], ids=["coarse", "fine"])
        def grid(config: GridConfig):
            return config.n

        def test_grid(grid):
            assert grid in (1, 2)

        def test_sweep_errors():
            with pytest.raises(ValueError, match="has no field 'm'"):
                sweep(GridConfig, m=[1])
            with pytest.raises(ValueError, match="needs a list"):
                sweep(GridConfig, n=3)
            assert sweep(GridConfig, n=[1, 2]) == [GridConfig(n=1), GridConfig(n=2)]
        """,
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_grid?coarse? PASSED*", "*test_grid?fine? PASSED*"])


def test_indirect_parametrization_overrides_config(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        @stage
        def grid(config: GridConfig):
            log(f"grid {config.n}")
            return np.zeros(config.n)

        @stage
        def size(grid):
            log(f"size {len(grid)}")
            return len(grid)

        @pytest.mark.parametrize("grid", [GridConfig(n=2), {"n": 3}], indirect=True)
        def test_override(size, physpipe):
            assert size in (2, 3)
            assert physpipe.record("grid").config["n"] == size

        def test_default(size):
            assert size == 4
        """,
    )
    pytester.runpytest().assert_outcomes(passed=3)
    assert calls.take() == Counter(
        {"grid 2": 1, "grid 3": 1, "grid 4": 1, "size 2": 1, "size 3": 1, "size 4": 1}
    )


def test_physpipe_set_overrides_a_field_for_the_run(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        class ListConfig(StageConfig):
            values: list[int] = [1]
            flag: bool = False

        @stage
        def grid(config: GridConfig):
            log(f"grid {config.n} {config.length}")
            return config.n

        @stage
        def listed(config: ListConfig):
            return (config.values, config.flag)

        def test_grid(grid, listed, physpipe):
            assert physpipe.record("grid").config == {"n": grid, "length": 0.001}
            assert grid == 32
            assert listed == ([1, 2], True)
        """,
    )
    result = pytester.runpytest(
        "--physpipe-set",
        "grid.n=32",
        "--physpipe-set",
        "grid.length=1e-3",
        "--physpipe-set",
        "listed.values=[1, 2]",
        "--physpipe-set",
        "listed.flag=true",
    )
    result.assert_outcomes(passed=1)
    assert calls.take() == Counter({"grid 32 0.001": 1})


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("nosuch.n=3", ["*--physpipe-set*no stage named 'nosuch'*grid*"]),
        ("grid.m=3", ["*--physpipe-set grid.m*no config field 'm'*n, length*"]),
        ("grid.n=many", ["*stage 'grid'*invalid GridConfig*--physpipe-set*", "*n*"]),
        ("grid", ["*--physpipe-set 'grid': expected NAME.FIELD=VALUE*"]),
    ],
)
def test_physpipe_set_errors_are_usage_errors(
    pytester: pytest.Pytester, calls: CallLog, setting: str, expected: list[str]
) -> None:
    project(
        pytester,
        """
        @stage
        def grid(config: GridConfig):
            log("grid")
            return config.n

        def test_grid(grid):
            pass
        """,
    )
    result = pytester.runpytest("--physpipe-set", setting)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(expected)
    assert calls.take() == Counter()


# -- retries, cache=False, codecs, stored values --------------------------------------------------


def test_retries(
    pytester: pytest.Pytester, calls: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []  # the inner run is in-process: record the backoff, do not wait
    monkeypatch.setattr("pytest_physpipe.execute.time.sleep", sleeps.append)
    project(
        pytester,
        """
        from physlog import LOG

        def attempts(name):
            return LOG.read_text().split().count(name) if LOG.exists() else 0

        @stage(retries=2)
        def flaky():
            log("flaky")
            if attempts("flaky") < 3:
                raise RuntimeError("transient")
            return "ok"

        @stage(retries=Retry(max_attempts=3, backoff=0.0, on=(TimeoutError,)))
        def picky():
            log("picky")
            raise ValueError("not retried")

        @stage(retries=Retry(max_attempts=2, backoff=0.0, on=(TimeoutError,)))
        def hopeless():
            log("hopeless")
            raise TimeoutError("always")

        def test_flaky(flaky):
            assert flaky == "ok"

        def test_picky(picky):
            pass

        def test_hopeless(hopeless):
            pass
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*ValueError: not retried*", "*TimeoutError: always*"])
    assert calls.take() == Counter({"flaky": 3, "picky": 1, "hopeless": 2})
    assert sorted(sleeps) == [0.0, 2.0, 4.0]  # retries=2: backoff 2**attempt; Retry(backoff=0)


def test_cache_false_is_computed_once_per_process_and_never_stored(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        import threading

        class Solver:
            def __init__(self):
                self.lock = threading.Lock()  # unpicklable: a live object

        @stage(cache=False)
        def solver():
            log("solver")
            return Solver()

        @stage
        def solution(solver):
            log("solution")
            return 42

        SEEN = []

        def test_a(solver, solution):
            SEEN.append(solver)
            assert solution == 42

        def test_b(solver):
            SEEN.append(solver)
            assert SEEN[0] is SEEN[-1]
        """,
    )
    pytester.runpytest().assert_outcomes(passed=2)
    assert calls.take() == Counter({"solver": 1, "solution": 1})
    store = pytester.path / ".physpipe"
    metas = [json.loads(p.read_text()) for p in store.glob("entries/*/*/meta.json")]
    assert [m["record"]["name"] for m in metas] == ["solution"]
    # A new process computes the live object again, and still hits the stored downstream.
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    assert calls.take() == Counter({"solver": 1})


def test_codecs_through_the_plugin(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makeconftest(
        """
        class Text:
            def __init__(self, text):
                self.text = text

        class TextCodec:
            name = "text"

            def accepts(self, value):
                return isinstance(value, Text)

            def encode(self, value, dest):
                (dest / "value.txt").write_text(value.text)
                return {"length": len(value.text)}

            def decode(self, src, meta, *, mmap_min):
                text = (src / "value.txt").read_text()
                assert len(text) == meta["length"]
                return Text(text)

        def pytest_physpipe_register_codecs(registry):
            registry.add(TextCodec())
        """
    )
    project(
        pytester,
        """
        from conftest import Text
        from fractions import Fraction

        @stage(codec="text")
        def note():
            return Text("hello")

        @stage(codec="json")
        def data():
            return {"a": [1, 2]}

        @stage(codec="pickle")
        def frac():
            return Fraction(1, 3)

        @stage(codec="npy")
        def arr():
            return np.arange(3)

        def test_values(note, data, frac, arr):
            assert note.text == "hello"
            assert data == {"a": [1, 2]}
            assert frac == Fraction(1, 3)
            assert list(arr) == [0, 1, 2]
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)
    codecs = sorted(
        json.loads(p.read_text())["codec"]
        for p in (pytester.path / ".physpipe").glob("entries/*/*/meta.json")
    )
    assert codecs == ["json", "npy", "pickle", "text"]
    pytester.runpytest().assert_outcomes(passed=1)  # and back from the store


def test_codec_that_refuses_the_value_is_an_error(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        @stage(codec="npy")
        def wrong():
            return {"not": "an array"}

        def test_wrong(wrong):
            pass
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*stage 'wrong' returned a dict*codec=*cache=False*"])


def test_unstorable_value_names_stage_and_type(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        import threading

        @stage
        def live():
            return threading.Lock()

        def test_live(live):
            pass
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*stage 'live'*lock*codec=*cache=False*"])
    assert not list((pytester.path / ".physpipe").glob("entries/*/*"))
    assert not list((pytester.path / ".physpipe").glob("tmp/*"))


def test_consumers_get_the_value_as_stored_in_fresh_and_cached_runs(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        @stage
        def fields():
            log("fields")
            return {
                "u": np.arange(4.0),
                "pair": (1, 2.5),
                "nested": [np.ones(2), {"t": (3,)}],
                "scalar": 1.5,
            }

        @stage
        def plain():
            return np.zeros(3)

        def check(fields, plain):
            assert not fields["u"].flags.writeable
            assert not plain.flags.writeable
            with pytest.raises(ValueError):
                fields["u"][0] = 1.0
            assert type(fields["pair"]) is tuple and fields["pair"] == (1, 2.5)
            assert type(fields["nested"]) is list
            assert type(fields["nested"][1]["t"]) is tuple
            assert not fields["nested"][0].flags.writeable
            assert fields["scalar"] == 1.5

        @stage
        def downstream(fields, plain):
            check(fields, plain)  # a stage sees the stored value too
            return 1

        def test_value(fields, plain, downstream):
            check(fields, plain)
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter({"fields": 1})
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter()


# -- the slow marker ------------------------------------------------------------------------------


def test_slow_marker_follows_the_dag(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        @stage
        def fast():
            log("fast")
            return 1

        @stage(slow=True)
        def expensive(fast):
            log("expensive")
            return 2

        @stage
        def after(expensive):
            log("after")
            return 3

        def test_fast(fast):
            pass

        def test_direct(expensive):
            pass

        def test_transitive(after):
            pass

        def test_none():
            pass
        """,
    )
    result = pytester.runpytest("--strict-markers", "-m", "not slow", "-v")
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines(["*test_fast PASSED*", "*test_none PASSED*"])
    assert calls.take() == Counter({"fast": 1})
    result = pytester.runpytest("--strict-markers", "-m", "slow", "-v")
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines(["*test_direct PASSED*", "*test_transitive PASSED*"])
    assert calls.take() == Counter({"expensive": 1, "after": 1})
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.slow:*"])


# -- hooks ----------------------------------------------------------------------------------------


def test_hooks_are_called_as_documented(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makeconftest(
        """
        import pytest
        from physlog import log

        def pytest_physpipe_stage_start(record):
            assert record.status == "computed"
            log(f"start {record.name} {record.key}")

        def pytest_physpipe_stage_end(record, outcome):
            log(f"end {record.name} {outcome} {record.metrics.get('wall_s') is not None}")
            if outcome == "failed":
                log(f"error {record.error}")

        @pytest.hookimpl(wrapper=True)
        def pytest_physpipe_run_stage(record, ctx, call):
            log(f"around {record.name}")
            value = yield
            ctx.metric("wall_s", 0.25)
            return value
        """
    )
    project(
        pytester,
        """
        @stage
        def good():
            log("good")
            return 1

        @stage
        def bad():
            raise RuntimeError("boom")

        def test_good(good, physpipe):
            assert physpipe.record("good").metrics == {"wall_s": 0.25}

        def test_bad(bad):
            pass
        """,
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    lines = calls.lines()
    calls.take()
    good_key = next(line.split()[2] for line in lines if line.startswith("start good"))
    assert lines.index(f"start good {good_key}") < lines.index("around good")
    assert lines.index("around good") < lines.index("good") < lines.index("end good computed True")
    assert "around bad" in lines
    assert "end bad failed False" in lines
    assert "error RuntimeError: boom" in lines
    # A hit computes nothing: no start/end/run_stage calls.
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, errors=1)
    assert [line for line in calls.lines() if "good" in line] == []


# -- errors ---------------------------------------------------------------------------------------


def test_cycle_is_a_usage_error_naming_the_cycle(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        @stage
        def first(third):
            return 1

        @stage
        def second(first):
            return 2

        @stage
        def third(second):
            return 3

        def test_loop(third):
            pass
        """,
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*stages form a cycle: first -> third -> second -> first.*"])


def test_parameter_that_is_not_a_stage(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        @pytest.fixture(scope="session")
        def resolution():
            return 3

        @stage
        def grid(resolution):
            return resolution

        def test_grid(grid):
            pass
        """,
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*stage 'grid'*takes parameter 'resolution', which is not a stage*make 'resolution' a "
            "@stage*config*"
        ]
    )


def test_a_stage_that_became_a_plain_fixture_is_no_stage(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    # The registry is process-wide; a definition from an earlier in-process run must not count.
    body = """
        {decorator}
        def resolution():
            return 3

        @stage
        def grid(resolution):
            return resolution

        def test_grid(grid):
            assert grid == 3
        """
    project(pytester, body.format(decorator="@stage"))
    pytester.runpytest().assert_outcomes(passed=1)
    project(pytester, body.format(decorator='@pytest.fixture(scope="session")'))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'resolution', which is not a stage*"])


def test_parameter_naming_no_fixture_at_all(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        @stage
        def grid(nowhere):
            return 1

        def test_grid(grid):
            pass
        """,
    )
    result = pytester.runpytest()
    assert result.ret != 0
    result.stdout.no_fnmatch_line("*passed*")
    output = result.stdout.str() + result.stderr.str()
    assert "nowhere" in output


def test_invalid_config_names_the_stage_and_pydantic_message(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    project(
        pytester,
        """
        @stage(config={"n": "many"})
        def grid(config: GridConfig):
            return config.n

        def test_grid(grid):
            pass
        """,
    )
    result = pytester.runpytest()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*stage 'grid'*invalid GridConfig*", "*n*", "*valid integer*"])


def test_invalid_indirect_config_names_the_stage(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        @stage
        def grid(config: GridConfig):
            return config.n

        @pytest.mark.parametrize("grid", [{"n": 2, "colour": "red"}], indirect=True)
        def test_grid(grid):
            pass
        """,
    )
    result = pytester.runpytest()
    assert result.ret != 0
    output = result.stdout.str() + result.stderr.str()
    assert "stage 'grid'" in output
    assert "colour" in output
    assert "Extra inputs are not permitted" in output


def test_unwritable_store_is_a_clear_error(pytester: pytest.Pytester, calls: CallLog) -> None:
    # Tests run as root, so chmod would not stop a write: put the store under a regular file.
    blocker = pytester.path / "not-a-dir"
    blocker.write_text("")
    project(
        pytester,
        """
        @stage
        def grid():
            log("grid")
            return 1

        def test_grid(grid):
            pass
        """,
    )
    result = pytester.runpytest("--physpipe-dir", str(blocker / "store"))
    assert result.ret != 0
    output = result.stdout.str() + result.stderr.str()
    assert "cannot create or write the physpipe store" in output
    assert "--physpipe-dir" in output
    assert blocker.is_file()


def test_stage_with_the_plugin_disabled_says_so(pytester: pytest.Pytester, calls: CallLog) -> None:
    project(
        pytester,
        """
        @stage
        def grid():
            return 1

        def test_grid(grid):
            pass
        """,
    )
    result = pytester.runpytest("-p", "no:physpipe")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*stage 'grid' was requested but the physpipe plugin is not active*"]
    )

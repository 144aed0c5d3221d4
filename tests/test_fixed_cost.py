"""What every run pays for the plugin, whatever its size, and what it no longer pays.

A cached rerun of one test still imports the plugin, declares its stages, plans, hits and sums
up; each test here fails where a module or a class that such a run never uses is back on its
path (see ``docs/decisions.md#fixed-cost``), and says what must stay the same meanwhile.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import PlainSerializer

from pytest_physpipe import Gathered, InputFile, Retry, StageConfig
from pytest_physpipe.codefp import CodeFingerprint
from pytest_physpipe.fanin import Gather
from pytest_physpipe.instance import GatherGroup, GatherRef
from pytest_physpipe.models import _path_str
from pytest_physpipe.resources import Budget, Grant
from pytest_physpipe.scheduling.policy import StageCosts

RUN_PROBE = """
import sys

def pytest_sessionfinish(session):
    names = sorted(sys.modules)
    with open("run-modules.txt", "w") as handle:
        handle.write("\\n".join(names))
"""

CONFTEST = """
from pytest_physpipe import StageConfig, stage

class FcPoint(StageConfig):
    i: int = 0

@stage(params=[FcPoint(i=i) for i in range(2)])
def fc_point(config: FcPoint) -> dict:
    return {"i": config.i}
"""


def _cached_rerun_modules(pytester: pytest.Pytester) -> list[str]:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_point="def test_point(fc_point):\n    assert fc_point['i'] >= 0\n")
    pytester.makepyfile(run_probe=RUN_PROBE)
    pytester.runpytest_subprocess().assert_outcomes(passed=2)
    result = pytester.runpytest_subprocess("-p", "run_probe")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 hit, 0 computed*"])
    return (pytester.path / "run-modules.txt").read_text().split()


def test_a_cached_rerun_leaves_what_it_does_not_use(pytester: pytest.Pytester) -> None:
    imported = _cached_rerun_modules(pytester)
    assert "pytest_physpipe.store.entries" in imported  # it did hit the store
    # InputFile's serializer is set without pydantic's module of serializer classes.
    assert "pydantic.functional_serializers" not in imported
    # xdist is installed here but not active (no -n): its hooks are not registered.
    assert [m for m in imported if m.startswith("pytest_physpipe.scheduling")] == []
    # No dataclass of the package that such a run imports compiles methods at import (about
    # 1 ms a class): their methods are written in their modules or in pytest_physpipe.frozen.
    generated = [
        f"{name}.{cls.__qualname__}.{method}"
        for name in imported
        if name.startswith("pytest_physpipe")
        for cls in vars(importlib.import_module(name)).values()
        if isinstance(cls, type) and cls.__module__ == name and dataclasses.is_dataclass(cls)
        for method, function in vars(cls).items()
        if inspect.isfunction(function)
        and inspect.unwrap(function).__code__.co_filename == "<string>"
    ]
    assert generated == []


# Each converted record, two equal instances and one that differs, built as the package does.
RECORDS = [
    (Gather, {"stage": "a", "over": ("x",)}, {"stage": "a"}),
    (Gathered, {"coords": {"n": 1}, "value": [1.0], "key": "k"}, None),
    (Retry, {"max_attempts": 2, "backoff": 0.0, "on": (KeyError,)}, {}),
    (GatherRef, {"key": "k", "coords": {"n": 1}}, None),
    (Budget, {"cpus": 2, "gpu_ids": ("0",)}, {"cpus": 2, "gpu_ids": ()}),
    (
        Grant,
        {"cpus": 1, "cpu_ids": (0,), "gpu_ids": ()},
        {"cpus": 1, "cpu_ids": (1,), "gpu_ids": ()},
    ),
    (CodeFingerprint, {"digest": "d", "parts": {"<stage>": "d"}}, {"digest": "e"}),
]


@pytest.mark.parametrize(
    ("cls", "fields", "other"), RECORDS, ids=lambda v: getattr(v, "__name__", "")
)
def test_records_behave_as_the_frozen_dataclasses_they_were(
    cls: type[Any], fields: dict[str, Any], other: dict[str, Any] | None
) -> None:
    one, two = cls(**fields), cls(**fields)
    assert one == two
    assert one is not two
    assert not one.__ne__(two)
    if other is not None:
        assert one != cls(**other)
    try:  # hashed by its fields, as a frozen dataclass is: a dict among them cannot be
        expected: int | None = hash((*fields.values(),))
    except TypeError:
        expected = None
    if expected is None:
        with pytest.raises(TypeError, match="unhashable"):
            hash(one)
    else:
        assert hash(one) == hash(two)
    assert one != (*fields.values(),)  # a record is not a tuple of its fields
    for name in fields:
        with pytest.raises(
            dataclasses.FrozenInstanceError, match=f"cannot assign to field '{name}'"
        ):
            setattr(one, name, None)
        with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field"):
            delattr(one, name)
    assert dataclasses.replace(one) == one
    assert dataclasses.asdict(one) == dataclasses.asdict(two)
    assert [f.name for f in dataclasses.fields(one)] == list(inspect.signature(cls).parameters)
    if "__repr__" not in vars(cls):
        shown = ", ".join(
            f"{f.name}={getattr(one, f.name)!r}" for f in dataclasses.fields(one) if f.repr
        )
        assert repr(one) == f"{cls.__qualname__}({shown})"


def test_reprs_are_those_of_the_dataclasses() -> None:
    assert repr(Gathered({"n": 1}, [1.0], "k")) == "Gathered(coords={'n': 1}, key='k')"
    assert repr(Budget(2, ("0",))) == "Budget(cpus=2, gpu_ids=('0',))"
    assert repr(Gather("a", ("x",))) == "gather('a', over=['x'])"  # its own, as before
    group = GatherGroup(param="p", ident="level=1", coords={}, refs=())
    assert repr(group) == "level=1"
    assert group != GatherGroup("p", "level=1", {}, ())
    assert Retry() == Retry(3, 2.0, (TimeoutError,))
    assert Retry(on=KeyError).on == (KeyError,)  # type: ignore[arg-type]  # one class: a tuple of one


def test_a_plain_run_still_records_compute_times_for_physpipe_dist(
    pytester: pytest.Pytester,
) -> None:
    # What --physpipe-dist schedules by: a plain run (xdist installed, not active) that
    # computed something records it, as the xdist hooks did when they were always registered.
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_point="def test_point(fc_point):\n    assert fc_point['i'] >= 0\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=2)
    costs = StageCosts.load(pytester.path / ".physpipe")
    assert set(costs.labels) == {"fc_point[i=0]", "fc_point[i=1]"}
    assert set(costs.names) == {"fc_point"}
    pytester.runpytest_subprocess("-p", "no:xdist").assert_outcomes(passed=2)  # a hit: no change
    assert StageCosts.load(pytester.path / ".physpipe").labels == costs.labels


class _OldInputs(StageConfig):
    f: Annotated[Path, PlainSerializer(_path_str, return_type=str), "physpipe:InputFile"]
    g: Annotated[Path, PlainSerializer(_path_str, return_type=str), "physpipe:InputFile"] | None
    h: list[Annotated[Path, PlainSerializer(_path_str, return_type=str), "physpipe:InputFile"]]


class _NewInputs(StageConfig):
    f: InputFile
    g: InputFile | None
    h: list[InputFile]


def _dumps(cls: type[StageConfig]) -> list[Any]:
    config = cls.model_validate({"f": "data/a.dat", "g": Path("/abs/b"), "h": ["c", Path("d")]})
    schemas = [cls.model_json_schema(mode=mode) for mode in ("validation", "serialization")]
    for schema in schemas:
        schema.pop("title")
    return [
        config.model_dump(),
        config.model_dump(mode="json"),
        config.model_dump_json(),
        config.__pydantic_serializer__.to_python(config),
        json.dumps(schemas, sort_keys=True),
    ]


def test_an_input_file_dumps_as_it_did_with_pydantic_s_plain_serializer() -> None:
    # Keys encode a config through its dump: the path's text, in Python and JSON alike.
    assert _dumps(_NewInputs) == _dumps(_OldInputs)
    assert _NewInputs(f=Path("x"), g=None, h=[]).model_dump() == {"f": "x", "g": None, "h": []}

"""What every run pays for the plugin, whatever its size, and what it no longer pays.

A cached rerun of one test still imports the plugin, declares its stages, plans, hits and sums
up; each test here fails where a module or a class that such a run never uses is back on its
path (see ``docs/decisions.md#fixed-cost``), and says what must stay the same meanwhile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import PlainSerializer

from pytest_physpipe import InputFile, StageConfig
from pytest_physpipe.models import _path_str

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

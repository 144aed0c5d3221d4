"""The codec registry's order, and the scientific codecs it loads only when something needs them.

A hit on a json or npy entry must not import the scientific codecs' module (a cached rerun pays
pytest's module loader for every module it imports); every other use sees the registry as if
they had been registered eagerly, in the same order.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_physpipe.errors import CodecError
from pytest_physpipe.store.codecs import CodecRegistry

BUILT_IN = ["npy", "json", "tree", "pickle"]
SCIENTIFIC = ["scipy-sparse", "pandas", "xarray"]


class Named:
    """A plugin codec under any name (what ``pytest_physpipe_register_codecs`` adds)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def accepts(self, value: object) -> bool:
        return False

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        raise NotImplementedError

    def decode(self, src: Path, meta: Any, *, mmap_min: int) -> object:
        raise NotImplementedError


def test_the_order_is_built_in_then_scientific_then_added() -> None:
    registry = CodecRegistry()
    registry.add(Named("text"))
    assert registry.names() == [*BUILT_IN, *SCIENTIFIC, "text"]


def test_a_codec_added_under_a_scientific_name_replaces_it_in_its_place() -> None:
    registry = CodecRegistry()
    mine = Named("pandas")
    registry.add(Named("text"))
    registry.add(mine)
    assert registry.names() == [*BUILT_IN, *SCIENTIFIC, "text"]
    assert registry.get("pandas") is mine


def test_a_codec_added_under_a_built_in_name_replaces_it() -> None:
    registry = CodecRegistry()
    mine = Named("json")
    registry.add(mine)
    assert registry.get("json") is mine
    assert registry.names() == [*BUILT_IN, *SCIENTIFIC]


def test_scientific_codecs_answer_by_name_before_anything_listed_them() -> None:
    registry = CodecRegistry()
    assert "xarray" in registry
    assert registry.get("scipy-sparse").name == "scipy-sparse"
    assert "nonesuch" not in registry
    with pytest.raises(CodecError, match=r"no codec named .nonesuch.*scipy-sparse"):
        registry.get("nonesuch")


PROBE = """
import sys
from pytest_physpipe.errors import CodecError
from pytest_physpipe.store.codecs import CodecRegistry
registry = CodecRegistry()
registry.get("json"), registry.get("npy"), registry.get("pickle")
print("pytest_physpipe.store.scientific" in sys.modules)
registry.names()
print("pytest_physpipe.store.scientific" in sys.modules)
"""


def test_the_built_in_codecs_do_not_import_the_scientific_ones() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]

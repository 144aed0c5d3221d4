"""Read-ahead: a hit loads the next planned small entries with it; what it hands out is what a
plain lookup would have served, once, and what it cannot load is left to the plain path."""

from __future__ import annotations

import json
import textwrap
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from pytest_physpipe import StageConfig, stage
from pytest_physpipe.errors import CorruptEntryWarning
from pytest_physpipe.execute import StageRunner
from pytest_physpipe.plan import Planner, StageInstance
from pytest_physpipe.readahead import MAX_ENTRY_BYTES, MAX_WINDOW, MIN_WINDOW, ReadAhead
from pytest_physpipe.stage import registry
from pytest_physpipe.store.entries import Store

if TYPE_CHECKING:
    from physpipe_testing import CallLog


class RaConfig(StageConfig):
    i: int = 0


@stage
def ra_point(config: RaConfig) -> dict[str, int]:
    return {"i": config.i, "square": config.i * config.i}


@stage
def ra_array(config: RaConfig) -> np.ndarray:
    return np.arange(config.i, dtype=np.float64)


def _instances(name: str, values: range | list[int]) -> list[StageInstance]:
    spec = registry.get(name)
    assert spec is not None
    planner = Planner(registry=registry)
    return [planner.instance(spec, RaConfig(i=i), {}) for i in values]


def _stored(tmp_path: Path, name: str, values: range | list[int]) -> tuple[Store, list[Any]]:
    store = Store(tmp_path / "store")
    instances = _instances(name, values)
    runner = StageRunner(store=store, run_id="first")
    for instance in instances:
        runner.provide(instance, {})
    return store, instances


def _reader(store: Store, instances: list[StageInstance], **options: Any) -> StageRunner:
    runner = StageRunner(store=store, run_id="second", **options)
    runner.read_ahead(instances)
    return runner


def test_a_value_read_ahead_is_handed_out_once(tmp_path: Path) -> None:
    store, instances = _stored(tmp_path, "ra_point", range(6))
    ahead = ReadAhead(store, [(i.key, i.name) for i in instances])
    first = ahead.take(instances[0].key)
    assert first is not None
    assert ahead.held == MIN_WINDOW - 1  # the window read the next entries with the first
    second = ahead.take(instances[1].key)
    assert second is not None
    assert second.value == {"i": 1, "square": 1}
    assert ahead.take(instances[1].key) is None  # handed out: a second lookup loads afresh
    runner = _reader(store, instances)
    hits = [runner.lookup(instances[2]), runner.lookup(instances[2])]
    assert hits[0] is not None
    assert hits[1] is not None
    assert hits[0].record is not hits[1].record
    assert hits[0].value is not hits[1].value


def test_a_hit_read_ahead_is_the_hit_a_plain_lookup_makes(tmp_path: Path) -> None:
    store, instances = _stored(tmp_path, "ra_point", range(5))
    plain = StageRunner(store=store, run_id="second", worker="gw1")
    ahead = _reader(store, instances, worker="gw1")
    for instance in instances:
        mine, theirs = ahead.lookup(instance), plain.lookup(instance)
        assert mine is not None
        assert theirs is not None
        assert mine.value == theirs.value
        assert mine.record == theirs.record
        assert mine.record.model_fields_set == theirs.record.model_fields_set
    assert ahead._ahead is not None
    assert ahead._ahead.held == 0
    assert ahead._ahead.handed_out == 5  # they did come from the read-ahead


def test_an_entry_replaced_after_read_ahead_serves_the_verified_version_read(
    tmp_path: Path,
) -> None:
    store, instances = _stored(tmp_path, "ra_point", range(4))
    runner = _reader(store, instances)
    assert runner.lookup(instances[0]) is not None  # reads 1..3 ahead
    target = instances[2]
    loaded = store.load(target.key)
    assert loaded is not None
    store.commit(
        target.key, value={"replaced": True}, record=loaded.record, run_id="x", replace=True
    )
    served = runner.lookup(target)
    assert served is not None
    assert served.value == {"i": 2, "square": 4}  # what a lookup a moment earlier served
    again = runner.lookup(target)  # handed out once: the next lookup sees the new entry
    assert again is not None
    assert again.value == {"replaced": True}


def test_an_entry_removed_after_read_ahead_is_served_once_then_missing(tmp_path: Path) -> None:
    store, instances = _stored(tmp_path, "ra_point", range(4))
    runner = _reader(store, instances)
    assert runner.lookup(instances[0]) is not None
    assert store.remove(instances[3].key)
    served = runner.lookup(instances[3])
    assert served is not None
    assert served.value == {"i": 3, "square": 9}
    assert runner.lookup(instances[3]) is None


def test_a_corrupt_entry_met_by_read_ahead_is_warned_about_and_healed(tmp_path: Path) -> None:
    store, instances = _stored(tmp_path, "ra_point", range(4))
    broken = instances[2]
    value_path = store.entry_dir(broken.key) / "value.json"
    value_path.write_text(value_path.read_text().replace("4", "5"))
    runner = _reader(store, instances)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runner.provide(instances[0], {}).value == {"i": 0, "square": 0}
    assert runner._ahead is not None
    assert instances[3].key in runner._ahead._ahead  # the window went past it ...
    assert broken.key not in runner._ahead._ahead  # ... found it corrupt, and did not hold it
    with pytest.warns(CorruptEntryWarning, match="corrupt.*recomputing"):
        served = runner.provide(broken, {})
    assert served.value == {"i": 2, "square": 4}
    assert served.record.status == "computed"
    healed = store.load(broken.key, full_verify=True)
    assert healed is not None
    assert healed.value == {"i": 2, "square": 4}


def test_large_and_codec_decoded_entries_are_not_read_ahead(tmp_path: Path) -> None:
    small = MAX_ENTRY_BYTES // 8 // 2
    large = MAX_ENTRY_BYTES // 8 * 2
    store, instances = _stored(tmp_path, "ra_array", [small, small + 1, large, small + 2])
    ahead = ReadAhead(store, [(i.key, i.name) for i in instances])
    assert ahead.take(instances[0].key) is not None
    assert instances[1].key in ahead._ahead
    assert instances[2].key not in ahead._ahead
    assert ahead.take(instances[2].key) is None  # the plain lookup maps it
    assert "ra_array" in ahead._large  # its stage is not read ahead again
    assert ahead.take(instances[3].key) is None
    loaded = store.load(instances[2].key)
    assert loaded is not None
    assert loaded.value.shape == (large,)


def test_a_rebuilt_stage_is_not_served_from_the_read_ahead(tmp_path: Path) -> None:
    store, instances = _stored(tmp_path, "ra_point", range(4))
    runner = _reader(store, instances, rebuild=frozenset({"ra_point"}))
    assert all(runner.lookup(instance) is None for instance in instances)


def test_the_window_grows_while_used_and_restarts_small_after_a_jump(tmp_path: Path) -> None:
    store, instances = _stored(tmp_path, "ra_point", range(120))
    ahead = ReadAhead(store, [(i.key, i.name) for i in instances])
    held = []
    for instance in instances[:60]:
        assert ahead.take(instance.key) is not None
        held.append(ahead.held)
    assert max(held) == MAX_WINDOW
    ahead.take(instances[100].key)  # a jump: an xdist worker's next chunk
    assert ahead.held == MIN_WINDOW - 1
    assert all(ahead.take(i.key) is not None for i in instances[101:])
    again = ahead.take(instances[59].key)  # back to one handed out before: read afresh
    assert again is not None
    assert ahead.held == MIN_WINDOW - 1


def test_keys_outside_the_plan_leave_the_window_alone(tmp_path: Path) -> None:
    store, instances = _stored(tmp_path, "ra_point", range(8))
    ahead = ReadAhead(store, [(i.key, i.name) for i in instances[:6]])
    assert ahead.take(instances[0].key) is not None
    before = ahead.held
    assert ahead.take(instances[7].key) is None
    assert ahead.held == before


# -- in a pytest run ------------------------------------------------------------------------------

PROJECT = """
from physlog import log
from pytest_physpipe import StageConfig, stage


class PointConfig(StageConfig):
    i: int = 0


@stage(params=[PointConfig(i=i) for i in range(12)])
def point(config: PointConfig) -> dict:
    log(f"point {config.i}")
    return {"i": config.i, "square": config.i * config.i}


def test_point(point, physpipe):
    assert point["square"] == point["i"] ** 2
    record = physpipe.record("point")
    assert record.status in ("hit", "computed")
    point["square"] = -1  # the test's own copy
"""


def test_a_cached_rerun_serves_every_hit_read_ahead(
    pytester: pytest.Pytester, calls: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_project=textwrap.dedent(PROJECT))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=12)
    assert len(calls.take()) == 12
    plain_loads: Counter[str] = Counter()
    original = Store.load

    def counting(self: Store, key: str, **options: Any) -> Any:
        plain_loads[key] += 1
        return original(self, key, **options)

    monkeypatch.setattr(Store, "load", counting)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["*12 hit, 0 computed*"])
    assert calls.take() == Counter()
    assert plain_loads == Counter()  # each hit came from a window read ahead


def test_a_corrupt_entry_in_a_cached_rerun_is_healed_once(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makepyfile(test_project=textwrap.dedent(PROJECT))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=12)
    calls.take()
    damaged = 0
    for meta_path in sorted(pytester.path.rglob("meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta["record"]["param_id"] in ("i=5", "i=9"):
            (meta_path.parent / "value.json").write_text('{"i": 0, "square": 0}')
            damaged += 1
    assert damaged == 2
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "always")
    result.assert_outcomes(passed=12)
    assert calls.take() == Counter({"point 5": 1, "point 9": 1})
    assert result.stdout.str().count("recomputing it") == 2
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["*12 hit, 0 computed*"])
    assert calls.take() == Counter()

"""A hit's record: filled in for this run, never shared with another load of the entry."""

from __future__ import annotations

from pathlib import Path

from pytest_physpipe import stage
from pytest_physpipe.execute import StageRunner
from pytest_physpipe.plan import Planner
from pytest_physpipe.stage import registry
from pytest_physpipe.store.entries import Store


@stage
def hit_records_energy() -> dict[str, float]:
    return {"energy": 0.5}


def test_each_hit_gets_its_own_record(tmp_path: Path) -> None:
    spec = registry.get("hit_records_energy")
    assert spec is not None
    instance = Planner(registry=registry).instance(spec, None, {})
    store = Store(tmp_path / "store")
    StageRunner(store=store, run_id="first").provide(instance, {})

    runner = StageRunner(store=store, run_id="second", worker="gw1")
    first, second = runner.lookup(instance), runner.lookup(instance)
    assert first is not None
    assert second is not None
    assert first.record is not second.record  # the runner fills records in place
    assert (first.record.status, first.record.worker, first.record.codec) == ("hit", "gw1", "json")
    first.record.metrics["edited"] = 1.0
    assert second.record.metrics == {}
    loaded = store.load(instance.key)
    assert loaded is not None
    assert loaded.record.status == "computed"

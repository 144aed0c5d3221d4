"""A hit's record: filled in for this run, never shared with another load of the entry."""

from __future__ import annotations

import json
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


def test_a_hit_record_is_filled_in_as_assignments_would(tmp_path: Path) -> None:
    spec = registry.get("hit_records_energy")
    assert spec is not None
    instance = Planner(registry=registry).instance(spec, None, {})
    store = Store(tmp_path / "store")
    StageRunner(store=store, run_id="first").provide(instance, {})
    # A record as earlier versions stored it: no codec, no worker.
    meta_path = store.entry_dir(instance.key) / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["record"]["codec"], meta["record"]["worker"]
    meta_path.write_text(json.dumps(meta))

    hit = StageRunner(store=store, run_id="second", worker="gw1").lookup(instance)
    loaded = store.load(instance.key)
    assert hit is not None
    assert loaded is not None
    assigned = loaded.record
    assigned.status, assigned.param_id, assigned.worker, assigned.codec = "hit", None, "gw1", "json"
    assert hit.record == assigned
    assert hit.record.model_fields_set == assigned.model_fields_set

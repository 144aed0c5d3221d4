"""Reading meta.json on a hit: one pass, the same result as reading it step by step."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_physpipe.errors import CorruptEntryError
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store import meta as meta_module
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.meta import parse_json, parse_meta

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)  # lone surrogates included: the one-pass parser refuses them
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


def _stepwise(data: bytes) -> tuple[dict[str, Any], StageRecord]:
    meta = json.loads(data)
    return meta, StageRecord.model_validate(meta.pop("record"))


def _same(a: object, b: object) -> bool:
    """The same values of the same types all the way down (floats to the bit, NaN and -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return repr(a) == repr(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _meta(key: str, record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "format": 1,
        "key": key,
        "codec": "json",
        "codec_meta": {},
        "files": {"value.json": {"size": 2, "xxh3": "0" * 32}},
        "artifacts": {},
        "run_id": "run",
        "record": record,
        **extra,
    }


@FAST
@given(
    config=st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    metrics=st.dictionaries(st.text(max_size=5), st.floats(), max_size=3),
    name=st.text(min_size=1, max_size=8),
    duration=st.floats(min_value=0, max_value=1e9) | st.integers(0, 10**6),
    extra=st.dictionaries(st.text(min_size=1, max_size=5), json_values, max_size=2),
)
def test_one_pass_reads_what_stepwise_reads(
    config: dict[str, Any],
    metrics: dict[str, float],
    name: str,
    duration: float,
    extra: dict[str, Any],
) -> None:
    key = uuid.uuid4().hex
    record = {
        "key": key,
        "name": name,
        "config": config,
        "metrics": metrics,
        "duration_s": duration,
        "manifest": {"config": config},
    }
    meta = _meta(key, record)
    meta.update({k: v for k, v in extra.items() if k not in meta})  # a newer writer's fields
    data = json.dumps(meta, allow_nan=True).encode()
    got_meta, got_record = parse_meta(data, key)
    want_meta, want_record = _stepwise(data)
    assert set(got_meta) == set(want_meta)  # the order of meta.json's own fields is no data
    assert all(_same(got_meta[k], want_meta[k]) for k in want_meta)
    assert _same(got_record.model_dump(), want_record.model_dump())
    if "\\ud" not in data.decode():  # nothing the one-pass parser refuses: it read it
        meta_module._reader().validate_json(data)


@FAST
@given(
    st.recursive(
        leaves | st.integers() | st.integers(-(10**300), 10**300) | st.floats(width=32),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=30,
    )
)
def test_a_value_reads_as_json_loads_reads_it(value: object) -> None:
    data = json.dumps(value, allow_nan=True).encode()  # what the json codec writes
    assert _same(parse_json(data), json.loads(data))


@pytest.mark.parametrize(
    "text",
    ['["\\ud800"]', "[" * 300 + "]" * 300, '{"a": 1, "a": [-0.0, 5e-324, 1e308]}'],
    ids=["lone-surrogate", "nested-300", "repeated-key"],
)
def test_what_pydantic_core_refuses_or_reads_otherwise_reads_as_json_loads(text: str) -> None:
    assert _same(parse_json(text.encode()), json.loads(text))


def test_a_value_that_is_not_json_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_json(b'{"a": ')


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        (b"{", "not valid JSON"),
        (b"[1]", "belongs to another key"),
        (json.dumps(_meta("f" * 32, {"key": "f" * 32, "name": "s"})).encode(), "another key"),
    ],
    ids=["truncated", "not-an-object", "other-key"],
)
def test_what_is_not_this_entry_is_corrupt(meta: bytes, match: str) -> None:
    with pytest.raises(CorruptEntryError, match=match):
        parse_meta(meta, "e" * 32)


def _write_entry(store: Store, key: str, meta: dict[str, Any], value: bytes) -> Path:
    base = store.entry_dir(key)
    base.mkdir(parents=True)
    (base / "value.json").write_bytes(value)
    meta["files"] = {"value.json": {"size": len(value), "xxh3": xxhash.xxh3_128_hexdigest(value)}}
    (base / "meta.json").write_text(json.dumps(meta, indent=1, allow_nan=True))
    return base


def test_an_entry_of_the_first_format_still_hits(tmp_path: Path) -> None:
    # What the first release wrote: indented, a record without manifest, reason or codec.
    store = Store(tmp_path / "store")
    store.ensure()
    key = uuid.uuid4().hex
    record = {
        "key": key, "name": "spectrum", "config": {"n": 3}, "upstream": {}, "status": "computed",
        "duration_s": 1.5, "metrics": {"chi2": 0.25}, "artifacts": {}, "created_at": "2024",
        "host": "h", "versions": {"python": "3.11"}, "code": "c" * 32, "param_id": None,
        "worker": None, "backend": "local", "job_id": None, "queued_s": None, "error": None,
    }  # fmt: skip
    _write_entry(store, key, _meta(key, record), b'{"peak": 1.0}')
    loaded = store.load(key)
    assert loaded is not None
    assert loaded.value == {"peak": 1.0}
    assert (loaded.record.name, loaded.record.config, loaded.record.metrics) == (
        "spectrum",
        {"n": 3},
        {"chi2": 0.25},
    )
    assert loaded.meta["run_id"] == "run"
    assert "record" not in loaded.meta


def test_a_record_the_one_pass_parser_refuses_still_hits(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    key = uuid.uuid4().hex
    odd = "half a pair: \ud800"  # json.dumps escapes it; pydantic-core's parser refuses it
    _write_entry(store, key, _meta(key, {"key": key, "name": "s", "config": {"t": odd}}), b"1")
    data = (store.entry_dir(key) / "meta.json").read_bytes()
    with pytest.raises(ValueError):
        meta_module._reader().validate_json(data)
    loaded = store.load(key)
    assert loaded is not None
    assert loaded.record.config == {"t": odd}


@pytest.mark.parametrize(
    "files",
    [
        {"value.json": {"size": "1", "xxh3": None}},
        {"value.json": {"size": 1}},
        {"value.json": {"size": 1.5, "xxh3": "0" * 32}},
    ],
    ids=["size-as-text", "no-digest", "fractional-size"],
)
def test_mistyped_sums_are_corrupt_not_served(tmp_path: Path, files: dict[str, Any]) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    key = uuid.uuid4().hex
    base = _write_entry(store, key, _meta(key, {"key": key, "name": "s"}), b"1")
    meta = json.loads((base / "meta.json").read_text())
    (base / "meta.json").write_text(json.dumps({**meta, "files": files}))
    with pytest.raises(CorruptEntryError):
        store.load(key)

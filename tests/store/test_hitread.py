"""A hit's read of a small one-file entry: every size checked without a stat of the payload."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_physpipe.errors import CorruptEntryError
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.entries import Store


def commit(store: Store, value: object) -> str:
    key = uuid.uuid4().hex
    store.ensure()
    record = StageRecord(key=key, name="s", created_at="2024-01-01T00:00:00+00:00")
    store.commit(key, value=value, record=record, run_id="run-1")
    return key


def payload(store: Store, key: str) -> Path:
    (path,) = (p for p in store.entry_dir(key).iterdir() if p.name.startswith("value."))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


VALUES = [{"energy": 1.5, "steps": [1, 2, 3]}, np.arange(50.0)]


@pytest.mark.parametrize("value", VALUES, ids=["json", "npy"])
def test_a_small_hit_stats_only_its_meta(
    store: Store, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    key = commit(store, value)
    stats: list[int] = []
    fstat = os.fstat

    def counting(fd: int) -> os.stat_result:
        stats.append(fd)
        return fstat(fd)

    monkeypatch.setattr(os, "fstat", counting)
    for load in (store.load, lambda k: store.load_small(k, 1 << 16)):
        stats.clear()
        loaded = load(key)
        assert loaded is not None
        assert (
            np.array_equal(loaded.value, value)
            if isinstance(value, np.ndarray)
            else (loaded.value == value)
        )
        assert len(stats) == 1  # meta.json's (its inode and last use); the payload's size
        # is checked by reading it one byte past its committed size


@pytest.mark.parametrize("value", VALUES, ids=["json", "npy"])
@pytest.mark.parametrize("change", [-1, 1, "empty", 4096])
def test_a_payload_of_another_size_is_corrupt_and_named(
    store: Store, value: Any, change: int | str
) -> None:
    key = commit(store, value)
    path = payload(store, key)
    data = path.read_bytes()
    if change == "empty":
        changed = b""
    elif isinstance(change, int) and change < 0:
        changed = data[:change]
    else:
        changed = data + b" " * int(change)
    path.write_bytes(changed)
    message = f"{path.name} has {len(changed)} bytes, {len(data)} were committed"
    with pytest.raises(CorruptEntryError, match=message):
        store.load(key)
    with pytest.raises(CorruptEntryError, match=message):
        store.load_small(key, 1 << 16)


def test_a_short_read_is_read_on_not_corrupt(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # A network filesystem (or a signal) may hand back fewer bytes than asked for.
    value = {"energy": 1.5, "label": "x" * 300}
    key = commit(store, value)
    size = payload(store, key).stat().st_size
    read = os.read
    shortened: list[int] = []

    def short(fd: int, n: int) -> bytes:
        if n == size + 1:  # the payload's read
            shortened.append(n)
            return read(fd, 7)
        return read(fd, n)

    monkeypatch.setattr(os, "read", short)
    loaded = store.load(key)
    assert shortened
    assert loaded is not None
    assert loaded.value == value


@pytest.mark.parametrize("value", VALUES, ids=["json", "npy"])
def test_every_read_short_still_loads_the_whole_entry(
    store: Store, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    # meta.json and the payload both come back a few bytes at a time: each is read on to its
    # end, and the hit is the one whole reads give.
    key = commit(store, value)
    whole = store.load(key)
    assert whole is not None
    read = os.read
    calls: list[int] = []

    def trickle(fd: int, n: int) -> bytes:
        calls.append(n)
        return read(fd, min(n, 61))

    monkeypatch.setattr(os, "read", trickle)
    for load in (store.load, lambda k: store.load_small(k, 1 << 16)):
        calls.clear()
        loaded = load(key)
        assert loaded is not None
        assert len(calls) > 4
        assert loaded.record == whole.record
        assert loaded.meta == whole.meta
        if isinstance(value, np.ndarray):
            assert np.array_equal(loaded.value, value)
        else:
            assert loaded.value == value

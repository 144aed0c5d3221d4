"""The store's size in the terminal summary: the total ``physpipe ls`` prints, kept per shard in
the listing index so that a store that did not change is not listed again."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from pytest_physpipe.records import StageRecord
from pytest_physpipe.store import sizes
from pytest_physpipe.store.cli import main
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.layout import tree_size
from pytest_physpipe.store.sizes import store_size
from pytest_physpipe.units import human_size


def add(store: Store, value: object, *, key: str | None = None, replace: bool = False) -> str:
    key = key or uuid.uuid4().hex
    store.ensure()
    record = StageRecord(key=key, name="grid", created_at="2024-05-01T12:00:00.000+00:00")
    store.commit(key, value=value, record=record, run_id="run-x", replace=replace)
    return key


def walk(store: Store) -> int:
    return tree_size(store.layout.entries)


def ls_total(store: Store, capsys: pytest.CaptureFixture[str]) -> int:
    assert main(["--dir", str(store.root), "ls", "--json"]) == 0
    return sum(row["size"] for row in json.loads(capsys.readouterr().out))


def age_shards(store: Store, seconds: float = 60) -> None:
    """Make every shard's last change look older than the racy window."""
    stamp = time.time() - seconds
    for shard in store.layout.entries.iterdir():
        os.utime(shard, (stamp, stamp))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", fsync="none")


def test_size_is_the_ls_total(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert store_size(store.layout) == 0  # no store yet
    for n in (10, 1000, 5000):
        add(store, np.zeros(n))
    add(store, {"a": 1})
    assert store_size(store.layout) == walk(store) == ls_total(store, capsys)
    # Again, now from the record (and after ls folded the journals into the snapshot).
    assert store_size(store.layout) == walk(store)


def test_an_unchanged_store_is_not_listed_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(20):
        add(store, np.zeros(n * 100))
    age_shards(store)
    expected = store_size(store.layout)  # counts and records every shard
    assert expected == walk(store)

    def no_listing(*args: object) -> None:
        raise AssertionError("an unchanged store was listed again")

    monkeypatch.setattr(sizes, "_count_shards", no_listing)
    assert store_size(store.layout) == expected


def test_every_change_is_counted(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    keys = [add(store, np.zeros(100 * (i + 1))) for i in range(6)]
    age_shards(store)
    assert store_size(store.layout) == walk(store)
    # Removed by hand.
    shutil.rmtree(store.entry_dir(keys[0]))
    assert store_size(store.layout) == walk(store)
    # Committed by another process (another Store object, its own journal).
    other = Store(store.root, fsync="none")
    add(other, np.zeros(3000))
    assert store_size(store.layout) == walk(store)
    # Replaced (a repair) by a larger entry under the same key.
    add(store, np.zeros(7000), key=keys[1], replace=True)
    assert store_size(store.layout) == walk(store)
    # Damaged inside (meta.json deleted by hand): no rename in its shard, so the recorded
    # figure stands until the entry is replaced (the next run that needs it rebuilds it) ...
    age_shards(store)
    recorded = store_size(store.layout)
    (store.entry_dir(keys[2]) / "meta.json").unlink()
    assert store_size(store.layout) == recorded != walk(store)
    add(store, np.zeros(50), key=keys[2], replace=True)
    assert store_size(store.layout) == walk(store) == ls_total(store, capsys)
    # ... while a damaged entry in a shard that changed is counted as ls counts it.
    (store.entry_dir(keys[3]) / "meta.json").unlink()
    add(store, np.zeros(10), key=keys[3][:2] + uuid.uuid4().hex[2:])
    assert store_size(store.layout) == walk(store) == ls_total(store, capsys)
    # Pruned by the CLI.
    assert main(["--dir", str(store.root), "prune", "--max-size", "30K", "-q"]) == 0
    capsys.readouterr()
    assert store_size(store.layout) == walk(store) < 30 * 1024


def test_a_fresh_shard_is_listed_again(store: Store) -> None:
    """A shard changed within the racy window is counted but not recorded: an entry renamed in
    later within the same mtime tick would otherwise go unseen."""
    first = add(store, np.zeros(100))
    shard = store.entry_dir(first).parent
    assert store_size(store.layout) == walk(store)
    before = shard.stat().st_mtime_ns
    add(store, np.zeros(2000), key=first[:2] + uuid.uuid4().hex[2:])
    os.utime(shard, ns=(before, before))  # the same mtime as when it was counted
    assert store_size(store.layout) == walk(store)


def no_count(*args: object) -> None:
    raise AssertionError("a shard was counted again")


def test_a_fresh_shard_is_taken_while_its_entries_are_those_counted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard counted within the racy window is recorded with a fingerprint of its entries:
    the next count lists it and takes the record while the same entries are there (a rerun
    right after a run that committed), and counts it again when a directory was renamed over
    one of them under the same mtime."""
    keys = [add(store, np.zeros(100 * (i + 1))) for i in range(5)]
    expected = store_size(store.layout)
    assert expected == walk(store)
    recorded = json.loads(store.layout.entry_sizes.read_text())["shards"]
    assert all(len(row) == 3 for row in recorded.values())  # every shard changed just now
    monkeypatch.setattr(sizes, "_count_shards", no_count)
    assert store_size(store.layout) == expected
    monkeypatch.undo()
    # Replaced (a repair) by a larger entry, its shard's mtime put back as it was counted.
    shard = store.entry_dir(keys[0]).parent
    before = shard.stat().st_mtime_ns
    add(store, np.zeros(9000), key=keys[0], replace=True)
    os.utime(shard, ns=(before, before))
    assert store_size(store.layout) == walk(store) > expected
    # Listed once the window has passed: recorded by mtime alone from then on.
    monkeypatch.setattr(sizes, "_RACY_NS", 0)
    assert store_size(store.layout) == walk(store)
    recorded = json.loads(store.layout.entry_sizes.read_text())["shards"]
    assert all(len(row) == 2 for row in recorded.values())


@pytest.mark.parametrize("garbage", ["{not json", '{"format": 1, "shards": {"00": [1]}}', "[]"])
def test_a_garbage_record_is_recounted(store: Store, garbage: str) -> None:
    for n in (10, 2000):
        add(store, np.zeros(n))
    age_shards(store)
    store_size(store.layout)
    (store.layout.index / "entry-sizes.json").write_text(garbage)
    assert store_size(store.layout) == walk(store)


def test_the_index_is_checked_against_the_entries(store: Store) -> None:
    """A row of the index is used only for the entry it was written for (same inode)."""
    key = add(store, np.zeros(10))
    meta = store.entry_dir(key) / "meta.json"
    # Rewritten by hand into a new file (a new inode): the row no longer vouches for it.
    (meta.parent / "new").write_text(meta.read_text() + " " * 5000)
    os.rename(meta.parent / "new", meta)
    assert store_size(store.layout) == walk(store)


# -- in the terminal summary ----------------------------------------------------------------------

PROJECT = """
import numpy as np
from pytest_physpipe import stage, StageConfig, sweep

class C(StageConfig):
    n: int = 4

@stage(params=sweep(C, n=[1000, 20000, 90000]))
def big(config: C):
    return np.zeros(config.n)

def test_big(big):
    assert big.sum() == 0
"""


def summary_size(result: pytest.RunResult) -> str:
    found = re.search(r"; store (\d+(?:\.\d)? [KMG]?i?B)$", result.stdout.str(), re.MULTILINE)
    assert found is not None, result.stdout.str()
    return found[1]


def test_summary_figure_follows_the_store(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    pytester.makepyfile(PROJECT)
    root = pytester.path / ".physpipe"
    entries = root / "entries"

    def run() -> str:
        result = pytester.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(passed=3)
        return summary_size(result)

    computed = run()
    assert computed == human_size(tree_size(entries))
    assert run() == computed  # the rerun: its shards changed just now, listed again
    stamp = time.time() - 60
    for shard in entries.iterdir():
        os.utime(shard, (stamp, stamp))
    assert run() == computed  # recorded now
    assert run() == computed  # and taken from the record
    # An entry removed by hand: the run recomputes it.
    largest = max(entries.glob("*/*"), key=tree_size)
    shutil.rmtree(largest)
    assert run() == computed


def test_summary_figure_after_removal_without_rerun(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries removed by hand or by prune while the store's shards were recorded: the next
    run's figure drops; a run that needs none of them shows the smaller store."""
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    pytester.makepyfile(PROJECT)
    root = pytester.path / ".physpipe"
    entries = root / "entries"
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)
    full = tree_size(entries)
    # Another suite in the same store, which uses none of those entries.
    pytester.makepyfile(
        test_other="""
        from pytest_physpipe import stage

        @stage
        def small():
            return {"x": 1}

        def test_small(small):
            assert small == {"x": 1}
        """
    )
    stamp = time.time() - 60
    for shard in entries.iterdir():
        os.utime(shard, (stamp, stamp))

    def other() -> str:
        result = pytester.runpytest("-p", "no:cacheprovider", "test_other.py")
        result.assert_outcomes(passed=1)
        return summary_size(result)

    assert other() == human_size(tree_size(entries))
    assert other() == human_size(tree_size(entries))
    largest = max(entries.glob("*/*"), key=tree_size)
    shutil.rmtree(largest)
    assert other() == human_size(tree_size(entries))
    assert tree_size(entries) < full
    assert main(["--dir", str(root), "prune", "--max-size", "50K", "-q"]) == 0
    assert other() == human_size(tree_size(entries))
    assert tree_size(entries) < 50 * 1024


MODULES_PROBE = """
import sys

def pytest_unconfigure(config):
    names = sorted(n for n in sys.modules if n.startswith("pytest_physpipe"))
    with open("modules.txt", "w") as handle:
        handle.write("\\n".join(names))
"""


def test_a_cached_rerun_imports_no_listing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each module a session imports costs it the load of its bytecode: a rerun right after the
    # run that committed (its shards changed just now) and the one after it find the store's
    # size without the listing module (48 KB of bytecode).
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    pytester.makepyfile(PROJECT)
    pytester.makepyfile(modules_probe=MODULES_PROBE)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
    for _ in range(2):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "modules_probe")
        result.assert_outcomes(passed=3)
        assert summary_size(result) == human_size(tree_size(pytester.path / ".physpipe/entries"))
        imported = (pytester.path / "modules.txt").read_text().split()
        assert "pytest_physpipe.store.sizes" in imported
        assert "pytest_physpipe.store.listing" not in imported

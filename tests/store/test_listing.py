"""The listing index's files never meet a stage's, and a store of an earlier release keeps its
listing: a stage called ``entries`` (whose notes file was once the listing's snapshot), and a
listing found under the earlier names."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_physpipe.keys import KEY_PATTERN
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store import cli as cli_module
from pytest_physpipe.store import listing
from pytest_physpipe.store.cli import main
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.journal import Summary
from pytest_physpipe.store.layout import StoreLayout, entry_names
from pytest_physpipe.store.sizes import store_size

if TYPE_CHECKING:
    from physpipe_testing import CallLog

PROJECT = """
from physlog import log
from pytest_physpipe import StageConfig, stage


class EntriesConfig(StageConfig):
    n: int = {n}


@stage
def grid():
    log("grid")
    return [0.5, 1.5]


@stage
def entries(grid, config: EntriesConfig):
    log(f"entries {{config.n}}")
    return {{"n": config.n, "squares": [i * i for i in range(config.n)], "grid": grid}}


def test_entries(entries):
    assert entries == {{"n": {n}, "squares": [i * i for i in range({n})], "grid": [0.5, 1.5]}}
"""


def physpipe(root: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--dir", str(root), *args]) == 0
    return out.getvalue()


def test_a_stage_called_entries_lives_beside_the_listing(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    """A stage called ``entries`` is computed, served, listed, explained and pruned like any
    other: its notes (``index/entries.json``) and the listing's snapshot are two files."""
    root = pytester.path / ".physpipe"
    layout = StoreLayout(root)
    pytester.makepyfile(test_project=PROJECT.format(n=8))
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter({"grid": 1, "entries 8": 1})
    first = physpipe(root, "ls")
    assert [line.split()[1] for line in first.splitlines()[1:-1]] == ["entries", "grid"]
    assert json.loads(layout.listing.read_text())["format"] == 3
    notes = json.loads(layout.stage_index_path("entries").read_text())
    assert set(notes) == {"", "\0latest"}  # the stage's notes, untouched by the listing
    pytester.runpytest().assert_outcomes(passed=1)  # served from the store
    assert calls.take() == Counter()
    assert physpipe(root, "ls") == first

    # The stage's notes still explain a change (a listing that took them for its own
    # snapshot would have overwritten them, and the reason would be "new").
    pytester.makepyfile(test_project=PROJECT.format(n=9))
    plan = pytester.runpytest("--physpipe-plan")
    plan.stdout.fnmatch_lines(["entries *missing*config n 8 → 9*"])
    pytester.runpytest().assert_outcomes(passed=1)
    assert calls.take() == Counter({"entries 9": 1})
    listed = physpipe(root, "ls").splitlines()[1:-1]
    assert sorted(line.split()[1] for line in listed) == ["entries", "entries", "grid"]

    # Prune the older `entries` entry: the listing names it, the store keeps the others.
    keys = {line.split()[0]: line for line in listed}
    stamp = time.time() - 90 * 86400
    aged = []
    for shard in layout.entries.iterdir():
        for entry in shard.iterdir():
            meta = json.loads((entry / "meta.json").read_text())
            if meta["record"]["name"] == "entries" and meta["record"]["config"]["n"] == 8:
                os.utime(entry / "meta.json", (stamp, stamp))
                aged.append(entry.name)
    assert len(aged) == 1
    assert aged[0][:12] in keys
    pruned = physpipe(root, "prune", "--older-than", "30d", "-q")
    assert f"removed  {aged[0]}  entries" in pruned
    after = physpipe(root, "ls").splitlines()[1:-1]
    assert sorted(line.split()[1] for line in after) == ["entries", "grid"]
    assert aged[0][:12] not in "\n".join(after)
    pytester.runpytest().assert_outcomes(passed=1)  # n=9 still served from the store
    assert calls.take() == Counter()
    assert json.loads(layout.listing.read_text())["format"] == 3
    assert "\0latest" in json.loads(layout.stage_index_path("entries").read_text())


def _commit(store: Store, name: str) -> str:
    key = os.urandom(16).hex()
    record = StageRecord(key=key, name=name, created_at="2024-05-01T12:00:00.000+00:00")
    store.commit(key, value={"name": name}, stage=name, record=record, run_id="run-x")
    return key


def test_an_earlier_releases_listing_seeds_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store listed by an earlier release (snapshot ``index/entries.json``, journals in
    ``index/entries/``) is listed from them without reading the entries, once: the new
    snapshot holds their rows and the earlier files are gone, notes of a stage are kept."""
    store = Store(tmp_path / "store")
    store.ensure()
    layout = store.layout
    keys = [_commit(store, "grid") for _ in range(3)]
    store.flush()
    before = physpipe(store.root, "ls")
    # As the earlier release left it: its snapshot, and a journal of a session that ended.
    os.rename(layout.listing, layout.old_listing)
    shutil.rmtree(layout.listing_journals, ignore_errors=True)
    late = _commit(store, "heat")
    store.flush()  # closes the journal
    layout.old_listing_journals.mkdir()
    for path in layout.listing_journals.iterdir():
        os.rename(path, layout.old_listing_journals / path.name)
    read: list[str] = []

    def describe(layout: StoreLayout, key: str, inode: int) -> Summary | None:
        read.append(key)
        return listing.describe_entry(layout, key, inode)

    monkeypatch.setattr(cli_module, "describe_entry", describe)
    now = physpipe(store.root, "ls")
    assert read == []  # every entry vouched for by the earlier release's files
    assert len(now.splitlines()) == len(before.splitlines()) + 1
    assert late[:12] in now
    assert all(key[:12] in now for key in keys)
    assert not layout.old_listing.exists()
    assert not layout.old_listing_journals.exists()
    assert sorted(json.loads(layout.listing.read_text())["keys"]) == sorted([*keys, late])
    assert physpipe(store.root, "ls") == now
    assert read == []

    # A stage's notes under that name are not a listing: neither read as one nor removed.
    layout.listing.unlink()
    notes = {"": {"key": keys[0], "manifest": {"stage": "entries"}}}
    layout.old_listing.write_text(json.dumps(notes))
    assert physpipe(store.root, "ls") == now
    assert sorted(read) == sorted([*keys, late])  # entries read afresh
    assert json.loads(layout.old_listing.read_text()) == notes


def test_ls_shows_a_damaged_entry_beside_the_others_of_its_shard(tmp_path: Path) -> None:
    """An entry without a ``meta.json`` is listed as corrupt, with its files' size, and the
    other entries of its shard as before (a shard with one is gone through one by one)."""
    store = Store(tmp_path / "store")
    store.ensure()
    keys = ["ab" + os.urandom(15).hex() for _ in range(3)]
    for key, name in zip(keys, ("grid", "heat", "report"), strict=True):
        record = StageRecord(key=key, name=name, created_at="2024-05-01T12:00:00.000+00:00")
        store.commit(key, value={"name": name}, stage=name, record=record, run_id="run-x")
    store.flush()
    before = physpipe(store.root, "ls").splitlines()
    (store.entry_dir(keys[1]) / "meta.json").unlink()
    after = physpipe(store.root, "ls").splitlines()
    assert [line.split()[:3] for line in after[1:-1]] == [
        [keys[1][:12], "?", "corrupt"],
        [keys[0][:12], "grid", "computed/json"],
        [keys[2][:12], "report", "computed/json"],
    ]
    assert before[1] in after
    assert before[3] in after
    assert after[-1].startswith("3 entries, ")


@pytest.mark.parametrize("copy", [True, False], ids=["copied", "moved"])
def test_a_key_folder_in_another_shard_is_no_entry(tmp_path: Path, copy: bool) -> None:
    """A key's folder put by hand into a shard not its own is never looked up there: ls,
    prune and the store's size leave it out, and a key copied there is listed once."""
    store = Store(tmp_path / "store")
    store.ensure()
    keys = [_commit(store, name) for name in ("grid", "heat")]
    store.flush()
    before = physpipe(store.root, "ls")
    misplaced = keys[0]
    other = store.layout.entries / ("00" if misplaced[:2] != "00" else "01")
    other.mkdir(exist_ok=True)
    (shutil.copytree if copy else shutil.move)(store.entry_dir(misplaced), other / misplaced)
    listed = physpipe(store.root, "ls")
    assert listed.count(misplaced[:12]) == (1 if copy else 0)
    if copy:
        assert listed == before
    assert listed.splitlines()[-1].startswith("2 entries, " if copy else "1 entries, ")
    rows = json.loads(physpipe(store.root, "ls", "--json"))
    assert sorted(row["key"] for row in rows) == sorted(keys if copy else keys[1:])
    assert store_size(store.layout) == sum(row["size"] for row in rows)
    physpipe(store.root, "verify", "-q")  # every entry sound; the folder is none of them
    physpipe(store.root, "prune", "--max-size", "0", "-q")
    assert (other / misplaced / "meta.json").is_file()  # not an entry: not pruned either


HEX = "0123456789abcdef"
SHARD_NAMES = st.lists(
    st.one_of(
        st.text(HEX, min_size=30, max_size=30).map("ab".__add__),  # keys of the shard ab
        st.text(HEX, min_size=32, max_size=32),  # keys, mostly of other shards
        st.text(HEX + "ABCDEF.-x", max_size=34),  # anything else
    ),
    unique=True,
    max_size=12,
)


@given(names=SHARD_NAMES, shard=st.sampled_from(["ab", "cd", "abc"]))
def test_entry_names_are_the_keys_of_their_own_shard(names: list[str], shard: str) -> None:
    expected = [name for name in names if KEY_PATTERN.fullmatch(name) and name[:2] == shard]
    assert entry_names(shard, names) == expected


def test_the_listing_leaves_the_working_directory_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing stats from inside each shard: the working directory is restored after, and
    after an error; where it cannot be opened, the listing is the same."""
    store = Store(tmp_path / "store")
    store.ensure()
    for name in ("grid", "heat", "report", "mesh"):
        _commit(store, name)
    store.flush()
    monkeypatch.chdir(tmp_path)
    expected = physpipe(Path("store"), "ls")  # a relative store path, as given on the shell
    assert os.getcwd() == str(tmp_path)
    assert physpipe(Path("store"), "ls") == expected
    calls: list[str] = []

    def failing(shard: str, names: list[str]) -> list[str]:
        calls.append(shard)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return entry_names(shard, names)

    monkeypatch.setattr(listing, "entry_names", failing)
    with pytest.raises(RuntimeError):
        physpipe(Path("store"), "ls")
    assert os.getcwd() == str(tmp_path)
    monkeypatch.undo()
    # Where it cannot be opened, each stat is given the shard's descriptor instead.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(listing, "_working_directory", lambda kept: None)
    assert physpipe(Path("store"), "ls") == expected


def test_the_listing_changes_no_directory_unless_its_own_process_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Called as a library (a session, a thread among others), the listing stats through the
    shards' descriptors; only the command, a process of its own, lists from inside them."""
    store = Store(tmp_path / "store")
    store.ensure()
    keys = sorted(_commit(store, name) for name in ("grid", "heat", "mesh"))
    store.flush()
    moves: list[int] = []
    monkeypatch.setattr(os, "fchdir", moves.append)
    describe = listing.describe_entry
    found = listing.listing(store.layout, lambda key, inode: describe(store.layout, key, inode))
    assert sorted(found.found()) == keys
    assert moves == []
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    inside = listing.listing(store.layout, lambda k, i: None, from_inside=True)
    assert sorted(inside.found()) == keys
    assert os.getcwd() == str(tmp_path)


def test_the_snapshot_holds_the_labels_and_one_without_them_is_completed(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    for name, param in (("heat", "n=2"), ("grid", None), ("heat", "n=10"), ("mesh", "")):
        key = os.urandom(16).hex()
        record = StageRecord(
            key=key, name=name, param_id=param, created_at="2024-05-01T12:00:00.000+00:00"
        )
        store.commit(key, value={"name": name}, stage=name, record=record, run_id="run-x")
    store.flush()
    layout = store.layout
    expected = physpipe(store.root, "ls")
    labels = ["grid", "heat[n=10]", "heat[n=2]", "mesh"]
    assert json.loads(layout.listing.read_text())["labels"] == labels
    assert [line.split()[1] for line in expected.splitlines()[1:-1]] == labels
    for garbage in (None, labels[:2], [*labels[:3], 4]):  # an earlier version's; garbage
        doc = json.loads(layout.listing.read_text())
        doc.pop("labels")
        if garbage is not None:
            doc["labels"] = garbage
        layout.listing.write_text(json.dumps(doc))
        assert physpipe(store.root, "ls") == expected
        assert json.loads(layout.listing.read_text())["labels"] == labels  # rewritten

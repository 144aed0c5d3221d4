"""The ``physpipe`` command: ls, show, verify, prune, rm; through main() and as a process."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_physpipe.records import StageRecord
from pytest_physpipe.store import cli as cli_module
from pytest_physpipe.store import clitable, listing
from pytest_physpipe.store.cli import main, parse_duration
from pytest_physpipe.store.clitable import LsColumns, iso_time, json_rows, ls_table, minute_text
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.journal import Summary
from pytest_physpipe.store.layout import StoreLayout


def add_entry(
    store: Store, name: str, value: object, *, param_id: str | None = None, age_days: float = 0
) -> str:
    key = uuid.uuid4().hex
    store.ensure()
    record = StageRecord(
        key=key,
        name=name,
        param_id=param_id,
        config={"n": 8},
        upstream={"grid": "f" * 32},
        metrics={"energy": 0.5},
        created_at="2024-05-01T12:00:00.000+00:00",
        duration_s=1.25,
    )
    store.commit(key, value=value, stage=name, record=record, run_id="run-x")
    if age_days:
        stamp = time.time() - age_days * 86400
        os.utime(store.entry_dir(key) / "meta.json", (stamp, stamp))
    return key


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return Store(tmp_path / "store")


@pytest.fixture
def populated(store: Store) -> dict[str, str]:
    return {
        "grid": add_entry(store, "grid", np.arange(1000.0), age_days=40),
        "heat64": add_entry(store, "heat", {"u": np.ones(64)}, param_id="n=64", age_days=10),
        "heat128": add_entry(store, "heat", {"u": np.ones(128)}, param_id="n=128", age_days=1),
        "report": add_entry(store, "report", {"ok": True}),
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_ls_table_and_json(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "--dir", str(store.root), "ls")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "STAGE", "STATUS/CODEC", "SIZE", "CREATED", "LAST", "USED"]
    assert any(populated["grid"][:12] in line and "computed/npy" in line for line in lines)
    assert any("heat[n=64]" in line and "computed/tree" in line for line in lines)
    assert any("report" in line and "computed/json" in line for line in lines)
    assert lines[-1].startswith("4 entries")
    status, out, _ = run(capsys, "ls", "--dir", str(store.root), "--json")
    assert status == 0
    rows = json.loads(out)
    assert {row["key"] for row in rows} == set(populated.values())
    grid = next(row for row in rows if row["stage"] == "grid")
    assert grid["codec"] == "npy"
    assert grid["size"] > 8000
    status, out, _ = run(capsys, "ls", "--dir", str(store.root), "--json", "heat")
    assert sorted(row["label"] for row in json.loads(out)) == ["heat[n=128]", "heat[n=64]"]


def test_store_location_env_then_default(
    store: Store, populated: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("PHYSPIPE_DIR", str(store.root))
    status, out, _ = run(capsys, "ls")
    assert status == 0
    assert "4 entries" in out
    monkeypatch.delenv("PHYSPIPE_DIR")
    status, _, err = run(capsys, "ls")  # ./.physpipe does not exist in tmp_path
    assert status == 2
    assert ".physpipe" in err
    assert "--dir" in err
    assert "PHYSPIPE_DIR" in err
    shutil.copytree(store.root, Path(".physpipe"))
    status, out, _ = run(capsys, "ls")
    assert status == 0
    assert "4 entries" in out


def test_no_store_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--dir", str(tmp_path / "nowhere"), "verify")
    assert status == 2
    assert out == ""
    assert "does not exist" in err
    assert "--dir PATH" in err
    (tmp_path / "plain").mkdir()
    status, _, err = run(capsys, "--dir", str(tmp_path / "plain"), "ls")
    assert status == 2
    assert "is not a physpipe store" in err
    assert not (tmp_path / "plain" / "entries").exists()  # the command created nothing


def test_show_by_key_prefix_and_name(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key = populated["grid"]
    for target in (key, key[:8], "grid"):
        status, out, _ = run(capsys, "--dir", str(store.root), "show", target)
        assert status == 0
        assert f"key:       {key}" in out
        assert "stage:     grid" in out
        assert "codec:     npy" in out
        assert "run:       run-x" in out
        assert "config:\n  n = 8" in out
        assert f"upstream:\n  grid = {'f' * 32}" in out
        assert "metrics:\n  energy = 0.5" in out
        assert "value.npy" in out
    status, out, _ = run(capsys, "--dir", str(store.root), "show", "heat")
    assert out.count("key: ") == 2  # a name with several entries shows each
    status, out, _ = run(capsys, "--dir", str(store.root), "show", key, "--json")
    data = json.loads(out)
    assert data["key"] == key
    assert data["meta"]["record"]["name"] == "grid"
    assert data["meta"]["files"]["value.npy"]["size"] > 0


def test_show_unknown_and_short_prefix(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "--dir", str(store.root), "show", "nosuchstage")
    assert status == 1
    assert "nosuchstage" in err
    status, _, err = run(capsys, "--dir", str(store.root), "show", "abc")
    assert status == 1
    assert "at least 6" in err


def test_verify_reports_corrupt_entries(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "--dir", str(store.root), "verify", "-q")
    assert status == 0
    assert "verified 4 entries" in out
    grid = store.entry_dir(populated["grid"]) / "value.npy"
    data = bytearray(grid.read_bytes())
    data[-1] ^= 1
    grid.write_bytes(bytes(data))
    (store.entry_dir(populated["heat64"]) / "a0.npy").unlink()
    (store.entry_dir(populated["report"]) / "meta.json").write_text("{garbage")
    status, out, _ = run(capsys, "--dir", str(store.root), "verify")
    assert status == 1
    corrupt = {line.split()[1] for line in out.splitlines() if line.startswith("CORRUPT")}
    assert corrupt == {populated["grid"], populated["heat64"], populated["report"]}
    assert "checksum mismatch in value.npy" in out
    assert "a0.npy is missing" in out
    assert "3 of 4 entries are corrupt" in out
    # Only the named ones.
    status, out, _ = run(capsys, "--dir", str(store.root), "verify", populated["heat128"])
    assert status == 0
    assert "verified 1 entries" in out
    status, out, _ = run(capsys, "--dir", str(store.root), "verify", "--remove")
    assert status == 1
    assert sorted(store.keys()) == [populated["heat128"]]
    assert run(capsys, "--dir", str(store.root), "verify")[0] == 0


def test_prune_older_than_and_max_size(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(store.root)
    status, out, _ = run(capsys, "--dir", root, "prune", "--older-than", "30d", "--dry-run")
    assert status == 0
    assert "would remove" in out
    assert populated["grid"] in out
    assert len(list(store.keys())) == 4  # dry run
    status, out, _ = run(capsys, "--dir", root, "prune", "--older-than", "30d", "-q")
    assert status == 0
    assert set(store.keys()) == {populated[k] for k in ("heat64", "heat128", "report")}
    # Size cap: least recently used goes first (heat64 is 10 days old, heat128 1 day).
    sizes = {e.key: e.size for e in store.entries()}
    cap = sizes[populated["heat128"]] + sizes[populated["report"]]
    status, out, _ = run(capsys, "--dir", root, "prune", "--max-size", str(cap), "-q")
    assert status == 0
    assert set(store.keys()) == {populated["heat128"], populated["report"]}
    assert "store over" in out


def test_prune_skips_locked_entries_and_cleans_leftovers(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    held = store.lock(populated["grid"])
    held.acquire()
    dead = store.root / "tmp" / f"{'0' * 32}.{os.uname().nodename}.999999999.abcd"
    dead.mkdir()
    try:
        status, out, _ = run(capsys, "--dir", str(store.root), "prune", "--older-than", "5d", "-q")
    finally:
        held.release()
    assert status == 0
    assert f"skipped  {populated['grid']}" in out
    assert "skipped 1 in use" in out
    assert "cleaned 1 leftovers" in out
    assert not dead.exists()
    assert store.exists(populated["grid"])  # locked: kept
    assert not store.exists(populated["heat64"])  # 10 days old: gone
    assert not (store.root / "locks" / f"{populated['heat64']}.lock").exists()


def test_rm_by_key_prefix_and_name(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(store.root)
    status, out, _ = run(capsys, "--dir", root, "rm", "heat", "--dry-run")
    assert status == 0
    assert out.count("would remove") == 2
    assert len(list(store.keys())) == 4
    status, out, _ = run(capsys, "--dir", root, "rm", "heat")
    assert status == 0
    assert not store.exists(populated["heat64"])
    assert not store.exists(populated["heat128"])
    status, _, _ = run(capsys, "--dir", root, "rm", populated["grid"][:10])
    assert status == 0
    assert not store.exists(populated["grid"])
    status, _, err = run(capsys, "--dir", root, "rm", "nothing-here")
    assert status == 1
    assert "nothing-here" in err
    assert store.exists(populated["report"])


def test_rm_refuses_ambiguous_prefix(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    store.ensure()
    record = StageRecord(key="x", name="s")
    keys = ["abcdef" + uuid.uuid4().hex[6:] for _ in range(2)]
    for key in keys:
        store.commit(
            key,
            value=[1],
            codec="json",
            record=record.model_copy(update={"key": key}),
            run_id="r",
        )
    status, _, err = run(capsys, "--dir", str(store.root), "rm", "abcdef")
    assert status == 1
    assert "ambiguous" in err
    assert sorted(store.keys()) == sorted(keys)


def test_rm_in_use_is_refused(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with store.lock(populated["report"]):
        status, out, _ = run(capsys, "--dir", str(store.root), "rm", "report")
    assert status == 1
    assert "lock is held" in out
    assert store.exists(populated["report"])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 14 * 86400),
     ("1.5", 1.5 * 86400)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["prune", "--older-than", "soon"])
    assert info.value.code == 2
    assert "not a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "--max-size", "lots"])
    assert "not a size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])


def test_console_script_and_module(store: Store, populated: dict[str, str]) -> None:
    env = {**os.environ, "PHYSPIPE_DIR": str(store.root)}
    script = shutil.which("physpipe")
    commands = [[sys.executable, "-m", "pytest_physpipe"]]
    if script is not None:  # installed (pip install -e .): the console script too
        commands.append([script])
    for command in commands:
        result = subprocess.run(
            [*command, "ls"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "4 entries" in result.stdout
        result = subprocess.run(
            [*command, "verify", "missing0000"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert "missing0000" in result.stderr
        result = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0
        for sub in ("ls", "show", "verify", "prune", "rm"):
            assert sub in result.stdout


@pytest.mark.parametrize("thread", [False, True], ids=["handler", "thread"])
def test_the_command_ends_at_once_only_where_nothing_is_left_to_do(
    store: Store, populated: dict[str, str], thread: bool
) -> None:
    """The command skips the interpreter's teardown only where no exit handler is registered
    and no other thread runs: a handler registered before it still runs, a thread still
    finishes, and the output is whole either way."""
    start = (
        "import threading, time; threading.Thread(target=lambda: (time.sleep(0.3), "
        "print('thread done', file=sys.stderr))).start()"
        if thread
        else "import atexit; atexit.register(lambda: print('handler ran', file=sys.stderr))"
    )
    code = (
        f"import runpy, sys; {start}; "
        f"sys.argv = ['physpipe', '--dir', {str(store.root)!r}, 'ls']; "
        "runpy.run_module('pytest_physpipe', run_name='__main__', alter_sys=True)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6, result.stdout  # the header, 4 entries, the total
    assert lines[-1].startswith("4 entries, ")
    assert ("thread done" if thread else "handler ran") in result.stderr


def test_cli_on_a_store_written_by_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        from pytest_physpipe import stage, StageConfig, sweep

        class C(StageConfig):
            n: int = 4

        @stage(params=sweep(C, n=[3, 5]))
        def cgrid(config: C):
            return np.arange(config.n)

        def test_g(cgrid):
            assert len(cgrid) in (3, 5)
        """
    )
    store = pytester.path / "pstore"
    pytester.runpytest(f"--physpipe-dir={store}", "-p", "no:cacheprovider").assert_outcomes(
        passed=2
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest_physpipe", "--dir", str(store), "ls"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "cgrid[n=3]" in result.stdout
    assert "cgrid[n=5]" in result.stdout
    assert main(["--dir", str(store), "verify", "-q"]) == 0
    assert main(["--dir", str(store), "rm", "cgrid"]) == 0
    assert not list((store / "entries").rglob("meta.json"))


def _ls_json(capsys: pytest.CaptureFixture[str], store: Store) -> dict[str, dict[str, object]]:
    status, out, _ = run(capsys, "--dir", str(store.root), "ls", "--json")
    assert status == 0
    return {row["key"]: row for row in json.loads(out)}


def test_ls_index_is_an_aid_never_a_source(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The listing index folds the commit journals into a snapshot; whatever it says, ls shows
    the entries as they are: a replaced entry's new record, no removed entry, and a listing
    as before when the index is lost or garbage."""
    before = _ls_json(capsys, store)
    assert set(before) == set(populated.values())
    index = store.root / "index"
    assert (index / "entry-listing.json").is_file()
    # Replace one entry behind the index's back (a rebuild by an older version: no journal).
    key = populated["report"]
    record = StageRecord(key=key, name="renamed", created_at="2025-01-01T00:00:00+00:00")
    staging = store.root / "tmp" / "by-hand"
    shutil.copytree(store.entry_dir(key), staging)
    meta = json.loads((staging / "meta.json").read_text())
    meta["record"] = record.model_dump(mode="json")
    (staging / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(store.entry_dir(key))
    os.rename(staging, store.entry_dir(key))
    # Remove another one without the store knowing.
    shutil.rmtree(store.entry_dir(populated["grid"]))
    after = _ls_json(capsys, store)
    assert set(after) == set(populated.values()) - {populated["grid"]}
    assert after[key]["label"] == "renamed"
    assert after[key]["created_at"] == "2025-01-01T00:00:00+00:00"
    # A garbage or missing index lists the same.
    (index / "entry-listing.json").write_text("{not json")
    for journal in (index / "entry-listing").glob("*.jsonl"):
        journal.write_text('["half a line\n')
    assert _ls_json(capsys, store) == after
    shutil.rmtree(index)
    assert _ls_json(capsys, store) == after
    # A journal of an older version (no format line: its inodes are of other files) is not
    # trusted, even where its numbers happen to fit.
    inode = (store.entry_dir(key) / "meta.json").stat().st_ino
    row = [key, inode, "bogus", None, "computed", "json", 1, "2020-01-01T00:00:00+00:00"]
    (index / "entries").mkdir()
    (index / "entries" / "old.1.x.jsonl").write_text(f"{json.dumps(row)}\n" * 2)
    assert _ls_json(capsys, store) == after


def test_ls_reads_an_older_snapshot_and_rewrites_it(
    store: Store,
    populated: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The snapshot is stored by column; one by rows (an older version's) is trusted as it
    is and rewritten, and a column of the wrong length makes it garbage (entries read)."""
    before = _ls_json(capsys, store)
    store.flush()
    for journal in (store.root / "index" / "entry-listing").glob("*.jsonl"):
        journal.unlink()  # this live process's: only the snapshot vouches for the entries now
    snapshot = store.root / "index" / "entry-listing.json"
    doc = json.loads(snapshot.read_text())
    assert doc["format"] == 3
    assert sorted(doc["keys"]) == sorted(populated.values())
    names = ("keys", "inodes", "names", "params", "statuses", "codecs", "sizes", "created")
    rows = [list(row) for row in zip(*(doc[name] for name in names), strict=True)]
    snapshot.write_text(json.dumps({"format": 2, "rows": rows}))
    read: list[str] = []
    real = listing.describe_entry

    def describe(layout: StoreLayout, key: str, inode: int) -> Summary | None:
        read.append(key)
        return real(layout, key, inode)

    monkeypatch.setattr(cli_module, "describe_entry", describe)
    assert _ls_json(capsys, store) == before
    assert read == []  # every entry vouched for by the older snapshot
    assert json.loads(snapshot.read_text())["format"] == 3
    doc["sizes"] = doc["sizes"][1:]
    snapshot.write_text(json.dumps(doc))
    assert _ls_json(capsys, store) == before
    assert sorted(read) == sorted(populated.values())


def test_ls_folds_a_closed_journal_and_leaves_a_live_one(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal closed at the end of a session is folded by the next listing although its
    process lives on; one still open is read at every listing, without rewriting the
    snapshot each time."""
    journals = store.root / "index" / "entry-listing"
    first = add_entry(store, "grid", {"a": 1})
    store.flush()  # the session's end: the journal is closed
    assert [p.name.endswith(".closed.jsonl") for p in journals.iterdir()] == [True]
    assert set(_ls_json(capsys, store)) == {first}
    assert list(journals.iterdir()) == []  # folded into the snapshot
    second = add_entry(store, "heat", {"b": 2})  # a live session's journal, left open
    snapshot = store.root / "index" / "entry-listing.json"
    snapshot.unlink()  # lost: rewritten by the next listing, with the live journal's row
    assert set(_ls_json(capsys, store)) == {first, second}
    written = snapshot.stat().st_ino
    assert sorted(json.loads(snapshot.read_text())["keys"]) == sorted([first, second])
    assert set(_ls_json(capsys, store)) == {first, second}
    assert snapshot.stat().st_ino == written  # not rewritten by the second listing
    assert len(list(journals.iterdir())) == 1
    store.flush()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b[n=1]", "b[n=2]", "c"]), st.sampled_from([1.0, 61.0, 2.5])
        ),
        min_size=1,
        max_size=40,
    ),
    st.randoms(use_true_random=False),
)
def test_ls_table_orders_by_label_then_last_use(
    entries: list[tuple[str, float]], rng: random.Random
) -> None:
    """The table's rows are sorted by label, then last use, then the listing's order, however
    the labels and times repeat and wherever the listing keeps their cells."""
    places = list(range(len(entries)))
    rng.shuffle(places)  # entry i's cells are in row places[i] of the columns
    cells = sorted(zip(places, range(len(entries)), strict=True))
    columns = LsColumns(
        [entries[i][0] for _, i in cells],
        [f"{i:012d}" + "0" * 20 for _, i in cells],
        ["computed/json"] * len(entries),
        [10] * len(entries),
        ["?"] * len(entries),
        places,
        [used for _, used in entries],
    )
    out = io.StringIO()
    ls_table(columns, out)
    shown = [int(line.split()[0]) for line in out.getvalue().splitlines()[1:]]
    assert shown == sorted(range(len(entries)), key=lambda i: (*entries[i], i))


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from([0.0, 59.0, 61.0, 1.8e9]),
            st.sampled_from(["computed/json", "failed/?", "corrupt"]),
            st.integers(0, 10**10),
        ),
        min_size=1,
        max_size=30,
        unique_by=lambda entry: entry[0],
    ),
    st.randoms(use_true_random=False),
)
def test_ls_table_is_the_same_wherever_the_listing_keeps_the_cells(
    entries: list[tuple[int, float, str, int]], rng: random.Random
) -> None:
    """A listing that found exactly the snapshot's entries (in any order: a directory's) has
    its columns, in label order, shown as they are; any other layout of the same entries
    (rows shuffled, a row of an entry gone) is sorted first. Both give the same table, byte
    for byte."""
    entries.sort(key=lambda entry: f"s[n={entry[0]}]")
    count = len(entries)

    def table(found: list[int], place: list[int], size: int) -> str:
        """Entry ``found[j]`` found ``j``-th, its cells in row ``place[found[j]]``."""
        cells: list[list[object]] = [["gone", "?", "?", 0, "?"] for _ in range(size)]
        for (n, _, state, nbytes), row in zip(entries, place, strict=True):
            cells[row] = [f"s[n={n}]", f"{n:032x}", state, nbytes, "2026-01-01T00:00:00+00:00"]
        labels, keys, states, sizes, created = map(list, zip(*cells, strict=True))
        rows = [place[i] for i in found]
        used = [entries[i][1] for i in found]
        out = io.StringIO()
        columns = LsColumns(labels, keys, states, sizes, created, rows, used)
        total = ls_table(columns, out)
        return f"{out.getvalue()}{total}"

    in_order = list(range(count))
    shuffled = rng.sample(in_order, count)
    as_written = table(in_order, in_order, count)
    assert table(shuffled, in_order, count) == as_written
    assert table(shuffled, rng.sample(in_order, count), count) == as_written
    assert table(shuffled, [row + 1 for row in in_order], count + 1) == as_written
    lines = as_written.splitlines()
    assert [line.split()[1] for line in lines[1:-1]] == [f"s[n={e[0]}]" for e in entries]
    assert [line[-16:] for line in lines[1:-1]] == [minute_text(int(e[1] // 60)) for e in entries]


_SCALARS = st.one_of(st.none(), st.text(), st.integers(), st.booleans(), st.floats())


@given(
    st.lists(st.sampled_from(["key", "stage", "size", "meta"]), unique=True).flatmap(
        lambda names: st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {name: st.one_of(st.none(), st.text(), st.integers()) for name in names}
                ),
                st.dictionaries(st.text(max_size=3), st.one_of(_SCALARS, st.lists(_SCALARS))),
            ),
            max_size=5,
        )
    )
)
def test_json_rows_are_json_dumps_with_an_indent(rows: list[dict[str, object]]) -> None:
    """``ls --json`` encodes its rows a column at a time: byte for byte what json writes, for
    rows alike (strings, integers, None: any text, escapes, non-ASCII) and for any others."""
    assert json_rows(rows) == json.dumps(rows, indent=1)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/St_Johns"])
def test_iso_time_is_the_local_time_of_each_timestamp(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``iso_time`` shares conversions between timestamps of one second, and still gives each
    its own local time and offset: fractions of a second, both passes of the hour repeated
    when the zone goes back, the hour skipped when it goes forward."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    clitable._iso_second.cache_clear()  # of another zone: a process keeps its own
    try:
        # Berlin goes back at 2026-10-25 01:00 UTC, forward at 2026-03-29 01:00 UTC; St John's
        # (offsets of half hours) at 2026-11-01 04:30 and 2026-03-08 05:30 UTC.
        changes = (1792890000.0, 1774746000.0, 1793507400.0, 1772947800.0)
        stamps = [
            start + offset + fraction
            for start in (*changes, 0.0)
            for offset in range(-3900, 3900, 600)
            for fraction in (0.0, 0.25, 0.9999996, -0.0000004)
        ]
        for stamp in stamps * 2:  # the second pass from the cache
            expected = datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")
            assert iso_time(stamp) == expected, stamp
    finally:
        monkeypatch.undo()
        time.tzset()
        clitable._iso_second.cache_clear()

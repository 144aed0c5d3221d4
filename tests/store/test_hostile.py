"""Hostile stores and dead holders: nothing lost outside the store, nothing run, nothing hangs.

Each test names the numbered point of the store's guarantees it checks (``docs/store.md``,
"Security model" and "Housekeeping").
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pytest
from physpipe_testing import CallLog, wait_for

from pytest_physpipe.errors import CorruptEntryError, SecretError, StoreError
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.cli import main as physpipe
from pytest_physpipe.store.codecs import PickleCodec, TreeCodec
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.fileio import hash_file
from pytest_physpipe.store.hosts import hostname, pid_alive
from pytest_physpipe.store.locks import KeyLock
from pytest_physpipe.store.signing import load_secret

KEY = "ab" + "0" * 30

HOLD = """
import sys, time
from pathlib import Path
from typing import Literal
from pytest_physpipe.store.locks import KeyLock
lock = KeyLock(Path(sys.argv[1]), mode=sys.argv[2], describe="stage heat")
lock.acquire()
Path(sys.argv[3]).touch()
time.sleep(120)
"""


def _hold(path: Path, mode: str, held: Path) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path), mode, str(held)])
    wait_for(held)
    return child


def _record(key: str = KEY) -> StageRecord:
    return StageRecord(
        key=key, name="heat", config={}, upstream={}, status="computed", created_at="now",
        host="h", versions={}, code="c",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 1. A killed holder is dead, even as a zombie; a wait always says who holds the lock


def test_zombie_holder_of_a_soft_lock_is_dead(tmp_path: Path) -> None:
    path, held = tmp_path / "locks" / "k.lock", tmp_path / "held"
    path.parent.mkdir()
    child = _hold(path, "soft", held)
    os.kill(child.pid, signal.SIGKILL)  # and not reaped: a zombie, as after the OOM killer
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    lock = KeyLock(path, mode="soft", timeout=10)
    started = time.monotonic()
    assert lock.acquire()
    assert time.monotonic() - started < 5
    lock.release()
    child.wait()


@pytest.mark.parametrize("mode", ["flock", "soft"])
def test_a_waiter_says_periodically_who_holds_the_lock(
    tmp_path: Path, mode: Literal["flock", "soft"]
) -> None:
    path, held = tmp_path / "locks" / "k.lock", tmp_path / "held"
    path.parent.mkdir()
    child = _hold(path, mode, held)
    said: list[str] = []
    lock = KeyLock(
        path, mode=mode, timeout=1.2, describe="stage cool", on_wait=said.append, report_every=0.3
    )
    try:
        with pytest.raises(TimeoutError):
            lock.acquire()
    finally:
        child.kill()
        child.wait()
    assert len(said) >= 2, said
    assert f"pid {child.pid} on host {hostname()}" in said[0]
    assert "stage heat" in said[0]
    assert "stage cool" in said[0]
    assert " s ago" in said[0]  # how long it has held it


# ---------------------------------------------------------------------------------------------
# 2. Housekeeping never follows symlinks nor deletes outside the store


def _old(path: Path, days: float = 30) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then), follow_symlinks=False)


def test_prune_never_deletes_through_symlinks(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    outside = tmp_path / "precious"
    outside.mkdir()
    dead = f"work-0123.{hostname()}.999999999.abcd"
    for name in (dead, "thesis.tex", f"x.{hostname()}.999999998.ab"):
        (outside / name).mkdir() if name != "thesis.tex" else (outside / name).write_text("x")
        _old(outside / name)
    for sub in ("tmp", "trash"):
        (store.root / sub).rmdir()
        (store.root / sub).symlink_to(outside)
    # A shard of entries that links elsewhere: the key folder in it is not the store's.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / KEY).mkdir(parents=True)
    (elsewhere / KEY / "meta.json").write_text(json.dumps({"key": KEY, "record": {}}))
    _old(elsewhere / KEY / "meta.json")
    (store.root / "entries" / KEY[:2]).symlink_to(elsewhere)
    assert physpipe(["--dir", str(store.root), "prune", "--older-than", "1s", "-q"]) in (0, 1)
    assert sorted(p.name for p in outside.iterdir()) == sorted(
        [dead, "thesis.tex", f"x.{hostname()}.999999998.ab"]
    )
    assert (elsewhere / KEY / "meta.json").is_file()


# ---------------------------------------------------------------------------------------------
# 3. Never remove the scratch of a live owner, on any host


def test_prune_spares_scratch_of_a_live_owner_on_another_host(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    live = store.root / "tmp" / "work-0123456789ab.node17.cluster.4242.q1w2e3"
    dead = store.root / "tmp" / "work-0123456789ab.node18.cluster.4343.r4t5y6"
    owners = store.root / "owners"
    owners.mkdir()
    for path, host, pid in ((live, "node17.cluster", 4242), (dead, "node18.cluster", 4343)):
        path.mkdir()
        (path / "partial.h5").write_text("hours of work")
        _old(path, days=0.1)  # the folder's mtime is hours old: appending does not touch it
        record = owners / f"{host}.{pid}.json"
        info = {"host": host, "boot": "b", "pidns": "n", "pid": pid, "heartbeat_s": 30.0}
        record.write_text(json.dumps(info))
    _old(owners / "node18.cluster.4343.json", days=1)  # its heartbeat stopped a day ago
    assert physpipe(["--dir", str(store.root), "prune", "-q"]) == 0
    assert (live / "partial.h5").is_file()
    assert not dead.exists()


def test_scratch_of_a_running_stage_has_a_beating_owner_record(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    scratch = store.scratch("work-0123456789ab")
    record = store.root / "owners" / f"{hostname()}.{os.getpid()}.json"
    info = json.loads(record.read_text())
    assert info["pid"] == os.getpid()
    assert info["heartbeat_s"] > 0
    assert store.cleanup() == 0
    assert scratch.is_dir()


# ---------------------------------------------------------------------------------------------
# 4. The secret: atomic, never empty or short, fail closed


@pytest.fixture
def secret_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("PHYSPIPE_SECRET", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "pytest-physpipe" / "secret"


def test_an_empty_secret_file_is_never_used(secret_home: Path) -> None:
    """What a failed first write (quota, full disk) left behind before: an empty key."""
    secret_home.parent.mkdir(parents=True)
    fd = os.open(secret_home, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    key = load_secret()
    assert len(key) >= 32
    assert secret_home.read_bytes().strip() == key
    assert stat.S_IMODE(secret_home.stat().st_mode) == 0o600


@pytest.mark.parametrize("value", ["", "short"])
def test_an_empty_or_short_env_secret_is_refused(
    secret_home: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PHYSPIPE_SECRET", value)
    with pytest.raises(SecretError, match="PHYSPIPE_SECRET"):
        load_secret()
    with pytest.raises(SecretError):
        PickleCodec().encode(object(), secret_home.parent)


def test_a_secret_file_others_can_read_is_refused(secret_home: Path) -> None:
    load_secret()
    secret_home.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret()


def test_a_failed_secret_write_leaves_no_file(
    secret_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fdopen = os.fdopen

    def full_disk(fd: int, *args: object, **kwargs: object) -> object:
        handle = real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]

        def write(data: bytes) -> int:
            raise OSError(28, "No space left on device")

        handle.write = write
        return handle

    monkeypatch.setattr(os, "fdopen", full_disk)
    with pytest.raises(SecretError, match="No space left"):
        load_secret()
    monkeypatch.undo()
    assert not secret_home.exists()
    assert not [p for p in secret_home.parent.iterdir() if p.name.startswith(".")]


PICKLED_PROJECT = """
from physlog import log
from pytest_physpipe import stage


class Mesh:
    def __init__(self, n):
        self.n = n


@stage
def mesh():
    log("mesh")
    return Mesh(8)


def test_mesh(mesh):
    assert mesh.n == 8
"""


def _run(pytester: pytest.Pytester, secret: str | None, *args: str) -> pytest.RunResult:
    env_secret = os.environ.pop("PHYSPIPE_SECRET", None)
    try:
        if secret is not None:
            os.environ["PHYSPIPE_SECRET"] = secret
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "default", *args)
    finally:
        os.environ.pop("PHYSPIPE_SECRET", None)
        if env_secret is not None:
            os.environ["PHYSPIPE_SECRET"] = env_secret


def test_short_secret_fails_closed_in_a_run(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(test_mesh=PICKLED_PROJECT)
    result = _run(pytester, "short")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*mesh*not cached*PHYSPIPE_SECRET is only 5 bytes*"])
    assert not list((pytester.path / ".physpipe" / "entries").rglob("meta.json"))
    assert calls.take() == {"mesh": 1}


# ---------------------------------------------------------------------------------------------
# 5. Loading runs no code: tree entries import nothing unless signed; foreign signatures


def test_an_unsigned_tree_entry_imports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "evil.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('pwned').touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "tree.json").write_text(
        json.dumps({"__physpipe__": "model", "class": "evil:Model", "data": {}})
    )
    with pytest.raises(CorruptEntryError, match="not signed"):
        TreeCodec().decode(entry, {}, mmap_min=0)
    forged = {"hmac": "0" * 64, "signer": "0" * 16}
    with pytest.raises(CorruptEntryError, match="signed with another secret"):
        TreeCodec().decode(entry, forged, mmap_min=0)
    assert not (tmp_path / "pwned").exists()
    assert "evil" not in sys.modules


MODEL_PROJECT = """
from pydantic import BaseModel
import numpy as np
from physlog import log
from pytest_physpipe import stage


class Grid(BaseModel):
    n: int


@stage
def grid():
    log("grid")
    return {"grid": Grid(n=4), "x": np.zeros(4)}


def test_grid(grid):
    assert grid["grid"].n == 4
"""


@pytest.mark.parametrize("project", [PICKLED_PROJECT, MODEL_PROJECT], ids=["pickle", "tree"])
def test_another_secret_is_reported_as_such_and_both_users_keep_their_cache(
    pytester: pytest.Pytester, calls: CallLog, project: str
) -> None:
    pytester.makepyfile(test_it=project)
    alice, bob = "alice-" + "a" * 20, "bob-" + "b" * 20
    _run(pytester, alice).assert_outcomes(passed=1)
    assert sum(calls.take().values()) == 1
    (meta,) = (pytester.path / ".physpipe" / "entries").rglob("meta.json")
    signed_by_alice = meta.read_bytes()
    result = _run(pytester, bob)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*signed with another secret*"])
    assert "corrupt" not in result.stdout.str()
    assert sum(calls.take().values()) == 1  # bob computes, without caching
    assert meta.read_bytes() == signed_by_alice  # alice's entry is kept
    _run(pytester, alice).assert_outcomes(passed=1)
    assert calls.take() == {}  # still a hit for alice


# ---------------------------------------------------------------------------------------------
# 6. A store only in a directory it created (or an empty one)


def test_a_project_directory_is_refused_as_a_store(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_it="""
        from pytest_physpipe import stage

        @stage
        def grid():
            return [1, 2]

        def test_grid(grid):
            assert grid == [1, 2]
        """
    )
    pytester.path.chmod(0o755)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--physpipe-dir", ".")
    output = result.stdout.str() + result.stderr.str()
    assert "not part of a store" in output, output
    assert "test_it.py" in output
    assert "INTERNALERROR" not in output
    assert "Traceback" not in output
    assert not (pytester.path / ".gitignore").exists()
    assert not (pytester.path / "CACHEDIR.TAG").exists()
    assert stat.S_IMODE(pytester.path.stat().st_mode) == 0o755


def test_a_store_another_process_is_creating_is_not_refused(tmp_path: Path) -> None:
    # xdist workers create the store at once: one may list the root while another's marker
    # file is still a temporary file beside its final name. That is a store, not a project.
    root = tmp_path / "store"
    root.mkdir()
    (root / f".CACHEDIR.TAG.{os.getpid()}.0123abcd.tmp").write_text("")
    Store(root).ensure()
    assert (root / "CACHEDIR.TAG").is_file()

    project = tmp_path / "project"
    project.mkdir()
    (project / f".notes.txt.{os.getpid()}.0123abcd.tmp").write_text("")
    with pytest.raises(StoreError, match="not part of a store"):
        Store(project).ensure()


# ---------------------------------------------------------------------------------------------
# 8. Leftovers: SIGTERM cleans like Ctrl-C; what dead runs left goes at the next run's end

SLEEPER = """
import time
from pathlib import Path
from typing import Literal
from pytest_physpipe import stage

HERE = Path(__file__).parent


@stage
def sleeper(ctx):
    (ctx.workdir / "partial.dat").write_bytes(b"x" * 1000)
    (HERE / "ready").touch()
    time.sleep(60)
    return 1


def test_sleeper(sleeper):
    pass
"""


@pytest.mark.parametrize("lock", ["flock", "soft"])
def test_sigterm_cleans_up_like_ctrl_c(pytester: pytest.Pytester, lock: str) -> None:
    pytester.makepyfile(test_sleep=SLEEPER)
    store = pytester.path / "store"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PHYSPIPE_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
         f"--physpipe-dir={store}", "-o", f"physpipe_lock={lock}", "-q"],
        cwd=pytester.path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(pytester.path / "ready", timeout=60)
        assert list((store / "tmp").glob("work-*"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [p for p in (store / "tmp").iterdir() if not p.name.startswith(".")]
    assert not list((store / "locks").glob("*.lock")) or lock == "flock"
    assert not list((store / "owners").glob("*.json"))


def test_leftovers_of_dead_runs_on_this_host_go_at_the_end_of_a_run(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_it="def test_nothing():\n    pass\n")
    store = Store(pytester.path / "store")
    store.ensure()
    dead = store.root / "tmp" / f"work-0123456789ab.{hostname()}.999999999.abcd"
    dead.mkdir()
    (dead / "big.dat").write_bytes(b"x" * 4096)
    foreign = store.root / "tmp" / "work-0123456789ab.node17.cluster.4242.abcd"
    foreign.mkdir()
    _old(foreign, days=2)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--physpipe-dir={store.root}")
    result.assert_outcomes(passed=1)
    assert not dead.exists()
    assert foreign.exists()  # another host: only `physpipe prune` judges it, by its heartbeat


# ---------------------------------------------------------------------------------------------
# 9. physpipe verify checks signatures


def test_verify_reports_bad_and_foreign_signatures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PHYSPIPE_SECRET", "alice-" + "a" * 20)
    store = Store(tmp_path / "store")
    store.ensure()
    good, tampered = "cd" + "1" * 30, "ef" + "2" * 30
    for key in (good, tampered):
        store.commit(key, value={1, 2}, codec="pickle", record=_record(key), run_id="r")
    # Swap the pickle and fix the checksum, as someone who can write the store would.
    payload = store.entry_dir(tampered) / "value.pkl"
    import pickle

    payload.write_bytes(pickle.dumps({3, 4}))
    meta_path = store.entry_dir(tampered) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["value.pkl"] = {"size": payload.stat().st_size, "xxh3": hash_file(payload)}
    meta_path.write_text(json.dumps(meta))
    assert physpipe(["--dir", str(store.root), "verify", "-q"]) == 1
    out = capsys.readouterr().out
    assert f"CORRUPT  {tampered}" in out
    assert "signature does not verify" in out
    assert good not in out
    monkeypatch.setenv("PHYSPIPE_SECRET", "bob-" + "b" * 20)
    assert physpipe(["--dir", str(store.root), "verify", "-q", good]) == 0
    out = capsys.readouterr().out
    assert f"FOREIGN  {good}" in out
    assert "signed with another secret" in out

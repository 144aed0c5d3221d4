"""The store: layout, atomic commits, verification, corruption, crashes and full disks."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from physpipe_testing import CallLog

from pytest_physpipe.errors import CodecError, CorruptEntryError, StoreError
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.codecs import CodecRegistry, NpyCodec
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.locks import try_lock


def new_key() -> str:
    return uuid.uuid4().hex


def commit(store: Store, value: object, key: str | None = None, **kwargs: Any) -> str:
    key = key or new_key()
    store.ensure()
    record = StageRecord(key=key, name="s", created_at="2024-01-01T00:00:00+00:00")
    store.commit(key, value=value, record=record, run_id="run-1", **kwargs)
    return key


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


# -- layout ---------------------------------------------------------------------------------------


def test_commit_layout_and_tags(store: Store) -> None:
    key = commit(store, np.arange(10.0))
    root = store.root
    entry = root / "entries" / key[:2] / key
    assert (entry / "meta.json").is_file()
    assert (entry / "value.npy").is_file()
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["key"] == key
    assert meta["codec"] == "npy"
    assert meta["run_id"] == "run-1"
    assert meta["record"]["name"] == "s"
    assert set(meta["files"]) == {"value.npy"}
    assert meta["files"]["value.npy"]["size"] == (entry / "value.npy").stat().st_size
    assert (
        (root / "CACHEDIR.TAG")
        .read_text()
        .startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    assert (root / ".gitignore").read_text().splitlines()[-1] == "*"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert list((root / "tmp").iterdir()) == []  # nothing left from staging
    loaded = store.load(key)
    assert loaded is not None
    assert np.array_equal(loaded.value, np.arange(10.0))
    assert loaded.record.key == key
    assert store.exists(key)
    assert list(store.keys()) == [key]


def test_created_store_is_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "new" / "store"
    Store(root).ensure()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_existing_empty_directory_keeps_its_permissions(tmp_path: Path) -> None:
    """A directory the store did not create is not chmod-ed; what it puts inside is private."""
    root = tmp_path / "shared"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    Store(root).ensure()
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    for sub in ("entries", "tmp", "trash", "locks"):
        assert stat.S_IMODE((root / sub).stat().st_mode) == 0o700


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="--physpipe-dir"):
        Store(blocker / "store").ensure()


@pytest.mark.parametrize(
    "key",
    [
        "../../../../etc/passwd",
        "..",
        "",
        "A" * 32,
        "0" * 31,
        "0" * 33,
        "0" * 30 + "/x",
        "/" + "0" * 31,
        "0" * 31 + "\n",
        "0" * 32 + "\n",  # `$` alone would match before a trailing newline
        "g" * 32,
    ],
)
def test_invalid_keys_are_refused(store: Store, key: str) -> None:
    with pytest.raises(StoreError, match="not a physpipe key"):
        store.entry_dir(key)
    with pytest.raises(StoreError):
        store.load(key)
    with pytest.raises(StoreError):
        store.exists(key)
    with pytest.raises(StoreError):
        store.lock(key)
    with pytest.raises(StoreError):
        store.commit(key, value=1, codec="npy", record=StageRecord(key="x", name="s"), run_id="r")
    assert not (store.root / "entries").exists() or not any((store.root / "entries").iterdir())


def test_commit_never_replaces_without_replace(store: Store) -> None:
    key = commit(store, [1])
    commit(store, [2], key=key)  # lost race: the first entry stays
    loaded = store.load(key)
    assert loaded is not None
    assert loaded.value == [1]
    commit(store, [3], key=key, replace=True)
    loaded = store.load(key)
    assert loaded is not None
    assert loaded.value == [3]
    assert not any((store.root / "tmp").iterdir())  # the losing staging dir was removed
    assert not any((store.root / "trash").iterdir())  # the replaced entry too


def test_failed_encode_writes_nothing(store: Store) -> None:
    class Failing(NpyCodec):
        name = "failing"

        def encode(self, value: object, dest: Path) -> dict[str, Any]:
            (dest / "half.npy").write_bytes(b"partial")
            raise CodecError("boom")

    store.ensure()
    store.codecs.add(Failing())
    key = new_key()
    with pytest.raises(CodecError):
        store.commit(
            key, value=1, codec="failing", record=StageRecord(key=key, name="s"), run_id="r"
        )
    assert not store.exists(key)
    assert not store.entry_dir(key).exists()
    assert list((store.root / "tmp").iterdir()) == []


# -- corruption -----------------------------------------------------------------------------------


def _payload(store: Store, key: str, name: str = "value.npy") -> Path:
    return store.entry_dir(key) / name


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_byte_is_corrupt(store: Store) -> None:
    key = commit(store, np.arange(100.0))
    flip(_payload(store, key), -3)
    with pytest.raises(CorruptEntryError, match="checksum"):
        store.load(key)


def test_truncated_payload_is_corrupt(store: Store) -> None:
    key = commit(store, np.arange(100.0))
    path = _payload(store, key)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CorruptEntryError, match="bytes"):
        store.load(key)


def test_missing_payload_file_is_corrupt_not_a_miss(store: Store) -> None:
    key = commit(store, {"a": np.arange(3), "b": (1, 2)})
    (_payload(store, key, "a0.npy")).unlink()
    with pytest.raises(CorruptEntryError, match="missing"):
        store.load(key)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{not json", b"[]", b'{"key": "0123"}', b'{"key": "KEY", "files": {}}'],
    ids=["empty", "invalid", "list", "other-key", "no-files"],
)
def test_garbage_meta_is_corrupt(store: Store, garbage: bytes) -> None:
    key = commit(store, [1, 2])
    (store.entry_dir(key) / "meta.json").write_bytes(garbage.replace(b"KEY", key.encode()))
    with pytest.raises(CorruptEntryError):
        store.load(key)


def test_missing_meta_is_a_miss(store: Store) -> None:
    key = commit(store, [1, 2])
    (store.entry_dir(key) / "meta.json").unlink()
    assert store.load(key) is None
    assert not store.exists(key)
    # A commit replaces the damaged directory instead of "losing a race" to it.
    commit(store, [3], key=key)
    loaded = store.load(key)
    assert loaded is not None
    assert loaded.value == [3]


def test_large_payload_is_sample_checked_on_hit_and_fully_on_request(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", verify_max=64 << 10)
    array = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    key = commit(store, array)
    path = _payload(store, key)
    size = path.stat().st_size
    last = size - 4096
    # Between the first two sampled blocks (see fileio.sample_hash): a hit cannot see this byte.
    unsampled = last // 15 + 4096 + 100
    assert unsampled + 1 < 2 * last // 15
    flip(path, unsampled)
    hit = store.load(key)
    assert hit is not None  # sampled verification above physpipe_verify_max, by design
    with pytest.raises(CorruptEntryError, match="checksum"):
        store.load(key, full_verify=True)
    flip(path, unsampled)  # restored
    flip(path, 200)  # in the first block (the header's neighbourhood): sampled
    with pytest.raises(CorruptEntryError, match="checksum"):
        store.load(key)
    flip(path, 200)
    flip(path, size - 1)  # in the tail: sampled
    with pytest.raises(CorruptEntryError, match="checksum"):
        store.load(key)


def test_entry_replaced_mid_load_is_a_miss(store: Store) -> None:
    """A lock-free reader racing a rebuild or a removal gets None, never mixed data."""
    key = commit(store, np.zeros(4))
    codecs = store.codecs
    real = codecs.get("npy")

    class Racing(NpyCodec):
        action = "replace"

        def decode(self, src: Path, meta: Any, *, mmap_min: int) -> object:
            if self.action == "replace":
                self.action = ""
                commit(store, np.ones(4), key=key, replace=True)
            elif self.action == "remove":
                self.action = ""
                store.remove(key)
            return real.decode(src, meta, mmap_min=mmap_min)

    racing = Racing()
    codecs.add(racing)
    assert store.load(key) is None  # decoded the new files with the old meta: refused
    loaded = store.load(key)
    assert loaded is not None
    assert np.array_equal(loaded.value, np.ones(4))
    racing.action = "remove"
    assert store.load(key) is None
    assert not store.exists(key)


def test_corrupt_entry_through_the_plugin_warns_and_recomputes(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        from physlog import log
        from pytest_physpipe import stage

        @stage
        def field():
            log("field")
            return {"u": np.arange(50.0), "e": 1.5}

        def test_field(field):
            assert field["e"] == 1.5
            assert field["u"].sum() == 1225.0
        """
    )
    store = pytester.path / "store"
    args = (f"--physpipe-dir={store}", "-p", "no:cacheprovider", "-W", "always")
    pytester.runpytest(*args).assert_outcomes(passed=1)
    assert calls.take() == {"field": 1}
    (entry,) = (store / "entries").glob("*/*")
    flip(entry / "a0.npy", -1)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*CorruptEntryWarning*field*corrupt*recomputing*"])
    assert calls.take() == {"field": 1}
    Store(store).verify(entry.name, json.loads((entry / "meta.json").read_text()), full=True)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    assert calls.take() == {}
    assert "CorruptEntryWarning" not in result.stdout.str()


def test_failed_stage_writes_nothing(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(
        """
        from physlog import log
        from pytest_physpipe import stage

        @stage
        def broken():
            log("broken")
            raise RuntimeError("diverged")

        def test_it(broken):
            pass
        """
    )
    store = pytester.path / "store"
    result = pytester.runpytest(f"--physpipe-dir={store}", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: diverged*"])
    assert not list((store / "entries").rglob("meta.json"))
    assert [p for p in (store / "tmp").iterdir() if not p.name.startswith(".")] == []
    assert calls.take() == {"broken": 1}


# -- crashes: real processes killed with SIGKILL --------------------------------------------------

CRASH_PROJECT = """
import os, time
from pathlib import Path
import numpy as np
from physlog import log
from pytest_physpipe import StageContext, stage

HERE = Path(__file__).parent


@stage(codec="{codec}")
def victim(ctx: StageContext):
    log("victim")
    if os.environ.get("CRASH") == "compute":
        (ctx.workdir / "partial.dat").write_text("half")  # scratch that a killed run leaves
        (HERE / "ready").write_text(str(os.getpid()))
        time.sleep(120)
    return np.arange(1000.0)


def test_victim(victim):
    assert victim.sum() == 499500.0
"""

SLOW_CODEC = """
import os, time
from pathlib import Path
from pytest_physpipe.store.codecs import NpyCodec


class SlowNpy(NpyCodec):
    name = "slownpy"

    def encode(self, value, dest):
        meta = super().encode(value, dest)
        if os.environ.get("CRASH") == "commit":
            (Path(__file__).parent / "ready").write_text(str(os.getpid()))
            time.sleep(120)
        return meta


def pytest_physpipe_register_codecs(registry):
    registry.add(SlowNpy())
"""


def _run(pytester: pytest.Pytester, store: Path, lock: str, crash: str = "") -> Any:
    env = {**os.environ, "CRASH": crash, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PHYSPIPE_DIR", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
           f"--physpipe-dir={store}", "-o", f"physpipe_lock={lock}", "-q"]  # fmt: skip
    if not crash:
        return subprocess.run(
            cmd,
            check=False,
            cwd=pytester.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    proc = subprocess.Popen(
        cmd, cwd=pytester.path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ready = pytester.path / "ready"
    deadline = time.monotonic() + 90
    while not ready.exists():
        assert proc.poll() is None, "the run ended before reaching the crash point"
        assert time.monotonic() < deadline, "the run never reached the crash point"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    ready.unlink()
    return proc


@pytest.mark.parametrize("lock", ["flock", "soft"])
@pytest.mark.parametrize("crash", ["compute", "commit"])
def test_sigkill_leaves_a_usable_store(
    pytester: pytest.Pytester, calls: CallLog, crash: str, lock: str
) -> None:
    pytester.makepyfile(test_crash=CRASH_PROJECT.format(codec="slownpy"))
    pytester.makeconftest(SLOW_CODEC)
    store = pytester.path / "store"
    killed = _run(pytester, store, lock, crash=crash)
    assert killed.returncode == -signal.SIGKILL
    assert calls.take() == {"victim": 1}
    # The entry is absent (never partial), and the killed run's leftovers are in tmp/.
    assert not list((store / "entries").rglob("meta.json"))
    assert not [p for p in (store / "entries").rglob("*") if p.is_file()]
    leftovers = [p for p in (store / "tmp").iterdir() if not p.name.startswith(".probe-")]
    assert leftovers, "a killed run leaves its scratch or staging directory"
    # Its lock is not held (flock: the kernel dropped it; soft: the dead pid's lock is broken).
    (lock_file,) = (store / "locks").glob("*.lock")
    probe = try_lock(lock_file, "soft" if lock == "soft" else "flock")
    assert probe is not None
    probe.release()
    # Cleanup removes what the dead process left, and nothing of a live one.
    assert Store(store).cleanup() == len(leftovers)
    assert [p for p in (store / "tmp").iterdir() if not p.name.startswith(".probe-")] == []
    # The next run computes once, commits, and the one after is a hit.
    first = _run(pytester, store, lock)
    assert first.returncode == 0, first.stdout + first.stderr
    assert calls.take() == {"victim": 1}
    second = _run(pytester, store, lock)
    assert second.returncode == 0, second.stdout + second.stderr
    assert calls.take() == {}
    (meta,) = (store / "entries").rglob("meta.json")
    key = meta.parent.name
    Store(store).verify(key, json.loads(meta.read_text()), full=True)


def test_sigkill_recovery_without_cleanup(pytester: pytest.Pytester, calls: CallLog) -> None:
    """Without anyone calling cleanup(), the next run still computes once and passes."""
    pytester.makepyfile(test_crash=CRASH_PROJECT.format(codec="slownpy"))
    pytester.makeconftest(SLOW_CODEC)
    store = pytester.path / "store"
    _run(pytester, store, "soft", crash="commit")
    assert calls.take() == {"victim": 1}
    result = _run(pytester, store, "soft")
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls.take() == {"victim": 1}


def test_cleanup_spares_live_writers_and_fresh_foreign_leftovers(store: Store) -> None:
    import socket

    store.ensure()
    tmp = store.root / "tmp"
    host = socket.gethostname()
    live = tmp / f"{new_key()}.{host}.{os.getpid()}.abcd1234"
    dead_pid = _dead_pid()
    dead = tmp / f"{new_key()}.{host}.{dead_pid}.abcd1234"
    work = tmp / f"work-0123456789ab.{host}.{dead_pid}.x1y2"
    foreign = tmp / f"{new_key()}.other.host.example.123.abcd1234"
    old_foreign = tmp / f"{new_key()}.other.host.example.124.abcd1234"
    trash_new = store.root / "trash" / f"{new_key()}.aa"
    trash_old = store.root / "trash" / f"{new_key()}.bb"
    for path in (live, dead, work, foreign, old_foreign, trash_new, trash_old):
        path.mkdir()
        (path / "f").write_text("x")
    ancient = time.time() - 7200
    for path in (live, trash_old):
        os.utime(path, (ancient, ancient))
    # Another host's scratch without an owner record (an older version) waits a week.
    week_old = time.time() - 8 * 86400
    os.utime(old_foreign, (week_old, week_old))
    assert store.cleanup() == 4
    assert live.exists()  # old, but its writer lives: never removed
    assert foreign.exists()
    assert trash_new.exists()
    assert not dead.exists()
    assert not work.exists()
    assert not old_foreign.exists()
    assert not trash_old.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- full disk ------------------------------------------------------------------------------------

FULL_DISK_CONFTEST = """
import resource, signal

# Files may not grow past 256 KiB in this process: a write beyond fails with EFBIG instead of
# the default SIGXFSZ kill, as a full disk fails with ENOSPC.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, _hard))
"""


def test_full_disk_warns_and_the_test_gets_its_value(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makeconftest(FULL_DISK_CONFTEST)
    pytester.makepyfile(
        """
        import numpy as np
        from physlog import log
        from pytest_physpipe import stage

        @stage
        def big():
            log("big")
            return {"u": np.ones(1 << 17), "n": 3}  # a 1 MiB array

        @stage
        def small():
            return [1, 2, 3]

        def test_big(big, small):
            assert big["n"] == 3
            assert big["u"].sum() == float(1 << 17)
            assert not big["u"].flags.writeable  # as if it had been stored
            assert small == [1, 2, 3]
        """
    )
    store = pytester.path / "store"
    result = pytester.runpytest_subprocess(
        f"--physpipe-dir={store}", "-p", "no:cacheprovider", "-p", "no:xdist"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*StoreWriteWarning*big*not cached*"])
    assert calls.take() == {"big": 1}
    metas = list((store / "entries").rglob("meta.json"))
    assert len(metas) == 1  # only `small` was stored
    assert json.loads(metas[0].read_text())["record"]["name"] == "small"
    assert [p for p in (store / "tmp").iterdir() if not p.name.startswith(".")] == []
    assert [p for p in (store / "entries").rglob("*") if p.is_file()] == [
        p for p in metas[0].parent.iterdir()
    ]


def test_store_with_registry_of_its_own(tmp_path: Path) -> None:
    registry = CodecRegistry()
    store = Store(tmp_path / "s", codecs=registry, mmap_min=1024)
    key = commit(store, np.zeros(1000))
    loaded = store.load(key)
    assert loaded is not None
    assert isinstance(loaded.value, np.memmap)

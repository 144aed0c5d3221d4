"""Per-key store locks, exercised with real processes racing on real files."""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from physpipe_testing import Spawn, finish, wait_for

from pytest_physpipe.errors import LockTimeoutError
from pytest_physpipe.store import filesystem, hosts
from pytest_physpipe.store.filesystem import resolve_lock_mode
from pytest_physpipe.store.locks import KeyLock, try_lock

# Children wait for a "go" file so that they race from the same instant.
PRELUDE = """
import json, os, sys, time
from pathlib import Path
from pytest_physpipe.store import hosts, locks
from pytest_physpipe.errors import LockTimeoutError
from pytest_physpipe.store.locks import KeyLock

def wait_for(path, timeout=30.0):
    end = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > end:
            sys.exit(f"timed out waiting for {path}")
        time.sleep(0.001)

def log(path, line):
    with open(path, "a") as handle:  # O_APPEND: one short write per line, never torn
        handle.write(line + "\\n")
"""


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def disjoint(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(ordered))


# ---------------------------------------------------------------------------------------------
# Exactly once


COMPUTE_ONCE = """
path, marker, logfile, go, mode = sys.argv[1:6]
wait_for(go)
with KeyLock(Path(path), mode=mode, timeout=60, describe="stage grid"):
    start = time.monotonic()
    if Path(marker).exists():   # "the entry exists": load it
        action = "load"
    else:
        action = "compute"
        time.sleep(0.05)
        Path(marker).write_text("entry")
    log(logfile, f"{action} {start} {time.monotonic()}")
"""


@pytest.mark.parametrize("mode", ["flock", "soft"])
def test_racing_processes_compute_exactly_once(tmp_path: Path, spawn: Spawn, mode: str) -> None:
    lock, marker, logfile, go = (tmp_path / n for n in ("locks/k.lock", "entry", "log", "go"))
    children = [spawn(COMPUTE_ONCE, lock, marker, logfile, go, mode) for _ in range(4)]
    go.touch()
    for child in children:
        finish(child)
    lines = [line.split() for line in logfile.read_text().splitlines()]
    assert sorted(action for action, *_ in lines) == ["compute", "load", "load", "load"]
    assert disjoint([(float(start), float(end)) for _, start, end in lines])
    assert mode == "flock" or not lock.exists()  # soft locks vanish on release


# ---------------------------------------------------------------------------------------------
# Holders that die


HOLD = """
path, held, mode = sys.argv[1:4]
lock = KeyLock(Path(path), mode=mode, describe="stage heat", heartbeat=float(sys.argv[4]))
if len(sys.argv) > 5:
    hosts._HOST = hosts.Host(sys.argv[5], "other-boot", "other-ns")  # pretend: another host
lock.acquire()
Path(held).touch()
time.sleep(120)
"""


def test_flock_holder_killed_frees_the_lock(tmp_path: Path, spawn: Spawn) -> None:
    path, held = tmp_path / "locks" / "k.lock", tmp_path / "held"
    holder = spawn(HOLD, path, held, "flock", 2.0)
    wait_for(held)

    assert not KeyLock(path, mode="flock").acquire(blocking=False)
    with pytest.raises(LockTimeoutError) as info:
        KeyLock(path, mode="flock", timeout=0.2, describe="stage heat").acquire()
    message = str(info.value)
    assert "stage heat" in message
    assert str(path) in message
    assert f"pid {holder.pid}" in message

    kill(holder)
    start = time.monotonic()
    with KeyLock(path, mode="flock", timeout=10) as lock:
        assert lock.held
    print(f"flock: acquired {time.monotonic() - start:.4f} s after the holder was killed")


def test_soft_lock_of_dead_process_on_this_host_is_broken_promptly(
    tmp_path: Path, spawn: Spawn
) -> None:
    path, held = tmp_path / "locks" / "k.lock", tmp_path / "held"
    holder = spawn(HOLD, path, held, "soft", 2.0)
    wait_for(held)
    assert json.loads(path.read_text())["pid"] == holder.pid

    with pytest.raises(LockTimeoutError) as info:
        KeyLock(path, mode="soft", timeout=0.3, describe="stage heat").acquire()
    message = str(info.value)
    assert "stage heat" in message
    assert f"pid {holder.pid}" in message
    assert f"delete {path}" in message

    kill(holder)
    start = time.monotonic()
    # The stale threshold stays at its 30 s default: only "pid is dead" can break it in time.
    with KeyLock(path, mode="soft", timeout=10) as lock:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        assert lock.held
    print(f"soft: broke a dead holder's lock in {time.monotonic() - start:.4f} s")


def test_soft_lock_with_live_heartbeat_is_never_broken(tmp_path: Path, spawn: Spawn) -> None:
    path, held = tmp_path / "locks" / "k.lock", tmp_path / "held"
    # The holder claims another host, so only its heartbeat (every 50 ms) vouches for it.
    holder = spawn(HOLD, path, held, "soft", 0.05, "elsewhere")
    wait_for(held)

    # Waiting 2.5 times the stale threshold: a broken lock would have been taken by now.
    with pytest.raises(LockTimeoutError) as info:
        KeyLock(path, mode="soft", stale_after=1.0, timeout=2.5, describe="stage heat").acquire()
    assert "elsewhere" in str(info.value)
    assert f"pid {holder.pid}" in str(info.value)

    kill(holder)  # the heartbeat stops: after the threshold, the lock is stale
    start = time.monotonic()
    with KeyLock(path, mode="soft", stale_after=1.0, timeout=30):
        waited = time.monotonic() - start
    assert waited >= 0.9  # never before the threshold: we cannot tell a stopped host sooner
    assert not path.with_name(path.name + ".break").exists()


BREAK_RACE = """
path, logfile, go, release = sys.argv[1:5]
lock = KeyLock(Path(path), mode="soft", stale_after=0.3, timeout=4.0)
wait_for(go)
try:
    lock.acquire()
except LockTimeoutError:
    log(logfile, "timeout")
else:
    log(logfile, "got")
    wait_for(release)
    lock.release()
"""


def test_waiters_breaking_a_stale_lock_at_once_let_exactly_one_in(
    tmp_path: Path, spawn: Spawn
) -> None:
    path, logfile, go, release = (tmp_path / n for n in ("locks/k.lock", "log", "go", "release"))
    path.parent.mkdir()
    # A lock left by a process on a host that is gone: no heartbeat will ever touch it.
    dead = {"host": "gone", "pid": 1, "token": "old", "started": 0.0, "heartbeat_s": 0.05}
    path.write_text(json.dumps(dead))
    children = [spawn(BREAK_RACE, path, logfile, go, release) for _ in range(4)]
    go.touch()
    end = time.monotonic() + 60
    while len(logfile.read_text().splitlines() if logfile.exists() else []) < 4:
        assert all(child.poll() in (None, 0) for child in children)
        assert time.monotonic() < end
        time.sleep(0.01)
    release.touch()
    for child in children:
        finish(child)
    assert sorted(logfile.read_text().split()) == ["got", "timeout", "timeout", "timeout"]
    assert not path.exists()
    assert not path.with_name(path.name + ".break").exists()


# ---------------------------------------------------------------------------------------------
# Wake-up latency


LATENCY = """
path, outdir, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
for i in range(rounds):
    lock = KeyLock(Path(path), mode="flock", timeout=60)
    lock.acquire()
    (outdir / f"held-{i}").touch()
    wait_for(outdir / f"waiting-{i}")
    time.sleep(0.03)  # let the waiter settle into its polling loop
    released = time.monotonic()
    lock.release()
    (outdir / f"tmp-{i}").write_text(repr(released))
    (outdir / f"tmp-{i}").rename(outdir / f"released-{i}")  # never seen half-written
    wait_for(outdir / f"got-{i}")  # polling is not FIFO: do not snatch the lock straight back
"""


def test_waiter_sees_release_within_milliseconds(tmp_path: Path, spawn: Spawn) -> None:
    path, rounds = tmp_path / "locks" / "k.lock", 10
    holder = spawn(LATENCY, path, tmp_path, rounds)
    latencies = []
    for i in range(rounds):
        wait_for(tmp_path / f"held-{i}")
        (tmp_path / f"waiting-{i}").touch()
        lock = KeyLock(path, mode="flock", timeout=30)
        lock.acquire()
        acquired = time.monotonic()
        (tmp_path / f"got-{i}").touch()
        lock.release()
        wait_for(tmp_path / f"released-{i}")
        latencies.append(acquired - float((tmp_path / f"released-{i}").read_text()))
    finish(holder)
    median = statistics.median(latencies)
    print(f"flock wake-up latency: median {median * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms")
    assert median < 0.5


# ---------------------------------------------------------------------------------------------
# In-process behaviour


@pytest.mark.parametrize("mode", ["flock", "soft"])
def test_two_instances_in_one_process_exclude_each_other(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "locks" / "k.lock"
    first = KeyLock(path, mode=mode)  # type: ignore[arg-type]
    assert first.acquire(blocking=False)
    assert try_lock(path, mode) is None  # type: ignore[arg-type]
    first.release()
    second = try_lock(path, mode)  # type: ignore[arg-type]
    assert second is not None
    assert second.held
    second.release()
    assert not second.held


def test_flock_file_removed_while_held_is_safe(tmp_path: Path) -> None:
    """A waiter that locked the unlinked file must notice and lock the new one."""
    path = tmp_path / "locks" / "k.lock"
    first = KeyLock(path, mode="flock")
    first.acquire()
    waiter = KeyLock(path, mode="flock", timeout=30)
    thread = threading.Thread(target=waiter.acquire)
    thread.start()
    time.sleep(0.05)  # the waiter has opened the old file and polls it
    first.release(remove=True)
    thread.join(timeout=30)
    assert waiter.held
    assert path.exists()
    assert not KeyLock(path, mode="flock").acquire(blocking=False)
    waiter.release()


def test_soft_release_leaves_a_lock_that_is_no_longer_ours(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "k.lock"
    lock = KeyLock(path, mode="soft")
    lock.acquire()
    other = {"host": "elsewhere", "pid": 4242, "token": "theirs", "heartbeat_s": 2.0}
    path.write_text(json.dumps(other))  # as if broken and re-acquired by someone else
    lock.release()
    assert json.loads(path.read_text())["token"] == "theirs"


def test_soft_heartbeat_notices_a_lost_lock(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "k.lock"
    lock = KeyLock(path, mode="soft", heartbeat=0.02)
    lock.acquire()
    before = path.stat().st_mtime_ns
    end = time.monotonic() + 30
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < end
        time.sleep(0.01)
    path.unlink()
    while not lock.lost:
        assert time.monotonic() < end
        time.sleep(0.01)
    lock.release()


def test_try_lock_breaks_soft_lock_of_dead_local_process(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "k.lock"
    path.parent.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    host = hosts.this_host()
    dead = {
        "host": host.name,
        "boot": host.boot,
        "pidns": host.pidns,
        "pid": int(gone.stdout),
        "token": "old",
        "heartbeat_s": 2.0,
    }
    path.write_text(json.dumps(dead))
    lock = try_lock(path, "soft")
    assert lock is not None
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()


def test_soft_lock_of_other_host_is_not_broken_by_one_look(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "k.lock"
    path.parent.mkdir()
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t", "heartbeat_s": 2}))
    assert try_lock(path, "soft", stale_after=0.001) is None
    assert json.loads(path.read_text())["token"] == "t"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        KeyLock(tmp_path / "k.lock", mode="nfs")  # type: ignore[arg-type]
    lock = KeyLock(tmp_path / "k.lock", mode="flock")
    lock.acquire()
    with pytest.raises(RuntimeError, match="already held"):
        lock.acquire()
    lock.release()
    lock.release()  # releasing twice is harmless


# ---------------------------------------------------------------------------------------------
# Choosing the mode


def test_resolve_lock_mode_on_local_path(tmp_path: Path) -> None:
    if filesystem.is_network_filesystem(filesystem.filesystem_type(tmp_path)):
        pytest.skip("the temporary directory is on a network filesystem here")
    assert resolve_lock_mode("auto", tmp_path / "store") == "flock"
    assert resolve_lock_mode("flock", tmp_path) == "flock"
    assert resolve_lock_mode("soft", tmp_path) == "soft"


def test_resolve_lock_mode_rejects_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="physpipe_lock") as info:
        resolve_lock_mode("fcntl", tmp_path)
    for allowed in ("'auto'", "'flock'", "'soft'"):
        assert allowed in str(info.value)


MOUNTINFO = textwrap.dedent(
    r"""
    22 1 0:21 / / rw,relatime - overlay overlay rw
    30 22 0:40 / /mnt rw,relatime - ext4 /dev/sda1 rw
    31 30 0:41 /export /mnt/shared\040store rw,relatime - nfs4 server:/export rw,vers=4.2
    32 30 0:42 / /mnt/sharedx rw,relatime - lustre 10.0.0.1@tcp:/fs rw
    33 22 0:43 / /scratch rw - fuse.sshfs me@host:/ rw
    """
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/me/project/.physpipe", "overlay"),
        ("/mnt/data", "ext4"),
        ("/mnt/shared store/.physpipe/locks", "nfs4"),
        ("/mnt/shared store", "nfs4"),
        ("/mnt/shared", "ext4"),  # a prefix of a mount point's name is not inside it
        ("/mnt/sharedx/a", "lustre"),
        ("/scratch/run", "fuse.sshfs"),
    ],
)
def test_filesystem_type_from_longest_mount_prefix(path: str, expected: str) -> None:
    assert filesystem._fs_type_from_tables(Path(path), MOUNTINFO, None) == expected


def test_filesystem_type_from_proc_mounts() -> None:
    mounts = "rootfs / rootfs rw 0 0\nserver:/x /data nfs rw 0 0\n"
    assert filesystem._fs_type_from_tables(Path("/data/store"), None, mounts) == "nfs"
    assert filesystem._fs_type_from_tables(Path("/home"), None, mounts) == "rootfs"


@pytest.mark.parametrize(
    ("fs_type", "network"),
    [
        ("nfs", True),
        ("nfs4", True),
        ("cifs", True),
        ("lustre", True),
        ("gpfs", True),
        ("fuse.sshfs", True),
        ("9p", True),
        ("ext4", False),
        ("xfs", False),
        ("tmpfs", False),
        (None, False),
    ],
)
def test_network_filesystems(fs_type: str | None, network: bool) -> None:
    assert filesystem.is_network_filesystem(fs_type) is network

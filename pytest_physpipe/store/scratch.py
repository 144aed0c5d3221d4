"""Scratch directories under ``<root>/tmp`` and the housekeeping that removes dead ones.

Guarantees (see ``docs/store.md``):

- A scratch directory is named ``<what>.<host>.<pid>.<rand>`` and its process keeps an owner
  record, ``owners/<host>.<pid>.json``, whose mtime it touches every
  :data:`HEARTBEAT_S` seconds while it lives.
- :func:`cleanup` never removes the scratch of a live owner, on any host: on this host the
  kernel says whether the pid lives (a zombie or a reused pid is dead); from another host the
  owner record's heartbeat must have stopped for :data:`STALE_AFTER_S` (measured against the
  file server's clock, so clock skew between hosts does not matter). Scratch of another host
  without an owner record (older versions) is left for :data:`NO_RECORD_AFTER_S`.
- It never follows a symlink and never removes anything outside the store root: a ``tmp/`` or
  ``trash/`` that is a symlink is skipped with a warning, entries found there are unlinked,
  not descended into.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.hosts import owner_alive, owner_info, pid_alive, same_host, this_host
from pytest_physpipe.store.layout import StoreLayout

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "cleanup", "make_scratch", "real_dir", "scratch_dir"]


def _log() -> logging.Logger:
    # Made on first use: pytest's log capture visits every logger in logging's registry at
    # every phase of every test, so a logger made at import costs each test of a run.
    return logging.getLogger(__name__)


HEARTBEAT_S = 30.0
#: Another host's owner is judged gone after its record has not been touched for this long.
STALE_AFTER_S = 600.0
#: Scratch of another host without an owner record (written by an older version).
NO_RECORD_AFTER_S = 7 * 86400.0
#: Trash is an entry being deleted; a remover that died leaves it behind.
TRASH_AFTER_S = 60.0

_beacons: dict[str, _Beacon] = {}
_beacons_lock = threading.Lock()


def real_dir(path: Path) -> bool:
    """Whether ``path`` is a directory itself (not a symlink to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


class _Beacon:
    """This process's owner record in one store, touched by a daemon thread."""

    def __init__(self, layout: StoreLayout) -> None:
        self.path = layout.owner_record(this_host().name, os.getpid())
        self._write()
        self._stop = threading.Event()
        self._pid = os.getpid()
        thread = threading.Thread(target=self._beat, name="physpipe-owner", daemon=True)
        thread.start()
        atexit.register(self.close)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:  # removed by a cleaner who judged us dead: say we live
                self._write()
            except OSError as exc:
                _log().debug("physpipe: owner heartbeat %s failed: %s", self.path, exc)

    def _write(self) -> None:
        # Best effort: without a record (a full disk) this host still judges the scratch by
        # its pid; other hosts leave it for a week.
        info = {**owner_info(), "heartbeat_s": HEARTBEAT_S, "started": time.time()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_text_atomic(self.path, json.dumps(info))
        except OSError as exc:
            _log().warning("physpipe: cannot write the owner record %s: %s", self.path, exc)

    def close(self) -> None:
        self._stop.set()
        if os.getpid() == self._pid:
            with contextlib.suppress(OSError):
                self.path.unlink()


def _beacon(layout: StoreLayout) -> None:
    key = os.fspath(layout.root)
    if key in _beacons:  # the common case, without the lock
        return
    with _beacons_lock:
        if key not in _beacons:
            layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
            _beacons[key] = _Beacon(layout)


def make_scratch(layout: StoreLayout, what: str) -> Path:
    """A new, empty, owner-only scratch directory of this process under ``tmp/``."""
    return Path(scratch_dir(layout, what))


def scratch_dir(layout: StoreLayout, what: str) -> str:
    """:func:`make_scratch` as a plain string (a commit builds its entry in one).

    One ``mkdir`` per call once this process has its owner record in the store: ``tmp/`` is
    made again only if it vanished. The random tail makes the name unique (``mkdir`` fails
    rather than reuse a name, and another is drawn).
    """
    _beacon(layout)
    prefix = f"{layout.tmp_path}/{layout.scratch_prefix(what)}"
    for _attempt in range(100):
        path = prefix + os.urandom(6).hex()
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        except FileNotFoundError:
            layout.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
            continue
        return path
    raise FileExistsError(f"no unused scratch name under {layout.tmp}")


def _read_record(path: Path) -> tuple[dict[str, Any] | None, float | None]:
    try:
        mtime = os.lstat(path).st_mtime
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    return (data if isinstance(data, dict) else None), mtime


def _server_now(layout: StoreLayout) -> float:
    """The file server's idea of now (the mtime of a file just written), else ours."""
    probe = layout.owners / f".now-{os.getpid()}-{time.monotonic_ns()}"
    try:
        probe.write_bytes(b"")
        try:
            return os.lstat(probe).st_mtime
        finally:
            probe.unlink()
    except OSError:
        return time.time()


class _Judge:
    """Whether the owner of a scratch name lives; each owner is judged once per cleanup."""

    def __init__(self, layout: StoreLayout, *, local_only: bool) -> None:
        self.layout = layout
        self.local_only = local_only
        self._now: float | None = None
        self._seen: dict[tuple[str, int], bool] = {}

    def now(self) -> float:
        if self._now is None:
            self._now = _server_now(self.layout)
        return self._now

    def dead(self, host: str, pid: int, *, age: float) -> bool:
        known = self._seen.get((host, pid))
        if known is None:
            known = self._seen[(host, pid)] = self._dead(host, pid, age=age)
        return known

    def _dead(self, host: str, pid: int, *, age: float) -> bool:
        info, mtime = _read_record(self.layout.owner_record(host, pid))
        if info is not None and same_host(info):
            return not owner_alive(info)
        if info is None and host == this_host().name:
            # No record (an older version, or one being written): the pid alone tells.
            return not pid_alive(pid)
        if self.local_only:
            return False  # another host: only an explicit `physpipe prune` judges those
        if info is None or mtime is None:
            return age > NO_RECORD_AFTER_S
        period = info.get("heartbeat_s")
        beats = 3 * float(period) if isinstance(period, (int, float)) else 0.0
        return self.now() - mtime > max(STALE_AFTER_S, beats)


def _remove(path: Path) -> None:
    if real_dir(path):
        shutil.rmtree(path, ignore_errors=True)  # never follows symlinks inside
    else:
        path.unlink(missing_ok=True)  # a file or a symlink: the link itself, not its target


def cleanup(layout: StoreLayout, *, local_only: bool = False) -> int:
    """Remove scratch of dead owners, their owner records, and old trash; the count removed.

    ``local_only`` judges only owners on this host (cheap: no waiting on anything; what a
    session does at its start). Unknown names in ``tmp/`` are left alone.
    """
    removed = 0
    judge = _Judge(layout, local_only=local_only)
    wall = time.time()
    for folder in (layout.tmp, layout.trash):
        if not folder.exists():
            continue
        if not real_dir(folder):
            _log().warning(
                "physpipe: %s is not a directory of the store (a symlink?); it is left alone",
                folder,
            )
            continue
        for path in folder.iterdir():
            if path.name.startswith("."):
                continue  # probes
            try:
                age = wall - os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            if folder == layout.trash:
                gone = age > TRASH_AFTER_S
            else:
                owner = layout.scratch_owner(path.name)
                gone = owner is not None and judge.dead(owner.host, owner.pid, age=age)
            if gone:
                _remove(path)
                removed += 1
    owners = layout.owners
    if real_dir(owners):
        for record in owners.glob("*.json"):
            host, _, pid = record.name.removesuffix(".json").rpartition(".")
            if pid.isdigit() and judge.dead(host, int(pid), age=0.0):
                record.unlink(missing_ok=True)
    return removed

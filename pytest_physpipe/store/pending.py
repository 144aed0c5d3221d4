"""What a process owes a store at its end: index notes and the batched sync of its commits.

Both are written once per process and store, not once per commit, because on a local disk a
file replaced by a rename or an ``fsync`` costs as much as the rest of a small commit:

- *Index notes* (``index/<stage>.json``): the key and key manifest last committed for each
  stage and param id, which say why an instance recomputes. They are bookkeeping: they explain,
  never decide. A process keeps its notes in memory and merges them into the stage's file
  (read, update, atomic replace, under a ``flock`` on ``index/.<stage>.lock``) when its session
  ends or it exits. A process killed before that loses only its explanations (the next run
  says ``new`` instead of naming the change).
- *The batched sync* (``Store(fsync="session")``, the default): commits are atomic renames of
  fully written directories, so a killed process never leaves a partial entry, and the page
  cache keeps what it committed. Only an operating-system crash or power loss before the sync
  at the end of the session can lose entries of that session, or leave files of them short or
  zeroed, which the checksums of every hit see: such an entry is warned about and recomputed,
  never served. ``flush`` makes everything durable with one ``syncfs`` of the store's
  filesystem (``os.sync`` where there is none).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.layout import StoreLayout

__all__ = ["LATEST", "Pending", "pending", "read_note", "read_stage_index"]


def _log() -> logging.Logger:
    # Made on first use: pytest's log capture visits every logger in logging's registry at
    # every phase of every test, so a logger made at import costs each test of a run.
    return logging.getLogger(__name__)


#: The key of a stage file's latest entry of any param (a param id is never this string:
#: it holds a NUL).
LATEST = "\0latest"
_MAX_INDEX_BYTES = 256 << 20

Note = tuple[str, dict[str, Any]]

_by_root: dict[str, Pending] = {}
_by_root_lock = threading.Lock()


def pending(root: Path) -> Pending:
    """This process's pending work for the store at ``root`` (one per root)."""
    name = os.fspath(root)
    found = _by_root.get(name)
    if found is None:
        with _by_root_lock:
            found = _by_root.get(name)
            if found is None:
                found = _by_root[name] = Pending()
    return found


class Pending:
    """Notes and the unsynced flag of one store, in this process."""

    def __init__(self) -> None:
        self._notes: dict[str, dict[str, Note]] = {}
        self._lock = threading.Lock()
        self._armed = False
        self._pid = os.getpid()
        #: Whether this process committed entries that no fsync has covered yet.
        self.unsynced = False
        self._layout: StoreLayout | None = None

    def note(self, stage: str, param_id: str, key: str, manifest: dict[str, Any]) -> None:
        with self._lock:
            notes = self._notes.setdefault(stage, {})
            notes[param_id] = notes[LATEST] = (key, manifest)

    def latest(self, stage: str, param_id: str | None) -> Note | None:
        with self._lock:
            return self._notes.get(stage, {}).get(LATEST if param_id is None else param_id)

    def arm(self, layout: StoreLayout) -> None:
        """Flush at exit if nobody does it before (a batch job, a script)."""
        if not self._armed:
            self._layout = layout
            self._armed = True
            atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        if self._layout is not None and os.getpid() == self._pid:
            self.flush(self._layout)

    def flush(self, layout: StoreLayout) -> None:
        """Merge the notes into their stage files, then sync if needed. Never raises."""
        with self._lock:
            notes, self._notes = self._notes, {}
            unsynced, self.unsynced = self.unsynced, False
        for stage, mine in notes.items():
            try:
                _merge(layout, stage, mine)
            except (OSError, ValueError) as exc:
                _log().debug("physpipe: cannot write the index of stage %s: %s", stage, exc)
        if unsynced:
            sync_filesystem(layout.root)


def _merge(layout: StoreLayout, stage: str, mine: dict[str, Note]) -> None:
    layout.index.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(layout.stage_index_lock(stage), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        merged = read_stage_index(layout, stage)
        merged.update(mine)
        data = {
            name: {"key": key, "manifest": manifest} for name, (key, manifest) in merged.items()
        }
        write_text_atomic(layout.stage_index_path(stage), json.dumps(data, allow_nan=True))
    finally:
        os.close(fd)  # drops the flock


def read_stage_index(layout: StoreLayout, stage: str) -> dict[str, Note]:
    """A stage's notes by param id (:data:`LATEST`: any param); empty when unreadable."""
    try:
        fd = os.open(layout.stage_index_path(stage), os.O_RDONLY)
        try:
            # Its size, not the limit: a buffered read(limit) allocates the whole limit first.
            size = min(os.fstat(fd).st_size, _MAX_INDEX_BYTES)
            chunks = [os.read(fd, size)]
            while chunks[-1] and (got := sum(map(len, chunks))) < size:
                chunks.append(os.read(fd, size - got))  # a short read (a network filesystem)
            data = json.loads(b"".join(chunks))
        finally:
            os.close(fd)
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    notes: dict[str, Note] = {}
    for name, value in data.items():
        note = _as_note(value)
        if note is not None:
            notes[name] = note
    return notes


def read_note(path: Path) -> Note | None:
    """One note file of the older one-file-per-param index, or ``None``."""
    try:
        with open(path, "rb") as handle:
            return _as_note(json.loads(handle.read(1 << 20)))
    except (OSError, ValueError, RecursionError):
        return None


def _as_note(value: object) -> Note | None:
    if not isinstance(value, dict):
        return None
    key, manifest = value.get("key"), value.get("manifest")
    return (key, manifest) if isinstance(key, str) and isinstance(manifest, dict) else None


def sync_filesystem(root: Path) -> None:
    """Everything written to the filesystem holding ``root`` reaches the disk."""
    try:
        fd = os.open(root, os.O_RDONLY)
    except OSError:
        return
    try:
        if sys.platform.startswith("linux"):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syncfs(fd) == 0:
                return
        os.sync()
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.sync()
    finally:
        os.close(fd)

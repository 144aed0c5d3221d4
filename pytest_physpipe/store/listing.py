"""A summary of every entry for ``physpipe ls`` and ``prune``: a listing aid, never a source.

Reading 100,000 ``meta.json`` files is what made ``physpipe ls`` slow, so each commit also
appends one line (key, the inode of the entry's ``meta.json``, stage, param id, status, codec,
size, created) to a journal of its process, ``index/entries/<host>.<pid>.<rand>.jsonl``; a
listing folds the journals into ``index/entries.json`` (the snapshot) and removes the journals
of processes that are gone. What the listing guarantees:

- It lists exactly the entries in ``entries/`` (one ``listdir`` per shard, one ``stat`` of
  each ``meta.json``): a summary of an entry that is gone is dropped, never shown.
- A summary is used only when its inode is the inode of the entry's ``meta.json`` now (the
  ``stat`` that also gives its last use): an entry replaced since (a rebuild, a repair) or
  written by an older version has none, so its ``meta.json`` is read, as before the index
  existed, and the snapshot is healed with it.
- Nothing ever loads a value through it: hits and ``verify`` read the entries themselves. An
  index that is lost, stale or corrupt costs time (one ``meta.json`` read per entry), not
  correctness.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from pytest_physpipe.keys import KEY_PATTERN
from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.hosts import pid_alive, this_host
from pytest_physpipe.store.layout import StoreLayout

__all__ = ["Summary", "close_journal", "journal", "present", "summaries", "summary_of_meta"]

#: Format 2: rows carry the inode of the entry's ``meta.json`` (format 1: its directory's), so
#: that one ``stat`` gives a listing both the check and the last use.
_FORMAT = 2
_JOURNAL_HEADER = b'{"format": 2}'


class Summary(NamedTuple):
    """What ``physpipe ls`` shows of one entry (``last_used`` is read from the entry)."""

    key: str
    inode: int
    name: str
    param_id: str | None
    status: str
    codec: str
    size: int
    created_at: str

    @property
    def label(self) -> str:
        return f"{self.name}[{self.param_id}]" if self.param_id else self.name


def _summary(row: Any) -> Summary | None:
    """A row of the index as a summary, or ``None`` when it is not one (garbage is skipped).

    Only what matching and sums need is type-checked; the rest is only ever formatted."""
    if (
        type(row) is list
        and len(row) == 8
        and type(row[0]) is str
        and type(row[1]) is int
        and type(row[6]) is int
    ):
        return Summary._make(row)
    return None


def summary_of_meta(key: str, inode: int, meta: dict[str, Any], size: int) -> Summary | None:
    """The summary of an entry from its ``meta.json`` (``None`` if it lacks what is needed)."""
    record = meta.get("record")
    if not isinstance(record, dict):
        return None
    return _summary(
        [
            key,
            inode,
            record.get("name"),
            record.get("param_id"),
            record.get("status", "computed"),
            str(meta.get("codec", "?")),
            size,
            record.get("created_at", ""),
        ]
    )


# -- writing: one journal per process -------------------------------------------------------------


class _Journal:
    def __init__(self) -> None:
        self.fd: int | None = None
        self.pid = -1


_journals: dict[str, _Journal] = {}
_journals_lock = threading.Lock()


def journal(layout: StoreLayout, summary: Summary) -> None:
    """Append ``summary`` to this process's journal (bookkeeping: never raises)."""
    line = (json.dumps(list(summary), allow_nan=True) + "\n").encode()
    with _journals_lock:
        found = _journals.setdefault(os.fspath(layout.root), _Journal())
        try:
            if found.fd is None or found.pid != os.getpid():
                found.fd, found.pid = _open_journal(layout), os.getpid()
            os.write(found.fd, line)
        except OSError:
            found.fd = None  # a full disk: the listing reads meta.json for this entry


def close_journal(layout: StoreLayout) -> None:
    """Close this process's journal of the store (at the end of a session); a later commit
    opens a new one."""
    with _journals_lock:
        found = _journals.pop(os.fspath(layout.root), None)
        if found is not None and found.fd is not None and found.pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(found.fd)


def _open_journal(layout: StoreLayout) -> int:
    folder = layout.index / "entries"
    name = f"{this_host().name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.jsonl"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(folder / name, flags, 0o600)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(folder / name, flags, 0o600)
    os.write(fd, _JOURNAL_HEADER + b"\n")
    return fd


# -- reading --------------------------------------------------------------------------------------


def present(layout: StoreLayout) -> tuple[dict[str, tuple[int, float]], list[str]]:
    """Every entry in ``entries/``: the inode and mtime (its last use) of its ``meta.json``,
    from one ``stat`` each; and the keys of those without one (damaged, or removed since)."""
    found: dict[str, tuple[int, float]] = {}
    missing: list[str] = []
    try:
        shards = sorted(
            item.name for item in os.scandir(layout.entries) if item.is_dir(follow_symlinks=False)
        )
    except (FileNotFoundError, NotADirectoryError):
        return found, missing
    match, stat = KEY_PATTERN.match, os.stat
    for shard in shards:
        try:
            fd = os.open(layout.entries / shard, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # removed since, or a symlink
        try:
            for name in os.listdir(fd):
                if match(name):
                    try:
                        info = stat(f"{name}/meta.json", dir_fd=fd)
                    except (FileNotFoundError, NotADirectoryError):
                        missing.append(name)  # damaged, or removed since it was listed
                        continue
                    found[name] = (info.st_ino, info.st_mtime)
        finally:
            os.close(fd)
    return found, missing


def _rows(path: str, *, lines: bool) -> list[Any]:
    """The rows of the snapshot (``lines=False``) or of a journal. A journal without this
    format's first line (an older version's) gives none: its entries are read afresh."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    if not lines:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return []
        ok = isinstance(doc, dict) and doc.get("format") == _FORMAT
        return doc["rows"] if ok and isinstance(doc.get("rows"), list) else []
    parts = data.splitlines()
    if not parts or parts[0] != _JOURNAL_HEADER:
        return []
    with contextlib.suppress(ValueError, RecursionError):
        # One parse for the whole journal (a live session's may hold 100,000 lines).
        whole: list[Any] = json.loads(b"[" + b",".join(parts[1:]) + b"]")
        return whole
    rows = []
    for line in parts[1:]:
        with contextlib.suppress(ValueError, RecursionError):
            rows.append(json.loads(line))  # a torn last line (a killed writer) is skipped
    return rows


def summaries(
    layout: StoreLayout, describe: Callable[[str, int], Summary | None]
) -> tuple[dict[str, tuple[Summary, float]], list[str]]:
    """Summaries of the entries present with their last use, and the keys that have none
    (damaged entries).

    ``describe(key, inode)`` reads an entry's ``meta.json`` for one the index cannot vouch for
    and returns its summary (``None`` when it is damaged). The snapshot is rewritten when the
    listing healed it, found it stale, or folded in the journals of finished processes; a
    read-only store is listed all the same.
    """
    entries, damaged = present(layout)
    snapshot = os.fspath(layout.index / "entries.json")
    journals_dir = layout.index / "entries"
    try:
        journals = sorted(p.path for p in os.scandir(journals_dir) if p.name.endswith(".jsonl"))
    except OSError:
        journals = []

    def valid(rows: list[Any]) -> dict[str, Any]:
        return {
            row[0]: row
            for row in rows
            if type(row) is list and len(row) == 8 and type(row[0]) is str
        }

    stored = valid(_rows(snapshot, lines=False))
    known = dict(stored)
    for path in journals:  # after the snapshot: a journal line is newer
        known.update(valid(_rows(path, lines=True)))
    found: dict[str, tuple[Summary, float]] = {}
    healed = from_snapshot = 0
    get, snapshot_row, make = known.get, stored.get, tuple.__new__
    for key, (inode, last_used) in entries.items():
        row = get(key)
        # Trusted only for the version of the entry it was written for (the same inode).
        if row is not None and row[1] == inode and type(row[6]) is int:
            found[key] = (make(Summary, row), last_used)
            from_snapshot += row is snapshot_row(key)
            continue
        summary = describe(key, inode)
        healed += 1
        if summary is None:
            damaged.append(key)
        else:
            found[key] = (summary, last_used)
    # Rewritten when it heals, drops rows of entries gone or replaced, or folds in the journals
    # of finished processes (removed then); a live session's journal is read, not folded, so
    # that listing beside a running session does not rewrite the snapshot every time.
    stale = from_snapshot != len(stored) or (found and not stored)  # or none yet
    finished = [path for path in journals if _finished(path)]
    if healed or stale or finished:
        _rewrite(layout, snapshot, found, finished)
    return found, damaged


def _finished(path: str) -> bool:
    """Whether the journal at ``path`` is of a process of this host that is gone."""
    stem = os.path.basename(path).removesuffix(".jsonl")
    host, _, pid = stem.rpartition(".")[0].rpartition(".")
    return host == this_host().name and pid.isdigit() and not pid_alive(int(pid))


def _rewrite(
    layout: StoreLayout,
    snapshot: str,
    found: dict[str, tuple[Summary, float]],
    journals: list[str],
) -> None:
    """Write the snapshot, then remove the ``journals`` (of processes that are gone) it folds."""
    try:
        layout.index.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(layout.index / ".entries.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return  # a read-only store: listed, not healed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rows = [summary for summary, _used in found.values()]  # tuples: JSON arrays
        text = json.dumps({"format": _FORMAT, "rows": rows}, allow_nan=True)
        write_text_atomic(layout.index / "entries.json", text)
        for path in journals:
            with contextlib.suppress(OSError):
                os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)

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
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from pytest_physpipe.keys import KEY_PATTERN
from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.hosts import pid_alive, this_host
from pytest_physpipe.store.layout import StoreLayout, tree_size

__all__ = [
    "Summary",
    "close_journal",
    "journal",
    "present",
    "store_size",
    "summaries",
    "summary_of_meta",
]

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
    folder = layout.listing_journals
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


def _journal_paths(layout: StoreLayout) -> list[str]:
    try:
        found = os.scandir(layout.listing_journals)
    except OSError:
        return []
    with found:
        return sorted(p.path for p in found if p.name.endswith(".jsonl"))


def _valid(rows: list[Any]) -> dict[str, Any]:
    return {
        row[0]: row for row in rows if type(row) is list and len(row) == 8 and type(row[0]) is str
    }


def _known(stored: dict[str, Any], journals: list[str]) -> dict[str, Any]:
    """The rows of the snapshot (``stored``) updated by those of the journals (newer)."""
    known = dict(stored)
    for path in journals:
        known.update(_valid(_rows(path, lines=True)))
    return known


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
    snapshot = os.fspath(layout.listing)
    journals = _journal_paths(layout)
    stored = _valid(_rows(snapshot, lines=False))
    known = _known(stored, journals)
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
        fd = os.open(layout.listing_lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return  # a read-only store: listed, not healed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rows = [summary for summary, _used in found.values()]  # tuples: JSON arrays
        text = json.dumps({"format": _FORMAT, "rows": rows}, allow_nan=True)
        write_text_atomic(layout.listing, text)
        for path in journals:
            with contextlib.suppress(OSError):
                os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the store's size -----------------------------------------------------------------------------

#: A shard whose directory changed less than this long ago may change again within the same
#: mtime (timestamps are coarse: a kernel tick, a second on some filesystems), so its count is
#: not recorded.
_RACY_NS = 2_000_000_000
_SIZES_FORMAT = 1


def store_size(layout: StoreLayout) -> int:
    """The bytes of every entry: the total ``physpipe ls`` prints (see the module docstring).

    Each shard's recorded bytes are used while its directory keeps the mtime they were counted
    at; the others are listed again (one ``stat`` per entry, the index's size for an entry it
    vouches for, a walk of any other) and recorded. Bookkeeping: an unwritable store is counted
    all the same."""
    path = layout.entry_sizes
    recorded = _read_sizes(path)
    try:
        listing = os.scandir(layout.entries)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    now = time.time_ns()
    current: dict[str, tuple[int, int]] = {}  # shard: (mtime_ns, bytes)
    changed: dict[str, int] = {}  # shard: mtime_ns before it is listed
    with listing:
        for item in listing:
            if not item.is_dir(follow_symlinks=False):
                continue
            try:
                mtime = item.stat(follow_symlinks=False).st_mtime_ns
            except FileNotFoundError:
                continue
            known = recorded.get(item.name)
            if known is not None and known[0] == mtime:
                current[item.name] = known
            else:
                changed[item.name] = mtime
    if changed:
        counted = _count_shards(layout, list(changed))
        for shard, mtime in changed.items():
            # -1: counted now, listed again next time (see _RACY_NS).
            current[shard] = (mtime if now - mtime > _RACY_NS else -1, counted[shard])
    if changed or current.keys() != recorded.keys():
        rows = {shard: list(value) for shard, value in sorted(current.items())}
        with contextlib.suppress(OSError):  # a read-only store: counted, not recorded
            write_text_atomic(path, json.dumps({"format": _SIZES_FORMAT, "shards": rows}))
    return sum(value[1] for value in current.values())


def _read_sizes(path: os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """The recorded ``(mtime_ns, bytes)`` of each shard (none from a missing or garbage file)."""
    try:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != _SIZES_FORMAT:
        return {}
    shards = doc.get("shards")
    if not isinstance(shards, dict):
        return {}
    return {
        shard: (value[0], value[1])
        for shard, value in shards.items()
        if type(value) is list
        and len(value) == 2
        and type(value[0]) is int
        and type(value[1]) is int
        and value[0] >= 0
    }


def _count_shards(layout: StoreLayout, shards: list[str]) -> dict[str, int]:
    """The bytes of the entries in ``shards``: the index's size of an entry it vouches for
    (same ``meta.json`` inode), a walk of any other (damaged, or not in the index)."""
    known = _known(_valid(_rows(os.fspath(layout.listing), lines=False)), _journal_paths(layout))
    match, stat, get = KEY_PATTERN.match, os.stat, known.get
    counted = dict.fromkeys(shards, 0)
    for shard in shards:
        folder = os.fspath(layout.entries / shard)
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # removed since, or a symlink
        total = 0
        try:
            for name in os.listdir(fd):
                if not match(name):
                    continue
                try:
                    inode = stat(f"{name}/meta.json", dir_fd=fd).st_ino
                except (FileNotFoundError, NotADirectoryError):
                    inode = -1  # damaged: ls shows it with its files' size
                row = get(name)
                if row is not None and row[1] == inode and type(row[6]) is int:
                    total += row[6]
                else:
                    total += tree_size(f"{folder}/{name}")
        finally:
            os.close(fd)
        counted[shard] = total
    return counted

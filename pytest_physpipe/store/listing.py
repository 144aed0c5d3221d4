"""A summary of every entry for ``physpipe ls`` and ``prune``: a listing aid, never a source.

Reading 100,000 ``meta.json`` files is what made ``physpipe ls`` slow, so each commit also
appends one line (key, the entry directory's inode, stage, param id, status, codec, size,
created) to a journal of its process, ``index/entries/<host>.<pid>.<rand>.jsonl``; a listing
folds the journals into ``index/entries.json`` (the snapshot) and removes the journals of
processes that are gone. What the listing guarantees:

- It lists exactly the entries in ``entries/`` (one ``scandir`` per shard): a summary of an
  entry that is gone is dropped, never shown.
- A summary is used only when its inode is the inode of the entry directory now: an entry
  replaced since (a rebuild, a repair) or written by an older version has none, so its
  ``meta.json`` is read, as before the index existed, and the snapshot is healed with it.
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

_FORMAT = 1


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
        return os.open(folder / name, flags, 0o600)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(folder / name, flags, 0o600)


# -- reading --------------------------------------------------------------------------------------


def present(layout: StoreLayout) -> dict[str, int]:
    """Every entry in ``entries/`` and the inode of its directory (no ``stat``: ``scandir``)."""
    found: dict[str, int] = {}
    try:
        shards = sorted(
            (item.name, item.path)
            for item in os.scandir(layout.entries)
            if item.is_dir(follow_symlinks=False)
        )
    except (FileNotFoundError, NotADirectoryError):
        return found
    for _name, path in shards:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(path) as items:
            for item in items:
                if KEY_PATTERN.match(item.name):
                    found[item.name] = item.inode()
    return found


def _read_rows(path: str, *, lines: bool) -> list[Any]:
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
        return doc.get("rows", []) if ok and isinstance(doc.get("rows"), list) else []
    rows = []
    for line in data.splitlines():
        with contextlib.suppress(ValueError, RecursionError):
            rows.append(json.loads(line))  # a torn last line (a killed writer) is skipped
    return rows


def summaries(
    layout: StoreLayout, describe: Callable[[str, int], Summary | None]
) -> tuple[dict[str, Summary], list[str]]:
    """Summaries of the entries present, and the keys that have none (damaged entries).

    ``describe(key)`` reads an entry's ``meta.json`` for one the index cannot vouch for and
    returns its summary (``None`` when it is damaged). The snapshot is rewritten when the
    index had journals to fold in or was stale; a read-only store is listed all the same.
    """
    entries = present(layout)
    snapshot = os.fspath(layout.index / "entries.json")
    journals_dir = layout.index / "entries"
    try:
        journals = sorted(p.path for p in os.scandir(journals_dir) if p.name.endswith(".jsonl"))
    except OSError:
        journals = []
    rows = _read_rows(snapshot, lines=False)
    for path in journals:  # after the snapshot: a journal line is newer
        rows += _read_rows(path, lines=True)
    known: dict[tuple[str, int], Summary] = {}
    for row in rows:
        summary = _summary(row)
        if summary is not None:
            known[(summary.key, summary.inode)] = summary
    found: dict[str, Summary] = {}
    damaged: list[str] = []
    healed = 0
    for key, inode in entries.items():
        summary = known.get((key, inode))
        if summary is None:
            summary = describe(key, inode)
            healed += 1
            if summary is None:
                damaged.append(key)
                continue
        found[key] = summary
    stale = len(known) > len(found) - healed  # summaries of entries gone or replaced
    if journals or healed or stale:
        _rewrite(layout, snapshot, found, journals)
    return found, damaged


def _rewrite(
    layout: StoreLayout, snapshot: str, found: dict[str, Summary], journals: list[str]
) -> None:
    """Write the snapshot, then remove the folded journals of processes that are gone."""
    try:
        layout.index.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(layout.index / ".entries.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return  # a read-only store: listed, not healed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rows = list(found.values())  # tuples: JSON arrays
        text = json.dumps({"format": _FORMAT, "rows": rows}, allow_nan=True)
        write_text_atomic(layout.index / "entries.json", text)
        here = this_host().name
        for path in journals:
            stem = os.path.basename(path).removesuffix(".jsonl")
            host, _, pid = stem.rpartition(".")[0].rpartition(".")
            if host == here and pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)

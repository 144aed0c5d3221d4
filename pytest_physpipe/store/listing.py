"""A summary of every entry for ``physpipe ls`` and ``prune``: a listing aid, never a source.

Reading 100,000 ``meta.json`` files is what made ``physpipe ls`` slow, so each commit also
appends one line (key, the inode of the entry's ``meta.json``, stage, param id, status, codec,
size, created) to a journal of its process, ``index/entry-listing/<host>.<pid>.<rand>.jsonl``
(written by ``store/journal.py``, all a session imports of the index; ``store/sizes.py`` keeps
the store's size); a listing folds the journals into ``index/entry-listing.json`` (the
snapshot, stored by column) and removes those that are closed (``*.closed.jsonl``: their
session ended) or of processes that are gone. Earlier releases kept both under the names of
a stage called ``entries`` (``index/entries.json``, ``index/entries/``): where there is no
snapshot yet, theirs seeds it, checked like any other, and is removed once the new one is
written. What the listing guarantees:

- It lists exactly the entries in ``entries/`` (one ``listdir`` per shard, one ``stat`` of
  each ``meta.json``), each once: a summary of an entry that is gone is dropped, never shown,
  and a key's folder in another shard than its own (moved by hand) is no entry (see
  :func:`~pytest_physpipe.store.layout.entry_names`).
- A summary is used only when its inode is the inode of the entry's ``meta.json`` now (the
  ``stat`` that also gives its last use): an entry replaced since (a rebuild, a repair) or
  written by an older version has none, so its ``meta.json`` is read, as before the index
  existed, and the snapshot is healed with it.
- Nothing ever loads a value through it: hits and ``verify`` read the entries themselves. An
  index that is lost, stale or corrupt costs time (one ``meta.json`` read per entry), not
  correctness.

A listing (:class:`Listing`) keeps the summaries by column, as parsed, and for each entry
present only its row and last use: at 100,000 entries any object or bytecode step per entry
costs a tenth of a second, so the work per entry is done by C calls a column at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import operator
import os
from collections.abc import Callable
from typing import Any

from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.hosts import pid_alive, this_host
from pytest_physpipe.store.journal import CLOSED, FORMAT, JOURNAL_HEADER, Summary
from pytest_physpipe.store.layout import StoreLayout, entry_names, tree_size

__all__ = [
    "Listing",
    "describe_entry",
    "indexed_size",
    "listing",
    "summary_of_meta",
]

#: Format 3 (the snapshot): the same fields, stored by column, which parses in half the time
#: of 100,000 small arrays, and the rows' labels (``labels``: read where present and valid,
#: made from the names and param ids otherwise). A format-2 snapshot is read all the same.
_SNAPSHOT_FORMAT = 3
_COLUMNS = ("keys", "inodes", "names", "params", "statuses", "codecs", "sizes", "created")


#: A valid row as a summary, without the checks (C calls only: 100,000 of them at once).
_as_summary = functools.partial(tuple.__new__, Summary)


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


def describe_entry(layout: StoreLayout, key: str, inode: int) -> Summary | None:
    """The summary of an entry the index cannot vouch for, from its ``meta.json`` (``None``
    when that is missing, unreadable or not this key's: a damaged entry)."""
    base = layout.entry_path(key)
    try:
        with open(f"{base}/meta.json", "rb") as handle:
            meta = json.loads(handle.read())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(meta, dict) or meta.get("key") != key:
        return None
    return summary_of_meta(key, inode, meta, tree_size(base))


# -- reading --------------------------------------------------------------------------------------

#: Summaries by column (as :data:`_COLUMNS`), one row per summary.
Columns = list[list[Any]]


class Listing:
    """Every entry in ``entries/``: the summaries known, by column (``columns``, as
    :data:`_COLUMNS`: the snapshot's, the journals', those read afresh), the row of each entry
    present (``rows``, in the order found) and its last use (``used``, in the same order),
    the keys of the damaged entries, and the labels the snapshot holds of its rows. Nothing is
    built per entry beyond the two numbers: at 100,000 entries a tuple each costs a tenth of a
    second."""

    __slots__ = ("columns", "damaged", "rows", "stored_labels", "used")

    def __init__(
        self,
        columns: Columns,
        rows: list[int],
        used: list[float],
        damaged: list[str],
        stored_labels: list[str],
    ) -> None:
        self.columns = columns
        self.rows = rows
        self.used = used
        self.damaged = damaged
        self.stored_labels = stored_labels

    def labels(self) -> list[str]:
        """The label (as :attr:`Summary.label`) of each row of ``columns``: as the snapshot
        stores them for its rows (one parse instead of a formatting step per row), made for
        the rows after."""
        names, params = self.columns[2], self.columns[3]
        made = zip(names[len(self.stored_labels) :], params[len(self.stored_labels) :], strict=True)
        return [
            *self.stored_labels,
            *(f"{name}[{param}]" if param else name for name, param in made),
        ]

    def column(self, name: str) -> list[Any]:
        """The column ``name`` (of :data:`_COLUMNS`) of the entries present, as ``rows``."""
        return list(map(self.columns[_COLUMNS.index(name)].__getitem__, self.rows))

    def present(self) -> Columns:
        """Every column of the entries present, as ``rows``."""
        return [list(map(column.__getitem__, self.rows)) for column in self.columns]

    def found(self) -> dict[str, tuple[Summary, float]]:
        """The summary and last use of each entry present, by key."""
        summaries = map(_as_summary, zip(*self.present(), strict=True))
        return {s[0]: (s, used) for s, used in zip(summaries, self.used, strict=True)}


def _shards(entries: int) -> list[str]:
    """The shard folders in ``entries/``, open as ``entries``."""
    with os.scandir(entries) as found:
        return sorted(item.name for item in found if item.is_dir(follow_symlinks=False))


def _snapshot(layout: StoreLayout) -> tuple[Columns, list[str], bool, int]:
    """The snapshot's summaries (none from a missing, garbage or unknown one), the labels it
    holds of them (none from an earlier version's), whether it is in this version's format
    (else the listing rewrites it), and the inode of an earlier release's
    ``index/entries.json`` they come from (``0`` when they do not; see :func:`_migrated`)."""
    doc, _ = _document(layout.listing)
    old = 0
    if doc is _MISSING:
        doc, old = _document(layout.old_listing)
        if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, _SNAPSHOT_FORMAT):
            return _no_columns(), [], False, 0  # none, or notes of a stage called ``entries``
    if isinstance(doc, dict) and doc.get("format") == FORMAT:  # by rows: an older version's
        rows = doc.get("rows")
        return _by_column(_valid(rows) if isinstance(rows, list) else []), [], False, old
    columns = _columns(doc)
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if type(labels) is not list or len(labels) != len(columns[0]) or {*map(type, labels)} - {str}:
        labels = []  # none yet (an earlier version's), or garbage: made from the columns
    # A snapshot without its labels is rewritten with them (once).
    return columns, labels, not old and (bool(labels) or not columns[0]), old


def _no_columns() -> Columns:
    return [[] for _ in _COLUMNS]


def _by_column(rows: list[Any]) -> Columns:
    return [list(column) for column in zip(*rows, strict=True)] if rows else _no_columns()


#: What :func:`_document` returns for a file that does not exist.
_MISSING = object()


def _document(path: os.PathLike[str]) -> tuple[Any, int]:
    """The JSON document at ``path`` (``None`` when unreadable or garbage, :data:`_MISSING`
    when there is no file) and its inode."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read()), os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return _MISSING, 0
    except (OSError, ValueError, RecursionError):
        return None, 0


def _migrated(layout: StoreLayout, inode: int) -> None:
    """Remove an earlier release's listing (``index/entries.json``, its journals folded)
    once the new one holds its rows: that name is a stage's notes file now. Only the file that
    was read goes (same inode): notes of a stage called ``entries`` written since are kept.
    Its lock (``.entries.lock``) stays: a stage called ``entries`` may hold it."""
    with contextlib.suppress(OSError):
        if os.stat(layout.old_listing).st_ino == inode:
            os.unlink(layout.old_listing)
    with contextlib.suppress(OSError):
        os.rmdir(layout.old_listing_journals)  # when empty; else it holds more than journals


def _columns(doc: Any) -> Columns:
    if not isinstance(doc, dict) or doc.get("format") != _SNAPSHOT_FORMAT:
        return _no_columns()
    columns: list[Any] = [doc.get(name) for name in _COLUMNS]
    if not all(type(column) is list for column in columns):
        return _no_columns()
    keys, inodes, sizes = columns[0], columns[1], columns[6]
    if (
        any(len(column) != len(keys) for column in columns)
        or not set(map(type, keys)) <= {str}
        or not set(map(type, inodes)) <= {int}
        or not set(map(type, sizes)) <= {int}
    ):
        return _no_columns()
    return columns


def _journal(path: str) -> list[Any]:
    """The rows of a journal. One without this format's first line (an older version's) gives
    none: its entries are read afresh."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    parts = data.splitlines()
    if not parts or parts[0] != JOURNAL_HEADER:
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
    """The journals, this release's and those an earlier one wrote to ``index/entries/``
    (folded the same way: its journals have this format)."""
    paths: list[str] = []
    for folder in (layout.listing_journals, layout.old_listing_journals):
        try:
            found = os.scandir(folder)
        except OSError:
            continue
        with found:
            paths.extend(p.path for p in found if p.name.endswith(".jsonl"))
    return sorted(paths)


def _valid(rows: list[Any]) -> list[Any]:
    """The rows that are summaries (garbage is skipped; see :func:`_summary`)."""
    return [
        row
        for row in rows
        if type(row) is list
        and len(row) == 8
        and type(row[0]) is str
        and type(row[1]) is int
        and type(row[6]) is int
    ]


def _known(columns: Columns, journals: list[str]) -> dict[str, int]:
    """The row of each key's newest summary: the snapshot's (``columns``, as read), unless a
    journal has another one for it (a later commit; an inode number may be reused), which is
    appended to ``columns``. A journal repeating the snapshot's row leaves it, so the rows
    below the snapshot's length are those it vouches for."""
    keys, inodes = columns[0], columns[1]
    rows = dict(zip(keys, range(len(keys)), strict=True))
    for path in journals:
        for row in _valid(_journal(path)):
            found = rows.get(row[0])
            if (
                found is None
                or inodes[found] != row[1]
                or [column[found] for column in columns] != row
            ):
                rows[row[0]] = len(keys)
                for column, value in zip(columns, row, strict=True):
                    column.append(value)
    return rows


class _Scan:
    """What the listing finds in the shards: the row of the listing's columns (``rows``) and
    last use (``used``) of each entry a summary vouches for, the key, inode and last use of
    each other (``unknown``), the key of each without a ``meta.json`` (``damaged``: damaged,
    or removed since). A summary vouches for an entry if it was written for the inode its
    ``meta.json`` has now: summary ``known[key]`` for ``inodes[known[key]]`` (``inodes`` ends
    with -1, the row of a key without one)."""

    def __init__(self, known: dict[str, int], inodes: list[int], inside: bool) -> None:
        self.known = known
        self.inodes = inodes
        self.inside = inside  # stat from inside the shard: see shard()
        self.rows: list[int] = []
        self.used: list[float] = []
        self.unknown: list[tuple[str, int, float]] = []
        self.damaged: list[str] = []

    def shard(self, fd: int, keys: list[str]) -> None:
        """Stat the ``meta.json`` of each of ``keys`` in the shard open as ``fd``. A shard's
        entries go through C calls (``map``) only, a column at a time: at 100,000 entries a
        bytecode step per entry costs a tenth of a second. A shard with a damaged entry, or
        one no summary vouches for, is gone through again one by one.

        When ``inside``, the process's working directory is the shard's (``fchdir``): a plain
        ``os.stat`` of a relative path costs a tenth less than one given ``dir_fd`` through a
        ``partial`` (whose keyword makes a dict per call); the caller restores it."""
        paths = map(operator.add, keys, itertools.repeat("/meta.json"))
        if self.inside:
            os.fchdir(fd)
        stat = os.stat if self.inside else functools.partial(os.stat, dir_fd=fd)
        try:
            found: list[os.stat_result] = list(map(stat, paths))
        except (FileNotFoundError, NotADirectoryError):
            maybe = list(map(functools.partial(_stat_or_none, fd), keys))
            self.damaged.extend(itertools.compress(keys, map(_is_none, maybe)))
            keys = list(itertools.compress(keys, maybe))
            found = [info for info in maybe if info is not None]
        inodes = list(map(_inode, found))
        rows = list(map(self.known.get, keys, itertools.repeat(-1)))
        if list(map(self.inodes.__getitem__, rows)) == inodes:  # every one vouched for
            self.rows.extend(rows)
            self.used.extend(map(_mtime, found))
            return
        times = list(map(_mtime, found))
        vouched = list(map(operator.eq, map(self.inodes.__getitem__, rows), inodes))
        for key, row, inode, last, ok in zip(keys, rows, inodes, times, vouched, strict=True):
            if ok:
                self.rows.append(row)
                self.used.append(last)
            else:
                self.unknown.append((key, inode, last))


def _working_directory(kept: contextlib.ExitStack) -> int | None:
    """The working directory, open (``O_PATH``), to be restored and closed by ``kept``
    (``None`` where it cannot be opened: deleted, or not Linux)."""
    try:
        home = os.open(".", getattr(os, "O_PATH", 0) | os.O_DIRECTORY)
    except OSError:
        return None
    kept.callback(os.close, home)
    kept.callback(os.fchdir, home)
    return home


_inode = operator.attrgetter("st_ino")
_mtime = operator.attrgetter("st_mtime")
_is_none = functools.partial(operator.is_, None)


def _stat_or_none(fd: int, key: str) -> os.stat_result | None:
    try:
        return os.stat(f"{key}/meta.json", dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return None


def listing(
    layout: StoreLayout,
    describe: Callable[[str, int], Summary | None],
    *,
    from_inside: bool = False,
) -> Listing:
    """Every entry present, with its summary and last use, and the damaged ones.

    ``describe(key, inode)`` reads an entry's ``meta.json`` for one the index cannot vouch for
    and returns its summary (``None`` when it is damaged). The snapshot is rewritten when the
    listing healed it, found it stale, or folded in the journals of finished processes; a
    read-only store is listed all the same.

    ``from_inside``: stat each shard's entries from inside it, the process's working directory
    changed for the while (a tenth faster). Only a process of its own may ask, such as the
    ``physpipe`` command: another thread would see the directory change under it.
    """
    journals = _journal_paths(layout)
    columns, labels, current, old = _snapshot(layout)
    stored = len(columns[0])
    known = _known(columns, journals)
    # Every entry in entries/: one listdir per shard and one stat of each meta.json, which
    # gives both the inode its summary must carry and its last use. The stats are made from
    # inside each shard when asked, the working directory restored after (see _Scan.shard).
    with contextlib.ExitStack() as kept:
        home = _working_directory(kept) if from_inside else None
        scan = _Scan(known, [*columns[1], -1], inside=home is not None)
        try:
            entries = os.open(layout.entries, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            shards = []  # no store yet
        else:
            kept.callback(os.close, entries)
            shards = _shards(entries)
        for shard in shards:
            try:
                fd = os.open(shard, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=entries)
            except OSError:
                continue  # removed since, or a symlink
            try:
                scan.shard(fd, entry_names(shard, os.listdir(fd)))
            finally:
                os.close(fd)
    rows, used, unknown, damaged = scan.rows, scan.used, scan.unknown, scan.damaged
    # How many of the snapshot's rows the listing confirmed (a live journal repeating a row,
    # or adding one, does not make the snapshot stale); all, when no row is past them.
    confirmed = len(rows)
    if max(rows, default=-1) >= stored:
        confirmed -= sum(map(stored.__le__, rows))
    for key, inode, last_used in unknown:
        summary = describe(key, inode)
        if summary is None:
            damaged.append(key)
        else:
            rows.append(len(columns[0]))
            used.append(last_used)
            for column, value in zip(columns, summary, strict=True):
                column.append(value)
    found = Listing(columns, rows, used, damaged, labels)
    # Rewritten when it heals, drops rows of entries gone or replaced, or folds in the journals
    # of finished processes (removed then); a live session's journal is read, not folded, so
    # that listing beside a running session does not rewrite the snapshot every time.
    # ... or there is none yet, or it is an older version's, or an earlier release's.
    stale = confirmed != stored or (bool(rows) and not current)
    finished = [path for path in journals if _finished(path)]
    if unknown or stale or finished or old:
        _rewrite(layout, found, finished, old)
    return found


def _by_label(columns: Columns) -> tuple[Columns, list[str]]:
    """The rows sorted by label (as :attr:`Summary.label`), the order ``physpipe ls`` shows
    them in: it then reads the snapshot's columns nearly in order (see ``store/clitable.py``);
    and their labels, in that order."""
    labels = [
        f"{name}[{param}]" if param else name
        for name, param in zip(columns[2], columns[3], strict=True)
    ]
    order = sorted(range(len(labels)), key=labels.__getitem__)
    return [list(map(column.__getitem__, order)) for column in columns], sorted(labels)


def _finished(path: str) -> bool:
    """Whether the journal at ``path`` is closed, or of a process of this host that is gone."""
    if path.endswith(CLOSED):
        return True
    stem = os.path.basename(path).removesuffix(".jsonl")
    host, _, pid = stem.rpartition(".")[0].rpartition(".")
    return host == this_host().name and pid.isdigit() and not pid_alive(int(pid))


def _rewrite(layout: StoreLayout, found: Listing, journals: list[str], old: int) -> None:
    """Write the snapshot of the entries ``found``, then remove the ``journals`` (of processes
    that are gone) it folds, and the earlier release's snapshot (inode ``old``) it replaces."""
    try:
        layout.index.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(layout.listing_lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return  # a read-only store: listed, not healed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        doc: dict[str, Any] = {"format": _SNAPSHOT_FORMAT}
        columns, labels = _by_label(found.present())
        doc.update(zip(_COLUMNS, columns, strict=True))
        doc["labels"] = labels
        text = json.dumps(doc, allow_nan=True)
        write_text_atomic(layout.listing, text)
        for path in journals:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if old:
            _migrated(layout, old)
    except OSError:
        pass
    finally:
        os.close(fd)


def indexed_size(layout: StoreLayout) -> Callable[[str, int], int | None]:
    """The index's size of the entry ``key`` whose ``meta.json`` has the inode ``inode``, as
    ``size(key, inode)``: ``None`` when no summary vouches for it (see ``store/sizes.py``)."""
    columns = _snapshot(layout)[0]
    get = _known(columns, _journal_paths(layout)).get
    inodes, sizes = columns[1], columns[6]

    def size(key: str, inode: int) -> int | None:
        row = get(key)
        return sizes[row] if row is not None and inodes[row] == inode else None

    return size

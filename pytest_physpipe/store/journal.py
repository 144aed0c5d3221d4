"""The listing index's journals: each commit appends its entry's summary to its process's.

A commit appends one line (key, the inode of the entry's ``meta.json``, stage, param id,
status, codec, size, created) to ``index/entry-listing/<host>.<pid>.<rand>.jsonl``, a journal
of its own process opened on its first commit; the end of a session closes it (renamed
``*.closed.jsonl``). ``store/listing.py`` folds the journals into the listing's snapshot and
reads them. This module is what a session needs of the index, kept apart from the listing so
that a session imports the writer only.

What it guarantees: a journal is bookkeeping, never a source. Writing one never raises (a full
disk costs the next listing one ``meta.json`` read for the entry), and a journal is only ever
appended to by the process its name carries.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import NamedTuple

from pytest_physpipe.store.fileio import json_bytes
from pytest_physpipe.store.hosts import this_host
from pytest_physpipe.store.layout import StoreLayout

__all__ = ["CLOSED", "FORMAT", "JOURNAL_HEADER", "Summary", "close_journal", "journal"]

#: Format 2: rows carry the inode of the entry's ``meta.json`` (format 1: its directory's), so
#: that one ``stat`` gives a listing both the check and the last use. Journals keep it.
FORMAT = 2
#: The first line of a journal of this format (one without it is an older version's).
JOURNAL_HEADER = b'{"format": 2}'
#: The name's ending of a closed journal: its session ended, nothing appends to it any more.
CLOSED = ".closed.jsonl"


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


class _Journal:
    def __init__(self) -> None:
        self.fd: int | None = None
        self.pid = -1
        self.path = ""


_journals: dict[str, _Journal] = {}
_journals_lock = threading.Lock()


def journal(layout: StoreLayout, summary: Summary) -> None:
    """Append ``summary`` to this process's journal (bookkeeping: never raises)."""
    line = json_bytes(summary) + b"\n"
    with _journals_lock:
        found = _journals.setdefault(os.fspath(layout.root), _Journal())
        try:
            if found.fd is None or found.pid != os.getpid():
                found.fd, found.path = _open_journal(layout)
                found.pid = os.getpid()
            os.write(found.fd, line)
        except OSError:
            found.fd = None  # a full disk: the listing reads meta.json for this entry


def close_journal(layout: StoreLayout) -> None:
    """Close this process's journal of the store (at the end of a session); a later commit
    opens a new one. The journal is renamed ``*.closed.jsonl``: nothing appends to it any more,
    so the next listing folds it even while this process lives on (a notebook, a script)."""
    with _journals_lock:
        found = _journals.pop(os.fspath(layout.root), None)
        if found is not None and found.fd is not None and found.pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(found.fd)
                os.rename(found.path, found.path.removesuffix(".jsonl") + CLOSED)


def _open_journal(layout: StoreLayout) -> tuple[int, str]:
    folder = layout.listing_journals
    name = f"{this_host().name}.{os.getpid()}.{os.urandom(4).hex()}.jsonl"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(folder / name, flags, 0o600)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(folder / name, flags, 0o600)
    os.write(fd, JOURNAL_HEADER + b"\n")
    return fd, os.fspath(folder / name)

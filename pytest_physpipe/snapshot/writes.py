"""Golden files written once per module, not once per new golden.

syrupy hands a new or failing golden to the extension within its assertion. Rewriting the
module's golden file each time made a module with n new goldens cost n rewrites of a growing
file (O(n^2)). During a pytest session the extension instead writes a golden's sidecars at once
(binary, content-addressed, so the arrays are not held in memory) and keeps its small JSON entry
here; :func:`flush` merges the pending entries of a golden file into it, under the file's lock,
in one atomic replace. The golden guard flushes when the run leaves a test module and before
syrupy's end-of-session report, Ctrl-C, ``-x`` and SIGTERM included.

Guarantees: a golden file on disk is always whole (written beside it and renamed); a flush
re-reads the file under its lock and merges, so goldens of other tests and other xdist workers
are never dropped; a sidecar written during this session is never collected as garbage by any
process's flush while its entry may still be pending (only sidecars older than the session's
start are collected). What a hard crash (SIGKILL, a segfault) loses is the pending entries of
the module being run: their sidecars stay as unreferenced files, collected by the next session
that writes that golden file.

Outside a pytest session (no guard), goldens are written at once, as syrupy asks.
This module imports only the standard library: the guard loads it on every run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["PENDING", "PendingWrites"]


class PendingWrites:
    """The golden entries of this process waiting to be written, per golden file."""

    def __init__(self) -> None:
        # One frame per running session, [start in ns, deferring]: pytester runs sessions
        # inside a session.
        self._sessions: list[list[Any]] = []
        self._entries: dict[str, dict[str, object]] = {}
        self._order: dict[str, Mapping[str, int] | None] = {}

    @property
    def active(self) -> bool:
        """Whether writes are deferred now (inside a session, before its end)."""
        return bool(self._sessions) and bool(self._sessions[-1][1])

    @property
    def started_ns(self) -> int | None:
        """When the current session started (ns since the epoch), None outside one.

        Sidecars modified since then may belong to a pending entry (of any process) and are
        not collected as garbage.
        """
        return int(self._sessions[-1][0]) if self._sessions else None

    def start(self) -> None:
        """A pytest session begins: defer writes from now on."""
        self._sessions.append([time.time_ns(), True])

    def finish(self) -> None:
        """The session ends: write everything pending, then write at once (syrupy's end)."""
        try:
            self.flush()
        finally:
            if self._sessions:
                self._sessions[-1][1] = False

    def end(self) -> None:
        """The session is over (syrupy's report is done)."""
        if self._sessions:
            self._sessions.pop()

    def put(
        self, location: str, name: str, entry: object, name_order: Mapping[str, int] | None
    ) -> None:
        self._entries.setdefault(location, {})[name] = entry
        self._order[location] = name_order

    def get(self, location: str, name: str) -> object | None:
        return self._entries.get(location, {}).get(name)

    def flush(self) -> None:
        """Write the pending entries of every golden file (each file once)."""
        while self._entries:
            location, entries = next(iter(self._entries.items()))
            write_entries(location, entries, self._order.get(location), self.started_ns)
            del self._entries[location]

    def __bool__(self) -> bool:
        return bool(self._entries)


#: This process's pending golden writes.
PENDING = PendingWrites()


def write_entries(
    location: str,
    entries: Mapping[str, object],
    name_order: Mapping[str, int] | None,
    keep_since_ns: int | None,
) -> None:
    """Merge ``entries`` into the golden file at ``location``, under its lock, atomically."""
    from pytest_physpipe.snapshot.document import parse_document, render_document
    from pytest_physpipe.snapshot.files import (
        collect_garbage,
        golden_lock,
        sidecar_dir,
        write_atomic,
    )
    from pytest_physpipe.snapshot.merge import sidecars_in

    with golden_lock(location):
        path = Path(location)
        old_bytes = path.read_bytes() if path.exists() else None
        old = parse_document(old_bytes.decode("utf-8"), location) if old_bytes else None
        merged: dict[str, Any] = dict(old["snapshots"]) if old else {}
        merged.update(entries)
        order = name_order or {}
        ordered = {
            name: merged[name] for name in sorted(merged, key=lambda n: (order.get(n, math.inf), n))
        }
        new_bytes = render_document(ordered)
        if new_bytes != old_bytes:
            write_atomic(path, lambda handle: handle.write(new_bytes))
        collect_garbage(
            sidecar_dir(location),
            {s for e in ordered.values() for s in sidecars_in(e)},
            keep_since_ns=keep_since_ns,
        )

"""Read-ahead: a hit loads the next few planned entries with it, while the caches are warm.

Between two tests pytest runs a couple of milliseconds of its own Python, so every hit of a
cached rerun starts on cold CPU caches: loading one small entry then costs two to three times
what the same load costs in a loop. :class:`ReadAhead` knows the order in which the run will
ask for its cached entries (the plan's, which is the order of the tests) and, on a hit, loads
a window of the entries that come next in one tight loop; their lookups then take the value
read ahead.

What it guarantees:

- Every value it hands out was loaded and verified by :meth:`Store.load_small
  <pytest_physpipe.store.entries.Store.load_small>`, exactly as a lookup loads it (the same
  checksums, the same record), and is handed out at most once: a second lookup of the key
  loads it afresh.
- Only small entries are read ahead (one built-in ``json`` or ``npy`` file, at most
  :data:`MAX_ENTRY_BYTES`); a window holds at most :data:`MAX_WINDOW` entries and
  :data:`MAX_WINDOW_BYTES` of payload, and what it did not hand out is dropped when the next
  window is read. Large arrays keep the mapped path of a plain lookup.
- An entry it cannot load (corrupt, unusable, vanished) is not held: its lookup loads it the
  plain way, which meets the same problem and reports it where it belongs (a corrupt entry is
  warned about and healed under its lock).
- A value read ahead is the entry as it was when it was read, a few tests earlier: entries are
  immutable, and every committed version of a key is that key's value (see
  ``docs/decisions.md#read-ahead``).

The window adapts, as a kernel's file read-ahead does: it starts at :data:`MIN_WINDOW` and
doubles while the lookups use what it read; when lookups jump elsewhere (an xdist worker is
sent its next chunk of tests) and leave most of a window unused, it starts small again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pytest_physpipe.errors import CorruptEntryError
from pytest_physpipe.store.entries import Loaded, Store

__all__ = ["MAX_ENTRY_BYTES", "MAX_WINDOW", "MAX_WINDOW_BYTES", "MIN_WINDOW", "ReadAhead"]

#: The first window after a jump, and the most entries one window reads.
MIN_WINDOW, MAX_WINDOW = 4, 32
#: The largest payload read ahead, and the most payload one window holds.
MAX_ENTRY_BYTES, MAX_WINDOW_BYTES = 64 << 10, 1 << 20


class ReadAhead:
    """Reads ``planned`` entries of ``store`` ahead of their lookups (see the module docstring).

    ``planned`` is ``(key, stage name)`` in the order the run will look them up: the cached
    instances of the plan. Keys outside it are none of its business (:meth:`take` says
    ``None``).
    """

    def __init__(
        self, store: Store, planned: Iterable[tuple[str, str]], *, full_verify: bool = False
    ) -> None:
        self._store = store
        self._full_verify = full_verify
        self._keys: list[str] = []
        self._stages: list[str] = []
        for key, stage in planned:
            self._keys.append(key)
            self._stages.append(stage)
        self._position = {key: n for n, key in enumerate(self._keys)}
        #: The entries read ahead and not handed out yet, by key.
        self._ahead: dict[str, Loaded] = {}
        #: The window read last: positions [start, end), and how many it read and handed out.
        self._start = self._end = 0
        self._read = self._taken = 0
        self._size = MIN_WINDOW
        #: Stages with an entry that is not small: not read ahead again (a wasted read each).
        self._large: set[str] = set()
        #: How many values it handed out in all.
        self.handed_out = 0
        self._lock = threading.Lock()  # a stage may look entries up from threads of its own

    def take(self, key: str) -> Loaded | None:
        """The entry of ``key`` read ahead (handed out once), or ``None``: load it yourself."""
        position = self._position.get(key)
        if position is None:
            return None
        with self._lock:
            loaded = self._ahead.pop(key, None)
            if loaded is None and not self._start <= position < self._end:
                # A lookup outside the window: the first, or a jump (an xdist worker's next
                # chunk of tests). The window starts here, this entry first.
                self._read_window(position, MIN_WINDOW)
                loaded = self._ahead.pop(key, None)
            if loaded is not None:
                self._taken += 1
                self.handed_out += 1
            if position + 1 >= self._end:
                # The window is used up: read the next one, twice as large if this one was
                # mostly handed out, small again if lookups left most of it over.
                grow = self._taken * 2 >= self._read
                self._read_window(
                    position + 1, min(2 * self._size, MAX_WINDOW) if grow else MIN_WINDOW
                )
            return loaded

    @property
    def held(self) -> int:
        """How many entries are read ahead and not handed out (for tests)."""
        return len(self._ahead)

    def _read_window(self, start: int, size: int) -> None:
        """Read up to ``size`` entries from ``start`` on; what the last window left is dropped."""
        self._ahead.clear()
        self._size = size
        self._read = self._taken = 0
        keys, stages, large = self._keys, self._stages, self._large
        end = min(start + size, len(keys))
        budget = MAX_WINDOW_BYTES
        position = start
        while position < end and budget > 0:
            key, stage = keys[position], stages[position]
            position += 1
            if stage in large:
                continue
            try:
                loaded = self._store.load_small(key, MAX_ENTRY_BYTES, full_verify=self._full_verify)
            except CorruptEntryError:
                continue  # its own lookup meets this again and reports it (and heals it)
            if loaded is None:
                large.add(stage)  # not small (or gone): its stage keeps the plain path
                continue
            self._ahead[key] = loaded
            self._read += 1
            budget -= _payload_bytes(loaded)
        self._start, self._end = start, position


def _payload_bytes(loaded: Loaded) -> int:
    return sum(int(info["size"]) for info in loaded.meta["files"].values())

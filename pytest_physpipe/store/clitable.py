"""Text of the ``physpipe`` command: times, sizes, progress lines, and the whole-store ``ls``
table, which must format 100,000 rows in a fraction of a second (a handful of distinct values
per column formatted once, the cells built a column at a time by C calls, one join)."""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import compress, islice, repeat
from json import dumps
from json.encoder import encode_basestring_ascii
from operator import eq, floordiv, itemgetter, lt, ne, setitem
from typing import Any, NamedTuple, TextIO

from pytest_physpipe.units import human_size

__all__ = [
    "LS_HEADERS",
    "LsColumns",
    "LsLine",
    "Progress",
    "StatusCells",
    "age_text",
    "gc_paused",
    "iso_time",
    "json_rows",
    "ls_table",
    "short_created",
    "size_text",
]

LS_HEADERS = ("KEY", "STAGE", "STATUS/CODEC", "SIZE", "CREATED", "LAST USED")

#: One row of ``physpipe ls``: label, last used, key, status/codec, size, created.
LsLine = tuple[str, float, str, str, int, str]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a listing builds a few objects per entry and no
    cycles, and at 100,000 entries the collector's passes over them cost a tenth of it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def iso_time(timestamp: float) -> str:
    """The local time of ``timestamp``, to the second, with its UTC offset. Entries used in the
    same second share one conversion to the local zone (``ls --json`` makes 100,000): the
    cache is keyed by the local time without its microseconds and by its ``fold`` (which
    naive datetimes' equality ignores: the repeated hour when a zone goes back)."""
    local = datetime.fromtimestamp(timestamp)
    return _iso_second(local.replace(microsecond=0), local.fold)


@functools.lru_cache(maxsize=4096)
def _iso_second(local: datetime, fold: int) -> str:  # fold: part of the cache's key
    return local.astimezone().isoformat(timespec="seconds")


size_text = functools.lru_cache(maxsize=4096)(human_size)


@functools.lru_cache(maxsize=4096)
def minute_text(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60).strftime("%Y-%m-%d %H:%M")


def short_created(text: str) -> str:
    if type(text) is str and len(text) == 29 and text[19] == ".":
        # 2026-01-01T12:34:56.789+00:00: to the minute, the seconds do not matter, so
        # entries created in the same minute share one conversion.
        text = text[:16] + text[23:]
    return _created_minute(text)


@functools.lru_cache(maxsize=4096)
def _created_minute(text: str) -> str:
    if text == "?":
        return text
    try:
        return datetime.fromisoformat(text).astimezone().strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(text or "?")


class LsColumns(NamedTuple):
    """The cells of ``physpipe ls`` by column, and the entries that make its rows: entry ``i``
    is row ``rows[i]`` of every column, last used at ``used[i]``. Columns may hold rows of no
    entry (a listing's summaries of entries gone); they are never shown."""

    labels: list[str]
    keys: list[str]
    states: list[str]
    sizes: list[int]
    created: list[str]
    rows: list[int]
    used: list[float]

    @classmethod
    def of_lines(cls, lines: list[LsLine]) -> LsColumns:
        labels, used, keys, states, sizes, created = map(list, zip(*lines, strict=True))
        return cls(labels, keys, states, sizes, created, list(range(len(lines))), used)

    def add(self, line: LsLine) -> None:
        """Add an entry, in a row of its own."""
        label, used, key, state, size, when = line
        self.rows.append(len(self.labels))
        self.used.append(used)
        self.labels.append(label)
        self.keys.append(key)
        self.states.append(state)
        self.sizes.append(size)
        self.created.append(when)


class StatusCells(dict[tuple[Any, Any], str]):
    """The status cell of each (status, codec) pair, made on first lookup: a column of them
    is one pass, and rows alike share one string."""

    def __missing__(self, pair: tuple[Any, Any]) -> str:
        text = self[pair] = f"{pair[0]}/{pair[1] or '?'}"
        return text


#: The cell of a key: its first 12 digits.
_short_key = itemgetter(slice(12))


def ls_table(columns: LsColumns, out: TextIO) -> int:
    """Write the ``ls`` table of the entries in ``columns``, sorted by label, then last use;
    return their total size.

    It is built a column at a time by C calls (``map``, ``sorted``, slice assignment, one
    ``join``), no bytecode per entry: at 100,000 entries that was a third of the listing. Each
    cell but the key's, the label's and the last use's comes from a handful of distinct values,
    formatted and padded once."""
    labels, keys, states, sizes, created, rows, used = columns
    count = len(rows)
    in_order = _rows_in_order(labels, rows, used) if count == len(labels) else None
    if in_order is not None:  # the columns as they are
        minutes, ordered = in_order, labels
    else:
        mine = list(map(labels.__getitem__, rows))
        # The listing writes its rows in label order: by row first (ints: a fast sort), the
        # sort by label finds the entries nearly sorted, and each column is then read nearly
        # in order.
        order = sorted(range(count), key=rows.__getitem__)
        order.sort(key=mine.__getitem__)
        ordered = list(map(mine.__getitem__, order))
        _by_last_use(order, ordered, used)
        shown = list(map(rows.__getitem__, order))
        keys = list(map(keys.__getitem__, shown))
        states = list(map(states.__getitem__, shown))
        sizes = list(map(sizes.__getitem__, shown))
        created = list(map(created.__getitem__, shown))
        minutes = list(map(floordiv, map(used.__getitem__, order), repeat(60)))
    status = _padded(LS_HEADERS[2], set(states), str)
    nbytes = _padded(LS_HEADERS[3], set(sizes), size_text)
    when = _padded(LS_HEADERS[4], set(created), short_created)
    last = {minute: minute_text(int(minute)) + "\n" for minute in set(minutes)}
    width = max(len(LS_HEADERS[1]), *map(len, ordered))
    header = ["KEY".ljust(12), LS_HEADERS[1].ljust(width), status[None], nbytes[None]]
    out.write("  ".join([*header, when[None], LS_HEADERS[5]]) + "\n")
    # Seven cells per line; the separators are part of the cells after the key's.
    cells: list[str] = [""] * (7 * count)
    cells[0::7] = map(_short_key, keys)
    cells[1::7] = repeat("  ", count)
    cells[2::7] = map(str.ljust, ordered, repeat(width + 2))
    cells[3::7] = map(_then(status).__getitem__, states)
    cells[4::7] = map(_then(nbytes).__getitem__, sizes)
    cells[5::7] = map(_then(when).__getitem__, created)
    cells[6::7] = map(last.__getitem__, minutes)
    out.write("".join(cells))
    return sum(sizes)


def _rows_in_order(labels: list[str], rows: list[int], used: list[float]) -> list[float] | None:
    """The minute of last use of each row, in the order of the rows, when the table shows the
    rows in that order: one entry in each row (as many entries as rows, no row left empty),
    the labels strictly increasing (sorted, none twice: no entries to order by last use). That
    is a listing that found every entry of the snapshot and no other (the snapshot is written
    in label order), and the columns are then shown as they are; else ``None``."""
    if not all(map(lt, labels, islice(labels, 1, None))):
        return None
    minutes: list[float | None] = [None] * len(labels)
    # Each entry's minute put in its row's slot: C calls, no sort.
    deque(map(setitem, repeat(minutes), rows, map(floordiv, used, repeat(60))), maxlen=0)
    return None if None in minutes else minutes  # type: ignore[return-value]


def _then(padded: dict[Any, str]) -> dict[Any, str]:
    """The cells of a column followed by another."""
    return {value: text + "  " for value, text in padded.items()}


def _by_last_use(order: list[int], labels: list[str], used: list[float]) -> None:
    """Sort each run of entries with the same label in ``order`` (sorted by label; ``labels``
    are theirs) by last use, then by their place in the listing. Found by C calls; only the
    runs are visited."""
    same = compress(range(len(labels) - 1), map(eq, labels, islice(labels, 1, None)))
    start = end = -2
    for index in [*same, -2]:  # -2 ends the last run
        if index != end:
            if start >= 0:
                run = sorted(order[start : end + 1])  # the listing's order, then
                order[start : end + 1] = sorted(run, key=used.__getitem__)
            start = index
        end = index + 1


def _padded(header: str, values: Iterable[Any], show: Callable[[Any], str]) -> dict[Any, str]:
    """Each value shown and padded to the column's width; ``None`` gives the header."""
    shown: dict[Any, str] = {value: show(value) for value in values}
    width = max(len(header), *map(len, shown.values()))
    padded = {value: text.ljust(width) for value, text in shown.items()}
    padded[None] = header.ljust(width)
    return padded


def json_rows(rows: list[dict[str, Any]]) -> str:
    """``json.dumps(rows, indent=1)``, byte for byte. json's encoder runs in Python when it
    indents (a few generator steps per value: 15 s for the 100,000 rows of ``ls --json``), so
    rows that are dicts with the same keys in the same order, each value a string, an integer
    or ``None``, are encoded a column at a time by json's own string encoder and joined once.
    Any other rows go through ``json.dumps``."""
    names = list(rows[0]) if rows else []
    fields = len(names)
    if not names or any(map(ne, map(list, rows), repeat(names))):
        return dumps(rows, indent=1)
    cells: list[str] = [""] * (2 * fields * len(rows))
    for place, name in enumerate(names):
        column = list(map(itemgetter(name), rows))
        kinds = set(map(type, column))
        if kinds <= {str}:
            encoded: Iterable[str] = map(encode_basestring_ascii, column)
        elif kinds <= {str, int, type(None)}:  # not bool, a subclass: exact types only
            encoded = map(_json_scalar, column)
        else:
            return dumps(rows, indent=1)
        key = encode_basestring_ascii(name)
        lead = f"\n }},\n {{\n  {key}: " if place == 0 else f",\n  {key}: "
        cells[2 * place :: 2 * fields] = repeat(lead, len(rows))
        cells[2 * place + 1 :: 2 * fields] = encoded
    cells[0] = f"[\n {{\n  {encode_basestring_ascii(names[0])}: "
    cells.append("\n }\n]")
    return "".join(cells)


def _json_scalar(value: str | int | None) -> str:
    if value is None:
        return "null"
    return encode_basestring_ascii(value) if type(value) is str else int.__repr__(value)


class Progress:
    """Progress on stderr: a rewritten line on a terminal, a line every few seconds otherwise."""

    def __init__(self, what: str, total: int, *, quiet: bool) -> None:
        self.what = what
        self.total = total
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.started = self.last = time.monotonic()

    def step(self, done: int, nbytes: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty and now - self.last < 5.0:
            return
        self.last = now
        text = f"{self.what}: {done}/{self.total} entries, {human_size(nbytes)}"
        sys.stderr.write(f"\r{text}\033[K" if self.tty else text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def age_text(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.1f} days" if days >= 1 else f"{seconds / 3600:.1f} hours"

"""Text of the ``physpipe`` command: times, sizes, progress lines, and the whole-store ``ls``
table, which must format 100,000 rows in a fraction of a second (a handful of distinct values
per column formatted once, one f-string per row)."""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from operator import itemgetter
from typing import Any, TextIO

from pytest_physpipe.units import human_size

__all__ = [
    "LS_HEADERS",
    "LsLine",
    "Progress",
    "age_text",
    "gc_paused",
    "iso_time",
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
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


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


def ls_table(lines: list[LsLine], out: TextIO) -> None:
    """Write the ``ls`` table of ``lines`` (sorted here by label, then last use)."""
    lines.sort(key=itemgetter(1))  # by last use, then (stable) by label: two fast sorts
    lines.sort(key=itemgetter(0))
    # Every cell but the stage's comes from a handful of distinct values: format those once,
    # padded to their column's width.
    sizes = _padded(LS_HEADERS[3], {line[4] for line in lines}, size_text)
    created = _padded(LS_HEADERS[4], {line[5] for line in lines}, short_created)
    status = _padded(LS_HEADERS[2], {line[3] for line in lines}, str)
    minutes = {m: minute_text(m) for m in {int(line[1] // 60) for line in lines}}
    width = max(len(LS_HEADERS[1]), *map(len, {line[0] for line in lines}))
    header = ["KEY".ljust(12), LS_HEADERS[1].ljust(width), status[None], sizes[None]]
    out.write("  ".join([*header, created[None], LS_HEADERS[5]]) + "\n")
    out.write(
        "".join(
            f"{key[:12]}  {label.ljust(width)}  {status[state]}  {sizes[nbytes]}  "
            f"{created[when]}  {minutes[int(last // 60)]}\n"
            for label, last, key, state, nbytes, when in lines
        )
    )


def _padded(header: str, values: Iterable[Any], show: Callable[[Any], str]) -> dict[Any, str]:
    """Each value shown and padded to the column's width; ``None`` gives the header."""
    shown: dict[Any, str] = {value: show(value) for value in values}
    width = max(len(header), *map(len, shown.values()))
    padded = {value: text.ljust(width) for value, text in shown.items()}
    padded[None] = header.ljust(width)
    return padded


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

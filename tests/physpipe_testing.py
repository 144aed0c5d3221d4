"""Helpers the tests import: the call log of pytester projects, child processes for the race
tests (the ``calls`` and ``spawn`` fixtures in conftest.py use them), and the hypothesis
strategy of plain JSON data the store's property tests share."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

REPO = Path(__file__).resolve().parents[1]
#: Options of an inner pytest run that skip plugins it does not need (hypothesis costs ~0.7 s a
#: run, pytest-benchmark warns under xdist) and its cache.
LEAN = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

Spawn = Callable[..., "subprocess.Popen[str]"]


def finish(child: subprocess.Popen[str]) -> str:
    """Wait for a child and return its stdout; fail with its output if it failed."""
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, f"child failed ({child.returncode}):\n{out}\n{err}"
    return out


def wait_for(path: Path, timeout: float = 30.0) -> None:
    """Wait until a child creates ``path`` (its handshake file)."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"timed out waiting for {path}"
        time.sleep(0.002)


#: A module the stages of a pytester project import to count their computations:
#: ``from physlog import log`` then ``log("grid n=8")`` inside the stage function. It appends
#: to ``calls.log`` beside it (short O_APPEND writes, so xdist workers never tear a line).
PHYSLOG = """
from pathlib import Path

LOG = Path(__file__).parent / "calls.log"


def log(line):
    with LOG.open("a") as handle:
        handle.write(line + "\\n")
"""


class CallLog:
    """The lines logged by stages of a pytester project, read between runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def take(self) -> Counter[str]:
        """How often each line was logged since the last ``take()``; then forget them."""
        counted = Counter(self.lines())
        self.path.unlink(missing_ok=True)
        return counted


def json_leaves() -> SearchStrategy[Any]:
    """Every kind of JSON scalar, with the edges a codec must keep: integers far beyond 64 bits,
    NaN and infinities, any text."""
    from hypothesis import strategies as st

    return (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**200), max_value=2**200)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=10)
    )


def json_values(max_leaves: int) -> SearchStrategy[Any]:
    """Plain JSON data of at most ``max_leaves`` leaves (:func:`json_leaves`), nested in lists
    and in dicts with string keys."""
    from hypothesis import strategies as st

    return st.recursive(
        json_leaves(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=max_leaves,
    )

"""What the benchmarks share: timing one pytest process, and printing a table of results."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def timed_pytest(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
    ok: tuple[int, ...] = (0,),
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``python -m pytest ARGS`` in ``cwd`` (``python``: this interpreter unless given):
    its wall time and result.

    A failed run (an exit status not in ``ok``) ends the benchmark with pytest's output: a
    number measured on failing tests would mean nothing.
    """
    command = [python or sys.executable, "-m", "pytest", *args]
    started = time.perf_counter()
    result = subprocess.run(
        command,
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode not in ok:
        raise SystemExit(f"{' '.join(command)} in {cwd} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, result


#: One row of a benchmark table: measurement, our figure, target or note, met (None: no target).
Row = tuple[str, str, str, "bool | None"]


def print_table(rows: Sequence[Row], header: Sequence[str] = ()) -> None:
    """Print the header lines, then the rows as aligned columns with an ok/MISSED verdict."""
    verdict = {None: "", True: "ok", False: "MISSED"}
    table = [(a, b, c, verdict[met]) for a, b, c, met in rows]
    titles = ("measurement", "median", "target / note", "")
    widths = [max(len(r[i]) for r in [titles, *table]) for i in range(4)]
    for line in header:
        print(line)
    for row in [titles, tuple("-" * w for w in widths), *table]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def check_exit(rows: Sequence[Row], check: bool) -> int:
    """``--check``'s exit status: 1, naming them on stderr, when a target was missed."""
    missed = [row[0] for row in rows if row[3] is False]
    if check and missed:
        print(f"--check: {len(missed)} target(s) missed: {'; '.join(missed)}", file=sys.stderr)
        return 1
    return 0

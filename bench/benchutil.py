"""What the benchmarks share: timing one pytest process."""

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

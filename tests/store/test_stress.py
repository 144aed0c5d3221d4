"""The short version of ``bench/stress_store.py``, so that every CI run stresses the store.

Three sessions with two xdist workers each share one store, two of them are SIGKILLed (the
whole session or one worker), for flock and soft locks: no hang, no duplicate computation, no
wrong value, and ``physpipe verify`` finds the store clean.
"""

from __future__ import annotations

import subprocess
import sys

from physpipe_testing import REPO


def test_short_stress_run_loses_nothing_and_computes_nothing_twice() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "stress_store.py"), "--sessions", "3",
         "--kills", "2", "--params", "3", "--kill-window", "4", "--timeout", "240", "--check"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

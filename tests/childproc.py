"""Child processes for the race tests (test_locks.py, test_resources.py).

The ``spawn`` fixture (in conftest.py) starts them; these helpers wait on them.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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

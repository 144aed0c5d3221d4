"""Run ids: decided once per run (by the xdist controller) and shared by its processes."""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["new_run_id"]


def new_run_id() -> str:
    """A unique, sortable id: ``20261125T101500-<pid>-<random>``."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

"""``python -m pytest_physpipe.worker JOB.json``: the batch-job entry point.

Job scripts and site wrappers name this module; the runner itself lives in
:mod:`pytest_physpipe.cluster.job`.
"""

from __future__ import annotations

from pytest_physpipe.cluster.job import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())

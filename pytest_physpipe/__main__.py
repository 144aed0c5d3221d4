"""``python -m pytest_physpipe``: the ``physpipe`` store-management command.

:func:`run` is also the ``physpipe`` console script."""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

from pytest_physpipe.store.cli import main

__all__ = ["run"]


def run() -> NoReturn:
    """The ``physpipe`` program: :func:`~pytest_physpipe.store.cli.main`, then exit. Where
    nothing is left to do at exit (no ``atexit`` handler, no other thread) the process ends at
    once, its output flushed: the interpreter's teardown would only free what the command built
    (for ``ls`` over 100,000 entries, a few hundredths of a second). Otherwise, or when the
    flush fails (a closed pipe), it exits as usual."""
    status = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(status) from None
    # CPython counts the exit handlers (privately); an interpreter that does not say how many
    # there are gets the usual exit.
    handlers = getattr(atexit, "_ncallbacks", None)
    threading = sys.modules.get("threading")
    alone = threading is None or threading.active_count() == 1
    if handlers is not None and handlers() == 0 and alone:
        os._exit(status)
    raise SystemExit(status)


if __name__ == "__main__":
    run()

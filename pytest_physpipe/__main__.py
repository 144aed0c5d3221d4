"""``python -m pytest_physpipe``: the ``physpipe`` store-management command."""

from __future__ import annotations

from pytest_physpipe.store.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

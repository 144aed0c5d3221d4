"""Shared helpers for the plugin's tests. Keep this small and generic."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

# numpy cannot be imported twice in one process, and pytester's in-process runs drop modules
# first imported inside them; importing it here, before any such run, keeps it loaded.
import numpy  # noqa: F401
import pytest
from physpipe_testing import PHYSLOG, REPO, CallLog, Spawn


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Under `-n auto --dist loadgroup` (the README's test command) the tests that use the one
    # Slurm test cluster run one after another on a single worker, while the others share the
    # remaining workers: they mostly wait for Slurm, so they overlap well with the rest.
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm-cluster"))


@pytest.fixture
def calls(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> CallLog:
    """Set up a pytester project for stage tests and return its :class:`CallLog`.

    Also: no store location leaks in from the environment, inner runs skip slow unrelated
    plugins, and no bytecode is cached, so a
    module rewritten between two in-process runs is always imported from its new source (a
    ``.pyc`` is validated by mtime in whole seconds and size only).
    """
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    # Inner runs do not need these plugins: hypothesis's costs ~0.7 s per in-process run, and
    # pytest-benchmark warns under xdist. (`-p no:NAME` is fine where NAME is not installed.)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:benchmark")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    pytester.makepyfile(physlog=PHYSLOG)
    return CallLog(pytester.path / "calls.log")


@pytest.fixture
def fresh_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process pytester runs import the plugin anew from source (no bytecode written), with
    no store location or xdist worker id leaking in from the outer run."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)


@pytest.fixture
def spawn(request: pytest.FixtureRequest) -> Iterator[Spawn]:
    """Start ``python -c PRELUDE+code args...`` (``PRELUDE`` from the test module); every child
    is killed at teardown."""
    prelude = getattr(request.module, "PRELUDE", "")
    children: list[subprocess.Popen[str]] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    def start(code: str, *args: object) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", prelude + textwrap.dedent(code), *map(str, args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)

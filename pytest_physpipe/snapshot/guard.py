"""Goldens are never lost by accident: which goldens syrupy may count as unused.

syrupy counts a golden as unused, and deletes it under ``--snapshot-update``, when a test that
"ran" did not assert it. A test that failed in its stage fixture, crashed before its assertion,
or was deselected by ``-m``/``-k`` never asserted anything, so its goldens looked unused and
were deleted. The rule here:

    a golden may be counted as unused (and removed) only when no test of this session owns it
    (its test was deleted or renamed), or when its test ran to completion (its call phase
    passed) and did not assert it.

Everything else is hidden from syrupy's unused-golden accounting: neither reported nor removed.
``--physpipe-plan`` runs nothing, so it hides every golden.

How, with public APIs only: :class:`GoldenGuard` is a plugin object that records the tests of
the session (``pytest_itemcollected``, before any deselection) and which ones completed
(``pytest_runtest_logreport``), and marks the stretch of ``pytest_sessionfinish`` in which
syrupy builds its report. :meth:`PhysicsSnapshotExtension.discover_snapshots
<pytest_physpipe.snapshot.extension.PhysicsSnapshotExtension.discover_snapshots>` asks it, in
that stretch, which goldens to show. Under xdist every worker collects the whole session but runs
only some of it: a worker shows a golden only if it is orphaned or its test completed on that
worker, and syrupy's controller takes the union of the workers' views, which is the rule above.
The guard also adds ``physics`` to syrupy's ignored file extensions, so that another extension
sharing ``__snapshots__`` never mistakes a golden file for an unknown file and deletes it whole.

It also tells :data:`~pytest_physpipe.snapshot.writes.PENDING` when the session starts, when a
test module is done and when the session ends, so that each golden file is written once per
module rather than once per new golden. Only a test that uses syrupy's ``snapshot`` fixture
(``physics_snapshot`` does) writes goldens, so "a test module is done" is watched
(:class:`ModuleFlush`, a wrapper around each test) only in a session that runs such a test;
other sessions pay nothing per test for it.

This module imports only pytest and :mod:`.writes`: it is loaded on every run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_physpipe.snapshot.writes import PENDING

__all__ = ["GUARD", "GoldenGuard", "install_golden_guard"]

#: Where the run's guard lives (``config.stash``).
GUARD = pytest.StashKey["GoldenGuard"]()

#: The golden files' extension (``PhysicsSnapshotExtension.file_extension``).
GOLDEN_EXTENSION = "physics"

ModuleKey = tuple[str, str]  # (the test module's folder, its file name without .py)


def module_key_of_golden(location: str | Path) -> ModuleKey:
    """The test module of a golden file: ``d/__snapshots__/test_x.physics`` -> (d, test_x)."""
    path = Path(location)
    return str(path.parent.parent), path.stem


class GoldenGuard:
    """Decides which goldens syrupy may see as unused; one per pytest run."""

    def __init__(self, config: pytest.Config, *, plan: bool) -> None:
        self.plan = plan
        self.finishing = False
        #: Whether this run's golden writes wait in PENDING (between sessionstart and finish).
        self.deferring = False
        self._tests: dict[ModuleKey, set[str]] = {}
        self._completed: set[tuple[ModuleKey, str]] = set()
        self._by_nodeid: dict[str, tuple[ModuleKey, str]] = {}
        # Named on first need (most runs never ask): collected tests, and the passed node ids.
        self._unnamed: list[pytest.Function] = []
        self._passed: list[str] = []
        ignored = list(getattr(config.option, "ignore_file_extensions", None) or [])
        #: The user asked syrupy to ignore golden files altogether (--snapshot-ignore-file-...).
        self.user_ignores_goldens = GOLDEN_EXTENSION in ignored
        if not self.user_ignores_goldens:
            config.option.ignore_file_extensions = [*ignored, GOLDEN_EXTENSION]

    # -- hooks ---------------------------------------------------------------------------------

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        if isinstance(item, pytest.Function):
            self._unnamed.append(item)

    def pytest_sessionstart(self) -> None:
        if not self.plan:
            PENDING.start()  # golden files are written once per module (.writes)
            self.deferring = True

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Only a test that uses syrupy's `snapshot` fixture (`physics_snapshot` does) can
        # write a golden: a session without one is spared a wrapper around every test.
        pluginmanager = session.config.pluginmanager
        if not self.deferring or pluginmanager.has_plugin(_FLUSH):
            return
        if any("snapshot" in getattr(item, "fixturenames", ()) for item in session.items):
            pluginmanager.register(ModuleFlush(), _FLUSH)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed:
            self._passed.append(report.nodeid)

    @property
    def tests(self) -> dict[ModuleKey, set[str]]:
        """The snapshot names of every collected test, deselected ones included, per module."""
        if self._unnamed:
            from syrupy.location import PyTestLocation

            for item in self._unnamed:
                key: ModuleKey = (str(item.path.parent), item.path.stem)
                name = PyTestLocation(item).snapshot_name
                self._tests.setdefault(key, set()).add(name)
                self._by_nodeid[item.nodeid] = (key, name)
            self._unnamed.clear()
        return self._tests

    @property
    def completed(self) -> set[tuple[ModuleKey, str]]:
        """The (module, snapshot name) of every test whose call phase passed."""
        if self._passed:
            self.tests  # noqa: B018 - names the collected tests first
            for nodeid in self._passed:
                if nodeid in self._by_nodeid:
                    self._completed.add(self._by_nodeid[nodeid])
            self._passed.clear()
        return self._completed

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self) -> object:
        # syrupy builds its report (and deletes unused goldens) in its own sessionfinish,
        # which runs inside this wrapper: the pending goldens are on disk before it reads them.
        if self.deferring:
            PENDING.finish()
        self.finishing = True
        try:
            return (yield)
        finally:
            self.finishing = False
            if self.deferring:
                self.deferring = False
                PENDING.end()

    # -- the rule ------------------------------------------------------------------------------

    def owner(self, module: ModuleKey, golden: str) -> str | None:
        """The snapshot name of the test that writes ``golden``, None if no test does.

        ``test_x`` owns ``test_x``, ``test_x.1`` (second assertion) and ``test_x[name]``
        (``name=``); ``test_x[p]`` owns ``test_x[p]``, ``test_x[p].1``, ``test_x[p][name]``.
        """
        best: str | None = None
        for name in self.tests.get(module, ()):
            owns = golden == name or golden.startswith((name + ".", name + "["))
            if owns and (best is None or len(name) > len(best)):
                best = name
        return best

    def may_count_as_unused(self, module: ModuleKey, golden: str) -> bool:
        """Whether syrupy may report ``golden`` as unused and delete it (see the module doc)."""
        if self.plan:
            return False
        owner = self.owner(module, golden)
        return owner is None or (module, owner) in self.completed


_FLUSH = "physpipe-golden-flush"


class ModuleFlush:
    """Writes the pending goldens when the run leaves a test module (registered by the guard
    for a session whose tests can write goldens; the session's end writes the rest)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> object:
        try:
            return (yield)
        finally:
            # Leaving a test module: its golden file is complete for this session.
            if PENDING and (nextitem is None or nextitem.path != item.path):
                PENDING.flush()


def install_golden_guard(config: pytest.Config, *, plan: bool) -> GoldenGuard:
    """Register the run's :class:`GoldenGuard` (from ``pytest_configure``)."""
    guard = GoldenGuard(config, plan=plan)
    config.stash[GUARD] = guard
    config.pluginmanager.register(guard, "physpipe-goldens")
    return guard


def guard_for(config: pytest.Config | None) -> GoldenGuard | None:
    """The run's guard while syrupy builds its report; None at any other time."""
    if config is None:
        return None
    guard = config.stash.get(GUARD, None)
    return guard if guard is not None and guard.finishing else None

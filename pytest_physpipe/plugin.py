"""The pytest11 entry point: options, hook specs, and the run object that holds the run's state.

``pytest_configure`` builds one :class:`~pytest_physpipe.run.PhyspipeRun` (settings, run id,
budget, the session on first need) and registers it as a plugin; its methods are the run's
hooks. The xdist hooks get the same object. Nothing inside the package imports this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pytest_physpipe.errors import PhyspipeError
from pytest_physpipe.options import add_options, parse_settings

if TYPE_CHECKING:
    from syrupy.assertion import SnapshotAssertion

    from pytest_physpipe.session import PhyspipeFixture
    from pytest_physpipe.snapshot.assertion import PhysicsSnapshot


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_physpipe import hookspecs

    pluginmanager.add_hookspecs(hookspecs)
    pluginmanager.register(hookspecs.Defaults(), "physpipe-defaults")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    from pytest_physpipe.run import PhyspipeRun
    from pytest_physpipe.stage import RUN

    config.addinivalue_line(
        "markers",
        "slow: needs a stage declared with slow=True (added by physpipe); deselect with "
        '-m "not slow"',
    )
    settings = parse_settings(config)
    xdist = config.pluginmanager.hasplugin("xdist")
    if settings.plan_only and xdist:
        # The plan is printed from collection, which an xdist controller never does itself:
        # collect here instead of in workers. (Runs before xdist's trylast pytest_configure.)
        config.option.numprocesses = 0
        config.option.dist = "no"
        config.option.tx = []
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        from pytest_physpipe.scheduling.hooks import from_controller

        settings, budget = from_controller(settings, workerinput)
        run = PhyspipeRun(
            config,
            settings,
            run_id=workerinput.get("physpipe_run_id"),
            worker=str(workerinput.get("workerid")),
            budget=budget,
        )
    else:
        from pytest_physpipe.runid import new_run_id

        run = PhyspipeRun(config, settings, run_id=new_run_id(), worker=None)
    if not settings.plan_only:
        # `kill`, a CI timeout or Slurm's end of allocation acts like Ctrl-C: scratch removed,
        # locks released, the jobs a run submitted cancelled (xdist workers too, each its own).
        from pytest_physpipe.cluster.interrupts import (
            QuickInterrupt,
            RunGuard,
            sigterm_as_interrupt,
        )

        config.add_cleanup(sigterm_as_interrupt())
        config.pluginmanager.register(QuickInterrupt(config), "physpipe-quick-interrupt")
        if workerinput is None and settings.backend != "local":
            # -x / --maxfail under xdist: the controller cancels every worker's jobs.
            guard = RunGuard(config, str(run.run_id), settings.backend, settings.store_dir)
            config.pluginmanager.register(guard, "physpipe-run-guard")
    config.stash[RUN] = run
    config.pluginmanager.register(run, "physpipe-run")
    from pytest_physpipe.snapshot.guard import install_golden_guard

    install_golden_guard(config, plan=settings.plan_only)
    if workerinput is not None or (xdist and config.getoption("dist", "no") != "no"):
        # xdist is active: a worker, or a controller (-n N or --dist turned "no" into a mode
        # before this hook). A plain run with xdist merely installed imports none of it; the
        # run object records its compute times instead (see PhyspipeRun.pytest_sessionfinish).
        from pytest_physpipe.scheduling.hooks import XdistHooks

        run.xdist = XdistHooks(run)
        config.pluginmanager.register(run.xdist, "physpipe-xdist")


@pytest.fixture
def physpipe(request: pytest.FixtureRequest) -> PhyspipeFixture:
    """Provenance of the stage instances this test uses: ``physpipe.record("heat")``."""
    from pytest_physpipe.session import PhyspipeFixture
    from pytest_physpipe.stage import RUN

    return PhyspipeFixture(request.config.stash[RUN].session, request.node)


@pytest.fixture
def physics_snapshot(
    snapshot: SnapshotAssertion, request: pytest.FixtureRequest
) -> PhysicsSnapshot:
    """A syrupy snapshot that compares physics metrics within tolerances (docs/snapshots.md)."""
    from pytest_physpipe.snapshot.assertion import make_physics_snapshot

    return make_physics_snapshot(snapshot, request)


# -- errors: one paragraph, no plugin traceback -----------------------------------------------


def _plain_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """A physpipe error as users read it: its class and its paragraph, without our frames."""
    exc = excinfo.value
    return f"{type(exc).__name__}: {exc}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> pytest.TestReport | None:
    # A plain hookimpl that answers only for a physpipe error and leaves every other report
    # to pytest: a wrapper would cost every phase of every test a generator round trip.
    excinfo = call.excinfo
    if excinfo is None or not isinstance(excinfo.value, PhyspipeError):
        return None
    report = pytest.TestReport.from_item_and_call(item, call)
    if report.failed:
        # Raised by the plugin on the stage's behalf (the message names stage and remedy);
        # the stage's own exceptions keep their full traceback.
        report.longrepr = _plain_error(excinfo)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    report = yield
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", "")
    if report.failed and message.startswith("pytest_physpipe.errors."):
        # A stage declaration the plugin refused at import: the paragraph says which and why.
        where = getattr(collector, "path", None) or collector.nodeid
        report.longrepr = f"{where}: {message.removeprefix('pytest_physpipe.errors.')}"
    return report

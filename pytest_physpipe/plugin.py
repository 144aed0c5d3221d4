"""The pytest11 entry point: thin hooks that hand off to :class:`PhyspipeSession`."""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING, Any

import pytest

from pytest_physpipe.options import Settings, add_options, parse_settings

if TYPE_CHECKING:
    from syrupy.assertion import SnapshotAssertion

    from pytest_physpipe.session import PhyspipeFixture, PhyspipeSession
    from pytest_physpipe.snapshot.assertion import PhysicsSnapshot

_SETTINGS = pytest.StashKey[Settings]()
_RUN = pytest.StashKey[tuple[str | None, str | None]]()
_INSTANCES = pytest.StashKey[list[Any]]()
_BUDGET = pytest.StashKey[Any]()  # an xdist worker's Budget, decided by its controller


def _existing_session(config: pytest.Config) -> PhyspipeSession | None:
    """The run's session if something already created it."""
    if "pytest_physpipe.session" not in sys.modules:
        return None  # nothing ever created one in this process
    from pytest_physpipe.session import SESSION

    return config.stash.get(SESSION, None)


def _session(config: pytest.Config) -> PhyspipeSession:
    """The run's session, created on first need.

    Creating it imports the whole machinery (store, codecs, numpy); a suite that declares no
    stage never creates it, so it never pays for that: pytest imports every plugin on every run.
    """
    session = _existing_session(config)
    if session is None:
        from pytest_physpipe.session import SESSION, PhyspipeSession
        from pytest_physpipe.stage import PROVIDER

        run_id, worker = config.stash[_RUN]
        session = PhyspipeSession(
            config,
            config.stash[_SETTINGS],
            run_id=run_id,
            worker=worker,
            budget=config.stash.get(_BUDGET, None),
        )
        config.stash[SESSION] = session
        config.stash[PROVIDER] = session
    return session


def _stages_declared() -> bool:
    from pytest_physpipe.stage import registry

    return bool(registry.all())


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_physpipe import hookspecs

    pluginmanager.add_hookspecs(hookspecs)
    pluginmanager.register(hookspecs.Defaults(), "physpipe-defaults")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: needs a stage declared with slow=True (added by physpipe); deselect with "
        '-m "not slow"',
    )
    settings = parse_settings(config)
    if settings.plan_only and config.pluginmanager.hasplugin("xdist"):
        # The plan is printed from collection, which an xdist controller never does itself:
        # collect here instead of in workers. (Runs before xdist's trylast pytest_configure.)
        config.option.numprocesses = 0
        config.option.dist = "no"
        config.option.tx = []
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    run_id = worker = None
    if workerinput is not None:
        run_id = workerinput.get("physpipe_run_id")
        worker = str(workerinput.get("workerid"))
        from pytest_physpipe.scheduling.hooks import from_controller

        settings, config.stash[_BUDGET] = from_controller(settings, workerinput)
    else:
        from pytest_physpipe.runid import new_run_id

        run_id = new_run_id()
    config.stash[_SETTINGS] = settings
    config.stash[_RUN] = (run_id, worker)
    from pytest_physpipe.snapshot.guard import install_golden_guard

    install_golden_guard(config, plan=settings.plan_only)
    if workerinput is None and settings.backend != "local" and not settings.plan_only:
        # Jobs a run submitted must not outlive it : `kill` acts like Ctrl-C.
        from pytest_physpipe.cluster.interrupts import RunGuard, sigterm_as_interrupt

        config.add_cleanup(sigterm_as_interrupt())
        config.pluginmanager.register(
            RunGuard(config, str(run_id), settings.backend, settings.store_dir), "physpipe-run"
        )
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_physpipe.scheduling.hooks import XdistHooks

        config.pluginmanager.register(XdistHooks(config, run_id), "physpipe-xdist")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = _existing_session(config)
    if session is not None:
        from pytest_physpipe.session import SESSION
        from pytest_physpipe.stage import PROVIDER

        session.close()
        del config.stash[SESSION]
        del config.stash[PROVIDER]
    run_id, worker = config.stash.get(_RUN, (None, None))
    settings = config.stash.get(_SETTINGS, None)
    if worker is None and run_id is not None and settings is not None and not settings.no_cache:
        # The run's slot files and scheduling plans. The process that decided the run id (a
        # plain run, or the xdist controller, whose workers are gone by now) removes them.
        from pytest_physpipe.store.layout import StoreLayout

        layout = StoreLayout(settings.store_dir)
        for path in (layout.slots_dir(run_id), layout.run_dir(run_id)):
            shutil.rmtree(path, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A stage that gathers `over=` some fields fans out once per gather.
    if _stages_declared():
        _session(metafunc.config).parametrize(metafunc)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the slow marker must be on the items before `-m "not slow"` deselects.
    if _stages_declared():
        _session(config).mark_items(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    physpipe = _session(session.config) if _stages_declared() else _existing_session(session.config)
    if physpipe is None:
        return
    instances = physpipe.finish_collection(session.items)
    session.config.stash[_INSTANCES] = instances
    if physpipe.settings.plan_only:
        from pytest_physpipe.report import format_plan

        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        extras: dict[str, Any] = {}
        if physpipe.settings.backend != "local":
            from pytest_physpipe.cluster.jobs import plan_extras

            extras = plan_extras(physpipe.store.root, physpipe.settings.backend, instances)
        lines = format_plan(
            instances,
            physpipe.statuses,
            physpipe.settings.backend,
            physpipe.reasons,
            **extras,
        )
        if reporter is not None:
            reporter.ensure_newline()
            reporter.section("physpipe plan", sep="-")
            for line in lines:
                reporter.write_line(line)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    if session.config.stash[_SETTINGS].plan_only:
        return True  # the plan runs nothing
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    physpipe = _existing_session(session.config)
    if physpipe is None or hasattr(session.config, "workerinput"):
        return  # workers hand their records to the controller (see scheduling/hooks.py)
    settings = physpipe.settings
    from pytest_physpipe.report import write_graph, write_report

    if settings.report is not None:
        write_report(settings.report, physpipe.run_id, physpipe.records)
    if settings.graph is not None:
        instances = session.config.stash.get(_INSTANCES, [])
        write_graph(settings.graph, instances, physpipe.records, physpipe.statuses)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    physpipe = _existing_session(config)
    if physpipe is None or not physpipe.records or physpipe.settings.plan_only:
        return
    from pytest_physpipe.report import format_summary

    size = None if physpipe.settings.no_cache else physpipe.store.size_bytes()
    terminalreporter.section("physpipe", sep="-")
    for line in format_summary(physpipe.records, size, verbose=config.option.verbose > 0):
        terminalreporter.write_line(line)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> None:
    physpipe = _existing_session(pyfuncitem.config)
    if physpipe is not None:
        physpipe.isolate_arguments(pyfuncitem)


@pytest.fixture
def physpipe(request: pytest.FixtureRequest) -> PhyspipeFixture:
    """Provenance of the stage instances this test uses: ``physpipe.record("heat")``."""
    from pytest_physpipe.session import PhyspipeFixture

    return PhyspipeFixture(_session(request.config), request.node)


@pytest.fixture
def physics_snapshot(
    snapshot: SnapshotAssertion, request: pytest.FixtureRequest
) -> PhysicsSnapshot:
    """A syrupy snapshot that compares physics metrics within tolerances (docs/snapshots.md)."""
    from pytest_physpipe.snapshot.assertion import make_physics_snapshot

    return make_physics_snapshot(snapshot, request)

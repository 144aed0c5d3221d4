"""One pytest process's physpipe state: :class:`PhyspipeRun`, registered by ``pytest_configure``.

The run object holds what the options decided (settings), the run id, the xdist worker id, the
resource budget, the :class:`~pytest_physpipe.session.PhyspipeSession` (created on first need)
and the stage instances the collected tests need; its methods are the run's hooks. Everything
that needs the run reaches it through the one stash key :data:`pytest_physpipe.stage.RUN`; the
xdist hooks receive it when they are built. Nothing in the package imports the entry module.

Creating the session imports the whole machinery (store, codecs, numpy): a suite that declares
no stage never creates one, so it never pays for that (pytest imports every plugin on every run).
:class:`~pytest_physpipe.errors.PhyspipeError` becomes ``pytest.UsageError`` here only
(:func:`usage_errors`).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from pytest_physpipe.errors import PhyspipeError, ResourceError
from pytest_physpipe.stage import registry

if TYPE_CHECKING:
    from pytest_physpipe.options import Settings
    from pytest_physpipe.plan import StageInstance
    from pytest_physpipe.reported import Reported, ReportedRecord
    from pytest_physpipe.resources import Budget
    from pytest_physpipe.scheduling.hooks import XdistHooks
    from pytest_physpipe.session import PhyspipeSession
    from pytest_physpipe.stage import StageSpec

__all__ = ["PhyspipeRun", "computed_any", "usage_errors"]


@contextmanager
def usage_errors() -> Iterator[None]:
    """A :class:`PhyspipeError` raised inside becomes a ``pytest.UsageError`` with its message."""
    __tracebackhide__ = True
    try:
        yield
    except PhyspipeError as exc:
        raise pytest.UsageError(str(exc)) from None


class PhyspipeRun:
    """The run's state and hooks (one per pytest process, controller and workers alike)."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        *,
        run_id: str | None,
        worker: str | None,
        budget: Budget | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        #: Decided by the plain run or the xdist controller; workers get their controller's.
        self.run_id = run_id
        #: The xdist worker id (``gw0``), ``None`` outside a worker.
        self.worker = worker
        #: Decided by the controller for its workers; ``None``: the session detects it.
        self.budget = budget
        #: The instances the selected tests need, upstream first (after collection).
        self.instances: list[StageInstance] = []
        #: The xdist hooks, where xdist is active (see :mod:`pytest_physpipe.scheduling.hooks`).
        self.xdist: XdistHooks | None = None
        self._session: PhyspipeSession | None = None
        #: The records an xdist controller gathers from its workers: the controller runs no
        #: stage, so it never creates a session (nor imports the machinery one needs, nor the
        #: record model: see :mod:`pytest_physpipe.reported`).
        self.gathered: dict[str, ReportedRecord] = {}

    # -- the session ----------------------------------------------------------------------------

    @property
    def session(self) -> PhyspipeSession:
        """The run's session, created on first need."""
        if self._session is None:
            from pytest_physpipe.session import PhyspipeSession

            with usage_errors():
                self._session = PhyspipeSession(
                    self.config,
                    self.settings,
                    run_id=self.run_id,
                    worker=self.worker,
                    budget=self.budget,
                )
        return self._session

    @property
    def existing_session(self) -> PhyspipeSession | None:
        """The session if something already created it (``None`` never creates one)."""
        return self._session

    @property
    def records(self) -> Mapping[str, Reported]:
        """This process's stage records: its session's, or what its workers sent."""
        return self._session.records if self._session is not None else self.gathered

    @staticmethod
    def stages_declared() -> bool:
        return bool(registry.all())

    def provide(
        self, spec: StageSpec, request: pytest.FixtureRequest, upstream: dict[str, Any]
    ) -> Any:
        """A stage fixture's value (the stage fixtures call this through ``RUN``)."""
        __tracebackhide__ = True
        session = self.session
        try:  # usage_errors(), without a context manager per fixture request
            instance = session.instance_for(spec, request)
        except PhyspipeError as exc:
            raise pytest.UsageError(str(exc)) from None
        return session.serve(instance, upstream)

    # -- hooks ----------------------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        # A stage that gathers `over=` some fields fans out once per gather.
        if self.stages_declared():
            with usage_errors():
                self.session.parametrize(metafunc)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # tryfirst: the slow marker must be on the items before `-m "not slow"` deselects.
        if self.stages_declared():
            with usage_errors():
                self.session.mark_items(items)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # tryfirst: an xdist worker reports its collection from this same hook, and the
        # controller reads the worker's scheduling manifest as soon as every collection is in.
        physpipe = self.session if self.stages_declared() else self._session
        if physpipe is not None:
            try:
                with usage_errors() if self.worker is None else _no_translation():
                    self.instances = physpipe.finish_collection(session.items)
            except ResourceError as exc:
                # Only in an xdist worker: a UsageError raised there never reaches the
                # terminal (the controller only sees the worker end early), so the error
                # travels as a failed collection report, and the worker runs nothing.
                session.config.hook.pytest_collectreport(
                    report=pytest.CollectReport(
                        nodeid="", outcome="failed", longrepr=str(exc), result=[]
                    )
                )
                session.items.clear()
                self.instances = []
        if self.xdist is not None:
            self.xdist.collected(session)
        if physpipe is not None and self.settings.plan_only:
            self._print_plan(physpipe)

    def _print_plan(self, physpipe: PhyspipeSession) -> None:
        from pytest_physpipe.report import format_plan

        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        reporter.ensure_newline()
        reporter.section("physpipe plan", sep="-")
        extras: dict[str, Any] = {}
        if self.settings.backend != "local":
            from pytest_physpipe.cluster.jobs import plan_extras

            extras = plan_extras(physpipe.store.root, self.settings.backend, self.instances)
        lines = format_plan(
            self.instances, physpipe.statuses, self.settings.backend, physpipe.reasons, **extras
        )
        # One write: a plan of ten thousand instances is ten thousand lines.
        reporter.write("\n".join(lines) + "\n")

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> None:
        if self._session is not None:
            self._session.isolate_arguments(pyfuncitem)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if self.settings.plan_only:
            return True  # the plan runs nothing
        return None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        physpipe = self._session
        if self.worker is not None or (physpipe is None and not self.gathered):
            return  # workers hand their records to the controller (see scheduling/hooks.py)
        from pytest_physpipe.report import write_graph, write_report

        settings, records = self.settings, self.records
        run_id = physpipe.run_id if physpipe is not None else str(self.run_id)
        statuses = physpipe.statuses if physpipe is not None else {}
        try:
            if settings.report is not None:
                write_report(settings.report, run_id, records)
            if settings.graph is not None:
                write_graph(settings.graph, self.instances, records, statuses)
        except OSError as exc:
            # Checked before the run, so only a change since (disk full, folder gone) gets here.
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            message = (
                f"physpipe: could not write {exc.filename or 'the report'} "
                f"({exc.strerror or exc}); the run's results are unaffected. Free some space "
                "or pick another path."
            )
            if reporter is not None:
                reporter.write_line(message, red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        # Where xdist is installed but not active, the compute times a later --physpipe-dist
        # run schedules by are recorded here, as the xdist hooks record them when they are
        # registered; a run that computed nothing imports none of it.
        idle_xdist = self.xdist is None and self.config.pluginmanager.hasplugin("xdist")
        if idle_xdist and not settings.no_cache and computed_any(records):
            from pytest_physpipe.scheduling.policy import record_costs

            record_costs(records, settings.store_dir)

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        records = self.records
        if not records or self.settings.plan_only or self.worker is not None:
            return  # an xdist worker's terminal is nobody's: its controller sums up
        from pytest_physpipe.report import format_summary

        size = None
        if not self.settings.no_cache:
            # Recorded per shard: a stat per shard when the store did not change.
            from pytest_physpipe.store.layout import StoreLayout
            from pytest_physpipe.store.sizes import store_size

            with contextlib.suppress(OSError):
                size = store_size(StoreLayout(self.settings.store_dir))
        terminalreporter.section("physpipe", sep="-")
        for line in format_summary(records, size, verbose=config.option.verbose > 0):
            terminalreporter.write_line(line)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        # The plan goes with the session: pytest's last garbage collections (five full ones,
        # after this hook) then need not walk ten thousand instances.
        self.instances = []
        if self.worker is None and self.run_id is not None and not self.settings.no_cache:
            # The run's slot files and scheduling manifests. The process that decided the run
            # id (a plain run, or the xdist controller, whose workers are gone by now) removes
            # them.
            from pytest_physpipe.store.layout import StoreLayout

            layout = StoreLayout(self.settings.store_dir)
            for path in (layout.slots_dir(self.run_id), layout.run_dir(self.run_id)):
                shutil.rmtree(path, ignore_errors=True)
            # What killed runs (and killed workers of this one) left on this host: provably
            # dead, so removed now; a listing of tmp/ and trash/, no waiting.
            from pytest_physpipe.store.scratch import cleanup

            with contextlib.suppress(OSError):
                cleanup(layout, local_only=True)


@contextmanager
def _no_translation() -> Iterator[None]:
    yield


def computed_any(records: Mapping[str, Reported]) -> bool:
    """Whether a run's records hold a computed instance (whose compute time is worth keeping)."""
    return any(record.status == "computed" for record in records.values())

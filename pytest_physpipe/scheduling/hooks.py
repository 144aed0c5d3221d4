"""Everything xdist-specific, registered only when xdist is active (pytest-randomly's pattern).

Values decided once on the controller travel to the workers through ``workerinput``: the run
id (slots and ``--physpipe-rebuild`` are per run), the resolved store path and the resource
budget (so that every worker shares the same slots, whatever its own environment detects).
Workers send their stage records back through ``workeroutput``; the controller merges them
into its terminal summary and JSON report, each record naming its worker.

Under ``--physpipe-dist`` every worker writes its manifest (``policy.py``) before it reports its
collection, and the controller schedules with ``scheduler.PhyspipeScheduling``.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_physpipe.options import Settings
    from pytest_physpipe.resources import Budget
    from pytest_physpipe.scheduling.policy import Manifest
    from pytest_physpipe.session import PhyspipeSession

__all__ = ["XdistHooks", "from_controller"]

# xdist modes whose placement --physpipe-dist replaces (xdist turns "no" into "load" under -n).
_REPLACEABLE_DIST = ("load", "no")


def from_controller(
    settings: Settings, workerinput: dict[str, Any]
) -> tuple[Settings, Budget | None]:
    """A worker's settings and budget, as its controller decided them."""
    from pytest_physpipe.resources import Budget

    store_dir = workerinput.get("physpipe_store_dir")
    if store_dir:
        settings = dataclasses.replace(settings, store_dir=Path(store_dir))
    budget = workerinput.get("physpipe_budget")
    if not budget:
        return settings, None
    return settings, Budget(cpus=int(budget["cpus"]), gpu_ids=tuple(budget["gpu_ids"]))


class XdistHooks:
    """xdist hooks for one run, on the controller and on every worker."""

    def __init__(self, config: pytest.Config, run_id: str | None) -> None:
        self.config = config
        self.run_id = run_id
        self.is_worker = hasattr(config, "workerinput")
        self._budget: Budget | None = None
        if self.is_worker or not self._settings().dist:
            return
        dist = config.getoption("dist", "no")
        if config.getoption("numprocesses", None) and dist not in _REPLACEABLE_DIST:
            raise pytest.UsageError(
                f"--physpipe-dist and --dist {dist} both choose how xdist places tests: drop "
                "one of them (--physpipe-dist takes the place of --dist load)."
            )

    def _settings(self) -> Settings:
        from pytest_physpipe.plugin import _SETTINGS

        return self.config.stash[_SETTINGS]

    def _session(self) -> PhyspipeSession:
        from pytest_physpipe.plugin import _session

        return _session(self.config)

    def _existing_session(self) -> PhyspipeSession | None:
        from pytest_physpipe.plugin import _existing_session

        return _existing_session(self.config)

    def _manifest_dir(self) -> Path | None:
        settings = self._settings()
        if settings.no_cache or self.run_id is None:
            return None  # --physpipe-no-cache writes nothing into the store
        from pytest_physpipe.store.layout import StoreLayout

        return StoreLayout(settings.store_dir).run_dir(self.run_id)

    # -- controller ---------------------------------------------------------------------------

    def _controller_budget(self) -> Budget:
        if self._budget is None:
            from pytest_physpipe.errors import ResourceError
            from pytest_physpipe.plugin import _BUDGET
            from pytest_physpipe.resources import detect_budget

            settings = self._settings()
            try:
                self._budget = detect_budget(cpus=settings.cpus, gpus=settings.gpus)
            except ResourceError as exc:
                raise pytest.UsageError(str(exc)) from None
            # The controller's own session (it merges records) uses the same budget.
            self.config.stash[_BUDGET] = self._budget
        return self._budget

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        budget = self._controller_budget()
        node.workerinput["physpipe_run_id"] = self.run_id
        node.workerinput["physpipe_store_dir"] = str(self._settings().store_dir)
        node.workerinput["physpipe_budget"] = {"cpus": budget.cpus, "gpu_ids": list(budget.gpu_ids)}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if not self._settings().dist:
            return None  # xdist's own --dist modes
        from pytest_physpipe.scheduling.policy import PhyspipeScheduling

        return PhyspipeScheduling(config, log, manifest_dir=self._manifest_dir())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        records = getattr(node, "workeroutput", {}).get("physpipe_records", [])
        if records:
            self._session().merge(records)

    # -- worker -------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # tryfirst: xdist's worker reports its collection from this same hook, and the
        # controller reads the manifest as soon as every collection is in.
        if not self.is_worker:
            return
        from pytest_physpipe.plugin import _stages_declared

        if _stages_declared():
            self._check_budget(self._session(), session)
        manifest_dir = self._manifest_dir()
        if manifest_dir is None or not self._settings().dist:
            return
        from pytest_physpipe.errors import PhyspipeError

        # Even without stages: an empty manifest tells the controller not to wait for one.
        from pytest_physpipe.store.layout import StoreLayout

        physpipe = self._session()
        worker = str(self.config.workerinput["workerid"])  # type: ignore[attr-defined]
        try:
            physpipe.store.ensure()
            _manifest(physpipe, session.items).write(
                manifest_dir / StoreLayout.manifest_name(worker)
            )
        except (OSError, PhyspipeError) as exc:
            # Without a manifest the controller schedules without stage keys; the run goes on.
            warnings.warn(
                pytest.PytestWarning(
                    f"physpipe: could not write the scheduling manifest into {manifest_dir} "
                    f"({exc}); --physpipe-dist schedules without knowing the stages."
                ),
                stacklevel=1,
            )

    @staticmethod
    def _check_budget(physpipe: PhyspipeSession, session: pytest.Session) -> None:
        """The plan-time budget check, reported so that the controller shows it.

        A ``UsageError`` raised in a worker never reaches the terminal (the controller only
        sees the worker end early), so the error travels as a failed collection report, and
        the worker runs nothing.
        """
        from pytest_physpipe.errors import ResourceError

        try:
            physpipe.check_budget(
                instance
                for item in session.items
                for instance in physpipe.planner.for_item(item).values()
            )
        except ResourceError as exc:
            session.config.hook.pytest_collectreport(
                report=pytest.CollectReport(
                    nodeid="", outcome="failed", longrepr=str(exc), result=[]
                )
            )
            session.items.clear()

    # -- both ---------------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        physpipe = self._existing_session()
        if self.is_worker:
            if physpipe is not None:
                workeroutput = session.config.workeroutput  # type: ignore[attr-defined]
                workeroutput["physpipe_records"] = [
                    r.model_dump(mode="json") for r in physpipe.records.values()
                ]
            return
        if physpipe is not None and not physpipe.settings.no_cache:
            _record_costs(physpipe)


def _manifest(physpipe: PhyspipeSession, items: list[pytest.Item]) -> Manifest:
    from pytest_physpipe.scheduling.policy import Manifest, ManifestStage, StageCosts

    costs = StageCosts.load(physpipe.settings.store_dir)
    tests: dict[str, tuple[str, ...]] = {}
    stages: dict[str, ManifestStage] = {}
    for item in items:
        needed = physpipe.planner.for_item(item)
        # A cache=False stage is computed by every process that needs it: nothing to share.
        shared = [instance for instance in needed.values() if instance.spec.cache]
        tests[item.nodeid] = tuple(sorted(instance.key for instance in shared))
        for instance in shared:
            if instance.key in stages:
                continue
            cached = not physpipe.runner.wants_rebuild(instance) and physpipe.store.exists(
                instance.key
            )
            stages[instance.key] = ManifestStage(
                key=instance.key,
                label=instance.label,
                cached=cached,
                cost=costs.expected(label=instance.label, name=instance.name, slow=instance.slow),
                upstream=tuple(instance.upstream.values()),
                cpu=instance.spec.resources.cpu,
                slow=instance.slow,
            )
    return Manifest(tests=tests, stages=stages)


def _record_costs(physpipe: PhyspipeSession) -> None:
    from pytest_physpipe.scheduling.policy import StageCosts

    computed = [
        (r.label, r.name, r.duration_s) for r in physpipe.records.values() if r.status == "computed"
    ]
    if not computed:
        return
    store_dir = physpipe.settings.store_dir
    if not store_dir.is_dir():
        return
    costs = StageCosts.load(store_dir)
    costs.update(computed)
    try:
        costs.save(store_dir)
    except OSError:
        return  # a scheduling hint: a read-only store just keeps the old one

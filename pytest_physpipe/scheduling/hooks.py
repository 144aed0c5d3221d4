"""Everything xdist-specific, registered only when xdist is active (pytest-randomly's pattern).

Values decided once on the controller travel to the workers through ``workerinput``: the run
id (slots and ``--physpipe-rebuild`` are per run), the resolved store path and the resource
budget (so that every worker shares the same slots, whatever its own environment detects).
Workers send their stage records back through ``workeroutput``, each naming its worker: the
fields the terminal summary and the cost history read, plus every record's whole document when
the run writes a ``--physpipe-report`` (the controller says which in ``workerinput``). The
controller merges them as :class:`~pytest_physpipe.reported.ReportedRecord`: it validates
nothing its own workers wrote, and never imports the pydantic record model.

Under ``--physpipe-dist`` every worker writes its manifest (``policy.py``) before it reports its
collection, and the controller schedules with ``scheduler.PhyspipeScheduling``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pytest_physpipe.options import Settings
    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.reported import ReportedRecord
    from pytest_physpipe.resources import Budget
    from pytest_physpipe.run import PhyspipeRun
    from pytest_physpipe.scheduling.policy import Manifest
    from pytest_physpipe.session import PhyspipeSession

__all__ = ["XdistHooks", "decode_records", "encode_records", "from_controller"]

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
    """xdist hooks for one run, on the controller and on every worker; they share its state."""

    def __init__(self, run: PhyspipeRun) -> None:
        self.run = run
        self.is_worker = run.worker is not None
        config = run.config
        if self.is_worker or not run.settings.dist:
            return
        dist = config.getoption("dist", "no")
        if config.getoption("numprocesses", None) and dist not in _REPLACEABLE_DIST:
            raise pytest.UsageError(
                f"--physpipe-dist and --dist {dist} both choose how xdist places tests: drop "
                "one of them (--physpipe-dist takes the place of --dist load)."
            )

    def _manifest_dir(self) -> Path | None:
        settings = self.run.settings
        if settings.no_cache or self.run.run_id is None:
            return None  # --physpipe-no-cache writes nothing into the store
        from pytest_physpipe.store.layout import StoreLayout

        return StoreLayout(settings.store_dir).run_dir(self.run.run_id)

    # -- controller ---------------------------------------------------------------------------

    def _controller_budget(self) -> Budget:
        """Decided once, here; the workers and the controller's own session share it."""
        if self.run.budget is None:
            from pytest_physpipe.resources import detect_budget
            from pytest_physpipe.run import usage_errors

            settings = self.run.settings
            with usage_errors():
                self.run.budget = detect_budget(cpus=settings.cpus, gpus=settings.gpus)
        return self.run.budget

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        budget = self._controller_budget()
        node.workerinput["physpipe_run_id"] = self.run.run_id
        node.workerinput["physpipe_store_dir"] = str(self.run.settings.store_dir)
        node.workerinput["physpipe_budget"] = {"cpus": budget.cpus, "gpu_ids": list(budget.gpu_ids)}
        # Whole records only for a report: the summary reads a few fields of each.
        node.workerinput["physpipe_documents"] = self.run.settings.report is not None

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if not self.run.settings.dist:
            return None  # xdist's own --dist modes
        from pytest_physpipe.scheduling.policy import PhyspipeScheduling

        return PhyspipeScheduling(config, log, manifest_dir=self._manifest_dir())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        sent = getattr(node, "workeroutput", {}).get("physpipe_records")
        if sent:
            from pytest_physpipe.reported import merge_records

            merge_records(self.run.gathered, decode_records(sent))

    # -- worker -------------------------------------------------------------------------------

    def collected(self, session: pytest.Session) -> None:
        """After the run object planned the collection, before xdist reports it (a worker's
        ``pytest_collection_finish``): write the scheduling manifest for the controller."""
        manifest_dir = self._manifest_dir()
        if not self.is_worker or manifest_dir is None or not self.run.settings.dist:
            return
        from pytest_physpipe.errors import PhyspipeError
        from pytest_physpipe.store.layout import StoreLayout

        # Even without stages: an empty manifest tells the controller not to wait for one.
        physpipe = self.run.session
        try:
            physpipe.store.ensure()
            _manifest(physpipe, session.items).write(
                manifest_dir / StoreLayout.manifest_name(self.run.worker)
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

    # -- both ---------------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        physpipe = self.run.existing_session
        if self.is_worker:
            if physpipe is not None:
                config = session.config
                documents = bool(config.workerinput.get("physpipe_documents"))  # type: ignore[attr-defined]
                config.workeroutput["physpipe_records"] = encode_records(  # type: ignore[attr-defined]
                    physpipe.records.values(), documents=documents
                )
            return
        from pytest_physpipe.run import computed_any

        if not self.run.settings.no_cache and computed_any(self.run.records):
            from pytest_physpipe.scheduling.policy import record_costs

            record_costs(self.run.records, self.run.settings.store_dir)


def encode_records(records: Iterable[StageRecord], *, documents: bool) -> str:
    """A worker's records as one JSON text for its controller (execnet's pure-Python
    serializer takes ~0.2 ms per record as nested dicts): a row of the summary's fields each,
    or each record's whole JSON document when the run writes a report."""
    from pytest_physpipe.store.fileio import json_bytes

    if documents:
        # A record's fields hold plain JSON data (the store writes them into meta.json the
        # same way), so its ``__dict__`` is what ``model_dump(mode="json")`` gives, NaN kept.
        return json_bytes({"documents": [record.__dict__ for record in records]}).decode()
    from operator import attrgetter

    from pytest_physpipe.reported import SUMMARY_FIELDS

    row = attrgetter(*SUMMARY_FIELDS)
    return json_bytes({"rows": [row(record) for record in records]}).decode()


def decode_records(text: str) -> list[ReportedRecord]:
    """What :func:`encode_records` wrote, as the controller keeps it."""
    from pydantic_core import from_json

    from pytest_physpipe.reported import ReportedRecord

    try:
        sent = from_json(text)  # twice as fast as `json` on 2,000 documents
    except ValueError:  # what only `json` reads (a lone surrogate, deep nesting)
        sent = json.loads(text)
    if "documents" in sent:
        return [ReportedRecord.from_document(document) for document in sent["documents"]]
    return [ReportedRecord(row) for row in sent["rows"]]


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
            cached = physpipe.status(instance) == "cached"
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

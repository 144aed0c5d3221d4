"""Everything xdist-specific, registered only when xdist is active (STYLE habit 5).

Values decided once travel from the controller to the workers through ``workerinput`` (the run
id, so that slots and ``--physpipe-rebuild`` are shared by the whole run); workers send their
stage records back through ``workeroutput`` and the controller merges them into its summary
and JSON report.
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["XdistHooks"]


class XdistHooks:
    """xdist hooks for one run, on the controller and on every worker."""

    def __init__(self, config: pytest.Config, run_id: str | None) -> None:
        self.config = config
        self.run_id = run_id

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["physpipe_run_id"] = self.run_id

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        records = getattr(node, "workeroutput", {}).get("physpipe_records", [])
        if records:
            from pytest_physpipe.plugin import _session

            session = _session(self.config)
            assert session is not None
            session.merge(records)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is None:
            return
        from pytest_physpipe.plugin import _session

        physpipe = _session(session.config, create=False)
        if physpipe is not None:
            workeroutput["physpipe_records"] = [
                r.model_dump(mode="json") for r in physpipe.records.values()
            ]

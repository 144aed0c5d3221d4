"""Everything xdist-specific, registered only when xdist is active (STYLE habit 5).

Values decided once travel from the controller to the workers through ``workerinput`` (the run
id, so that slots and ``--physpipe-rebuild`` are shared by the whole run); workers send their
stage records back through ``workeroutput`` and the controller merges them into its summary
and JSON report.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_physpipe.session import PhyspipeSession

__all__ = ["XdistHooks"]


class XdistHooks:
    """xdist hooks for one run, on the controller and on every worker."""

    def __init__(self, session: PhyspipeSession) -> None:
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["physpipe_run_id"] = self.session.run_id

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        records = getattr(node, "workeroutput", {}).get("physpipe_records", [])
        self.session.merge(records)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["physpipe_records"] = [
                r.model_dump(mode="json") for r in self.session.records.values()
            ]

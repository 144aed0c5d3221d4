"""A stage record as the run's reports read it, without pydantic: what an xdist controller keeps.

The controller runs no stage. It folds the records its workers send into its terminal summary,
its ``--physpipe-report`` and the cost history, and for that needs neither the
:class:`~pytest_physpipe.records.StageRecord` model nor the validation of what its own workers
wrote: a :class:`ReportedRecord` holds the fields the summary and the cost history read and,
when the run writes a report, the record's JSON document as the worker dumped it.
:class:`Reported` is what both kinds of record offer to the code that reports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["SUMMARY_FIELDS", "Reported", "ReportedRecord", "merge_records"]

#: What the terminal summary and the cost history read of a record, in the order a worker
#: sends them when no report is written.
SUMMARY_FIELDS = (
    "key", "name", "param_id", "status", "duration_s", "codec", "worker", "job_id", "reason",
)  # fmt: skip


class Reported(Protocol):
    """The fields of a record that the terminal summary, the graph and the cost history read."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def param_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def codec(self) -> str | None: ...
    @property
    def worker(self) -> str | None: ...
    @property
    def job_id(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def label(self) -> str: ...


class ReportedRecord:
    """One record a worker sent: its summary fields, and its whole document when a report
    is written (``None`` otherwise)."""

    __slots__ = (*SUMMARY_FIELDS, "document")

    key: str
    name: str
    param_id: str | None
    status: str
    duration_s: float
    codec: str | None
    worker: str | None
    job_id: str | None
    reason: str | None

    def __init__(self, row: Sequence[Any], document: dict[str, Any] | None = None) -> None:
        """``row``: the values of :data:`SUMMARY_FIELDS`, in that order."""
        (
            self.key,
            self.name,
            self.param_id,
            self.status,
            self.duration_s,
            self.codec,
            self.worker,
            self.job_id,
            self.reason,
        ) = row
        self.document = document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> ReportedRecord:
        """A record from its whole JSON document (a ``StageRecord`` dumped in JSON mode)."""
        get = document.get
        row = (
            document["key"],
            document["name"],
            get("param_id"),
            get("status", "computed"),
            float(get("duration_s", 0.0)),
            get("codec"),
            get("worker"),
            get("job_id"),
            get("reason"),
        )
        return cls(row, document)

    @property
    def label(self) -> str:
        """``name[param-id]``, as the test ids read."""
        return f"{self.name}[{self.param_id}]" if self.param_id else self.name

    def __repr__(self) -> str:
        return f"ReportedRecord({self.label!r}, {self.key[:12]!r}, {self.status!r})"


#: Which record of an instance an xdist controller keeps when two workers both used it.
_RANK = {"failed": 4, "computed": 3, "loaded-from-job": 3, "hit": 2, "skipped": 1}

_R = TypeVar("_R", bound=Reported)


def merge_records(into: dict[str, _R], records: Iterable[_R]) -> None:
    """Fold a worker's records into the controller's view: a failure or a compute wins over
    a hit (another worker may have computed what this one then served)."""
    for record in records:
        old = into.get(record.key)
        if old is None or _RANK[record.status] > _RANK[old.status]:
            into[record.key] = record

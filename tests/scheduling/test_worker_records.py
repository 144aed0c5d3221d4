"""How stage records travel from xdist workers to their controller, and what it does with them.

A worker sends the fields the terminal summary and the cost history read, or each record's
whole JSON document when the run writes a ``--physpipe-report``; the controller keeps them as
:class:`~pytest_physpipe.reported.ReportedRecord` without the pydantic record model.
"""

from __future__ import annotations

import json
import math

import pytest
from physpipe_testing import CallLog

from pytest_physpipe.records import StageRecord
from pytest_physpipe.report import format_summary, summary_counts
from pytest_physpipe.reported import ReportedRecord, merge_records
from pytest_physpipe.scheduling.hooks import decode_records, encode_records


def _record(key: str, status: str = "computed", **fields: object) -> StageRecord:
    return StageRecord.model_validate(
        {
            "key": key,
            "name": "heat",
            "param_id": "alpha=0.1",
            "status": status,
            "duration_s": 1.5,
            "worker": "gw1",
            "reason": "new",
            "config": {"alpha": 0.1},
            "metrics": {"energy": 2.0},
            **fields,
        }
    )


def test_rows_carry_what_the_summary_reads_and_no_more() -> None:
    records = [_record("a" * 32), _record("b" * 32, "hit", codec="pickle", param_id=None)]
    text = encode_records(records, documents=False)
    assert "config" not in text  # the rest stays with the worker
    assert "energy" not in text
    back = decode_records(text)
    assert [r.document for r in back] == [None, None]
    for sent, got in zip(records, back, strict=True):
        assert (got.key, got.name, got.param_id, got.status) == (
            sent.key,
            sent.name,
            sent.param_id,
            sent.status,
        )
        assert (got.duration_s, got.codec, got.worker, got.reason, got.job_id) == (
            sent.duration_s,
            sent.codec,
            sent.worker,
            sent.reason,
            sent.job_id,
        )
        assert got.label == sent.label
    # The summary reads the same from either kind of record.
    as_sent = {r.key: r for r in records}
    as_got = {r.key: r for r in back}
    assert summary_counts(as_got) == summary_counts(as_sent)
    assert format_summary(as_got, 1024, verbose=True) == format_summary(as_sent, 1024, True)


def test_documents_are_the_records_dumped_in_json_mode() -> None:
    record = _record("c" * 32, metrics={"energy": math.nan, "ratio": math.inf})
    (back,) = decode_records(encode_records([record], documents=True))
    document = back.document
    assert document is not None
    expected = record.model_dump(mode="json")
    assert math.isnan(document["metrics"].pop("energy"))
    assert math.isnan(expected["metrics"].pop("energy"))
    assert document == expected
    assert (back.key, back.status, back.label) == (record.key, "computed", record.label)


def test_a_compute_or_a_failure_wins_over_a_hit() -> None:
    def sent(key: str, status: str, worker: str) -> ReportedRecord:
        return ReportedRecord((key, "s", None, status, 0.0, None, worker, None, None))

    merged: dict[str, ReportedRecord] = {}
    merge_records(merged, [sent("k1", "hit", "gw0"), sent("k2", "failed", "gw0")])
    merge_records(merged, [sent("k1", "computed", "gw1"), sent("k2", "hit", "gw1")])
    merge_records(merged, [sent("k1", "hit", "gw2")])
    assert {k: (r.status, r.worker) for k, r in merged.items()} == {
        "k1": ("computed", "gw1"),
        "k2": ("failed", "gw0"),
    }


METRICS = """
import math
from pytest_physpipe import StageConfig, stage, sweep

class PointConfig(StageConfig):
    i: int = 0

@stage(params=sweep(PointConfig, i=list(range(6))))
def point(config: PointConfig, ctx):
    ctx.metric("ratio", math.nan if config.i == 0 else 1.0 / config.i)
    return config.i

def test_point(point):
    assert point >= 0

def test_point_again(point):
    assert point >= 0
"""

# The physpipe modules each process imported, noted at its very end.
PROBE = """
import sys

def pytest_unconfigure(config):
    who = getattr(config, "workerinput", {}).get("workerid", "controller")
    names = sorted(n for n in sys.modules if n.startswith("pytest_physpipe"))
    with open(f"{who}-modules.txt", "w") as handle:
        handle.write("\\n".join(names))
"""


def test_the_controller_sums_up_without_the_record_model(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makepyfile(test_points=METRICS, probe=PROBE)
    args = ("-n", "2", "-v", "-p", "probe")
    result = pytester.runpytest_subprocess(*args, timeout=120)
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(
        ["*stage instances: 0 hit, 6 computed, 0 failed*", "*computed*point[[]i=0[]]*[[]gw*(new)"]
    )
    imported = (pytester.path / "controller-modules.txt").read_text().split()
    assert "pytest_physpipe.reported" in imported
    assert "pytest_physpipe.records" not in imported
    # Each instance once, whichever worker ran its tests: the summary counts keys.
    again = pytester.runpytest_subprocess(*args, "--physpipe-report", "report.json", timeout=120)
    again.assert_outcomes(passed=12)
    again.stdout.fnmatch_lines(["*stage instances: 6 hit, 0 computed, 0 failed*"])
    assert "pytest_physpipe.records" not in (pytester.path / "controller-modules.txt").read_text()
    # Nobody sees a worker's terminal: it sums nothing up (nor imports what that takes).
    for worker in ("gw0", "gw1"):
        assert "pytest_physpipe.report" not in (pytester.path / f"{worker}-modules.txt").read_text()
    # The report holds whole records, a NaN metric included (it used to fail the merge).
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["summary"]["hit"] == 6
    stages = sorted(report["stages"], key=lambda s: s["config"]["i"])
    assert [s["config"] for s in stages] == [{"i": i} for i in range(6)]
    assert math.isnan(stages[0]["metrics"]["ratio"])
    assert stages[2]["metrics"] == {"ratio": 0.5}
    assert all(s["manifest"]["stage"] == "point" for s in stages)
    assert all(s["versions"] for s in stages)
    assert {str(s["worker"])[:2] for s in stages} == {"gw"}

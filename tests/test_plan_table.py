"""The ``--physpipe-plan`` table, against a cell-by-cell reference of what it shows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_physpipe.models import Resources
from pytest_physpipe.report import format_plan


@dataclass
class _Spec:
    resources: Resources


@dataclass
class _Instance:
    """What the table reads of a stage instance."""

    key: str
    label: str
    slow: bool
    spec: _Spec
    upstream: dict[str, str] = field(default_factory=dict)


def reference_table(
    instances: list[Any],
    statuses: dict[str, str],
    backend: str,
    reasons: dict[str, str],
    *,
    after: bool,
    notes: dict[str, str],
    runs_on: str | None,
) -> list[str]:
    """The table built a row and a cell at a time (how it read before it was made fast)."""
    labels = {i.key: i.label for i in instances}
    header: tuple[str, ...] = ("stage", "key", "status", "resources", "runs on")
    rows: list[tuple[str, ...]] = [header + (("after",) if after else ()) + ("why",)]
    for instance in instances:
        res = instance.spec.resources
        status = statuses.get(instance.key, "missing")
        note = notes.get(instance.key)
        slow = instance.slow
        place = (backend if slow and backend != "local" else "local") + (" (slow)" if slow else "")
        if runs_on is not None and slow and backend != "local":
            place = runs_on
        row: tuple[str, ...] = (
            instance.label,
            instance.key[:16],
            f"{status} ({note})" if note else status,
            f"cpu={res.cpu} gpu={res.gpu} mem={res.mem} time={res.walltime}",
            place,
        )
        if after:
            upstream = [labels.get(k, k[:12]) for k in instance.upstream.values()]
            row += (", ".join(upstream) or "-",)
        row += (reasons.get(instance.key, "") if status == "missing" else "",)
        rows.append(row)
    if not any(row[-1] for row in rows[1:]):
        rows = [row[:-1] for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    counts = Counter(r[2].split(" (", 1)[0] for r in rows[1:])
    missing, rebuild = counts["missing"], counts["rebuild"]
    line = (
        f"{len(rows) - 1} stage instance(s): {len(rows) - 1 - missing - rebuild} cached, "
        f"{missing} missing"
    )
    if rebuild:
        line += f", {rebuild} to rebuild"
    lines.append(line)
    return lines


_RESOURCES = [Resources(), Resources(cpu=4, mem="64G", walltime="2:00:00"), Resources(gpu=1)]
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
_keys = st.text("0123456789abcdef", min_size=32, max_size=32)


@st.composite
def _plans(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(_keys, max_size=8, unique=True))
    instances = [
        _Instance(
            key=key,
            label=draw(_text),
            slow=draw(st.booleans()),
            spec=_Spec(draw(st.sampled_from(_RESOURCES))),
            upstream={
                draw(_text): draw(st.sampled_from(keys) | _keys)
                for _ in range(draw(st.integers(0, 2)))
            },
        )
        for key in keys
    ]
    statuses = st.sampled_from(["cached", "missing", "rebuild", "uncached"])
    some_keys = st.sampled_from(keys) if keys else st.nothing()
    return {
        "instances": instances,
        "statuses": draw(st.dictionaries(some_keys, statuses)),
        "backend": draw(st.sampled_from(["local", "slurm", "pbs"])),
        "reasons": draw(st.dictionaries(some_keys, _text)),
        "after": draw(st.booleans()),
        "notes": draw(st.dictionaries(some_keys, _text)),
        "runs_on": draw(st.none() | _text),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_plans())
def test_the_table_shows_what_the_reference_shows(plan: dict[str, Any]) -> None:
    args = (plan["instances"], plan["statuses"], plan["backend"], plan["reasons"])
    options = {k: plan[k] for k in ("after", "notes", "runs_on")}
    assert format_plan(*args, **options) == reference_table(*args, **options)


def test_a_table_of_nothing_is_its_header_and_count() -> None:
    assert format_plan([], {}, "local") == [
        "stage  key  status  resources  runs on",
        "0 stage instance(s): 0 cached, 0 missing",
    ]

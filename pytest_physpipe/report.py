"""What physpipe tells the user: the plan, the DAG, the JSON report and the terminal summary."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.units import human_size, human_time

if TYPE_CHECKING:  # an xdist controller reports without planning anything
    from pytest_physpipe.plan import StageInstance
    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.reported import Reported

__all__ = ["format_graph", "format_plan", "format_summary", "write_graph", "write_report"]


def where(instance: StageInstance, backend: str) -> str:
    return backend if instance.slow and backend != "local" else "local"


def _edges(instance: StageInstance, nodes: dict[str, StageInstance]) -> list[tuple[str, bool]]:
    """(upstream key, whether it is gathered) for every edge into ``instance`` in ``nodes``."""
    edges = [(key, False) for key in instance.upstream.values() if key in nodes]
    edges += [(r.key, True) for refs in instance.gathered.values() for r in refs if r.key in nodes]
    return edges


_KEY, _LABEL, _SPEC, _SLOW = (attrgetter(name) for name in ("key", "label", "spec", "slow"))
_SHOWN = itemgetter(slice(16))  # the key as the table shows it


def format_plan(
    instances: Iterable[StageInstance],
    statuses: dict[str, str],
    backend: str,
    reasons: dict[str, str] | None = None,
    *,
    after: bool = False,
    notes: Mapping[str, str] | None = None,
    runs_on: str | None = None,
) -> list[str]:
    """The ``--physpipe-plan`` table: one line per stage instance, upstream first; a missing
    instance says why (``reasons``: key -> reason).

    For a cluster campaign (see ``cluster/jobs.py``): ``after`` adds the column of upstream
    instances each one waits for, ``notes`` adds to an instance's status (a job in flight),
    and ``runs_on`` replaces the "where" of slow instances (the backend cannot submit).
    """
    instances = list(instances)
    notes = notes or {}
    reasons = reasons or {}
    # Built a column at a time: a plan of ten thousand instances is ten thousand lines, so
    # nothing here runs once per cell but what C does (a padding, a join, a map over the
    # instances).
    keys = list(map(_KEY, instances))
    status_of = list(map(statuses.get, keys, repeat("missing")))
    counts = Counter(status_of)
    labels = list(map(_LABEL, instances))
    shown = list(map(_SHOWN, keys))
    status_cells = status_of
    if notes:
        status_cells = [
            f"{status} ({notes[key]})" if notes.get(key) else status
            for key, status in zip(keys, status_of, strict=True)
        ]
    stage_specs = list(map(_SPEC, instances))
    described: dict[int, str] = {}  # per stage: one plan lists a sweep's many times
    for spec in dict(zip(map(id, stage_specs), stage_specs, strict=True)).values():
        res = spec.resources
        described[id(spec)] = f"cpu={res.cpu} gpu={res.gpu} mem={res.mem} time={res.walltime}"
    resources = list(map(described.__getitem__, map(id, stage_specs)))
    places = {False: "local", True: "local (slow)"}
    if backend != "local":
        places[True] = runs_on if runs_on is not None else f"{backend} (slow)"
    where_cells = list(map(places.__getitem__, map(_SLOW, instances)))
    whys = [""] * len(keys)
    if counts["missing"]:
        whys = [
            reasons.get(key, "") if status == "missing" else ""
            for key, status in zip(keys, status_of, strict=True)
        ]
    columns = [
        ["stage", *labels],
        ["key", *shown],
        ["status", *status_cells],
        ["resources", *resources],
        ["runs on", *where_cells],
    ]
    if after:
        by_key = {instance.key: instance.label for instance in instances}
        column = ["after"]
        for instance in instances:
            upstream = [by_key.get(k, k[:12]) for k in instance.upstream.values()]
            column.append(", ".join(upstream) or "-")
        columns.append(column)
    if any(whys):
        columns.append(["why", *whys])
    lines = _table_lines(columns)
    missing, rebuild = counts["missing"], counts["rebuild"]
    total = len(instances)
    summary = f"{total} stage instance(s): {total - missing - rebuild} cached, {missing} missing"
    if rebuild:
        summary += f", {rebuild} to rebuild"
    lines.append(summary)
    return lines


def _table_lines(columns: list[list[str]]) -> list[str]:
    """The lines of a table given by columns (header first), each cell padded to its column's
    width, two spaces between columns, no trailing spaces."""
    widths = [max(map(len, column)) for column in columns]
    # A line of the plan is its label and key, padded, and the rest of its cells (status,
    # resources, where it runs ...), which most lines share with many others (a sweep's
    # thousand cached instances of one stage): that rest is padded, joined and stripped once
    # per distinct combination, so a line costs two paddings and one format.
    label_width, key_width, rest_widths = widths[0], widths[1], widths[2:-1]
    rests: dict[tuple[str, ...], str] = {}
    lines = []
    for label, shown_key, cells in zip(
        columns[0], columns[1], zip(*columns[2:], strict=True), strict=True
    ):
        rest = rests.get(cells)
        if rest is None:
            padded = [cell.ljust(width) for cell, width in zip(cells, rest_widths, strict=False)]
            rest = rests[cells] = "  ".join([*padded, cells[-1]]).rstrip()
        if rest:  # not blank: the line ends where its rest does
            lines.append(f"{label.ljust(label_width)}  {shown_key.ljust(key_width)}  {rest}")
        else:
            lines.append(f"{label.ljust(label_width)}  {shown_key.ljust(key_width)}".rstrip())
    return lines


def _status(key: str, records: Mapping[str, Reported], statuses: dict[str, str]) -> str:
    record = records.get(key)
    return record.status if record is not None else statuses.get(key, "missing")


def write_graph(
    path: Path,
    instances: list[StageInstance],
    records: Mapping[str, Reported],
    statuses: dict[str, str],
) -> None:
    """The DAG as Graphviz (``.dot``) or Mermaid (``.mmd``), nodes labelled with status."""
    text = format_graph(instances, records, statuses, mermaid=path.suffix != ".dot")
    write_text_atomic(path, text, make_parents=True)


def format_graph(
    instances: list[StageInstance],
    records: Mapping[str, Reported],
    statuses: dict[str, str],
    *,
    mermaid: bool = False,
) -> str:
    """The DAG's text: Graphviz DOT, or Mermaid; one node per instance, coloured by status."""
    colors = {
        "hit": "palegreen",
        "cached": "palegreen",
        "rebuild": "khaki",
        "computed": "lightskyblue",
        "loaded-from-job": "plum",
        "failed": "salmon",
        "missing": "lightgrey",
        "skipped": "lightgrey",
    }
    nodes = {instance.key: instance for instance in instances}
    if not mermaid:
        lines = ["digraph physpipe {", "  rankdir=LR;", "  node [shape=box, style=filled];"]
        for key, instance in nodes.items():
            status = _status(key, records, statuses)
            label = f"{instance.label}\\n{key[:12]}\\n{status}"
            lines.append(f'  "{key}" [label="{label}", fillcolor={colors.get(status, "white")}];')
        for key, instance in nodes.items():
            for upstream, gathered in _edges(instance, nodes):
                style = " [style=dashed]" if gathered else ""
                lines.append(f'  "{upstream}" -> "{key}"{style};')
        lines.append("}")
    else:
        lines = ["graph LR"]
        for key, instance in nodes.items():
            status = _status(key, records, statuses)
            css = status.replace("-", "_")
            lines.append(f'  n{key[:16]}["{instance.label}<br/>{key[:12]}<br/>{status}"]:::{css}')
        for key, instance in nodes.items():
            for upstream, gathered in _edges(instance, nodes):
                arrow = "-.->" if gathered else "-->"
                lines.append(f"  n{upstream[:16]} {arrow} n{key[:16]}")
        for status, color in colors.items():
            lines.append(f"  classDef {status.replace('-', '_')} fill:{color}")
    return "\n".join(lines) + "\n"


def write_report(path: Path, run_id: str, records: Mapping[str, Reported]) -> None:
    """The ``--physpipe-report`` JSON: one record per stage instance used."""
    from pytest_physpipe.reported import ReportedRecord

    def dumped(record: Reported) -> dict[str, Any]:
        if isinstance(record, ReportedRecord):  # sent by an xdist worker, already dumped
            if record.document is None:
                raise ValueError(f"{record!r} came without its document")
            return record.document
        return cast("StageRecord", record).model_dump(mode="json")  # this process's own

    document: dict[str, Any] = {
        "run_id": run_id,
        "summary": summary_counts(records),
        "stages": [dumped(r) for r in sorted(records.values(), key=lambda r: (r.name, r.key))],
    }
    write_text_atomic(
        path, json.dumps(document, indent=2, allow_nan=True) + "\n", make_parents=True
    )


def summary_counts(records: Mapping[str, Reported]) -> dict[str, Any]:
    counts = {"hit": 0, "computed": 0, "loaded-from-job": 0, "failed": 0, "skipped": 0}
    spent = saved = 0.0
    for record in records.values():
        counts[record.status] += 1
        if record.status in ("computed", "loaded-from-job", "failed"):
            spent += record.duration_s
        elif record.status == "hit":
            saved += record.duration_s
    return {**counts, "compute_s": spent, "saved_s": saved}


def format_summary(
    records: Mapping[str, Reported], store_size: int | None, verbose: bool
) -> list[str]:
    """The terminal summary's ``physpipe`` section."""
    counts = summary_counts(records)
    parts = [f"{counts['hit']} hit", f"{counts['computed']} computed"]
    if counts["loaded-from-job"]:
        parts.append(f"{counts['loaded-from-job']} loaded from jobs")
    parts.append(f"{counts['failed']} failed")
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} skipped")
    spent, saved = human_time(counts["compute_s"]), human_time(counts["saved_s"])
    line = f"stage instances: {', '.join(parts)}; compute {spent}, saved {saved}"
    if store_size is not None:
        line += f"; store {human_size(store_size)}"
    lines = [line]
    pickled = Counter(r.name for r in records.values() if r.codec == "pickle")
    if pickled:
        # Pickles run code when loaded, break when a class moves, and are often no faster to
        # load than to recompute: worth knowing, and worth a codec.
        stages = ", ".join(
            f"{name} ({count})" if count > 1 else name for name, count in sorted(pickled.items())
        )
        lines.append(
            f"stored as pickles: {sum(pickled.values())} instance(s) of {stages} (no codec for "
            "their types: they break when a class moves; pass codec= or register one)"
        )
    if verbose:
        for record in sorted(records.values(), key=lambda r: (r.name, r.param_id or "")):
            extra = f" job {record.job_id}" if record.job_id else ""
            worker = f" [{record.worker}]" if record.worker else ""
            took = human_time(record.duration_s)
            why = f"  ({record.reason})" if record.reason else ""
            lines.append(
                f"  {record.status:<9} {record.label:<40} {record.key[:12]}  {took}{worker}{extra}"
                f"{why}"
            )
    return lines

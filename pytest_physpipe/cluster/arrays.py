"""Job arrays: which stage instances go out together, and what each array waits for.

A sweep of N points costs one ``sbatch --array`` instead of N ``sbatch`` calls. The instances
of one stage at one *dependency level* (0: no slow upstream being submitted; else one more than
its deepest slow upstream) form a group, submitted as arrays of at most the scheduler's
``MaxArraySize`` tasks.

**Packing.** A task may compute several instances of its group one after another in one
process (:func:`pack`), so that a short stage does not pay a whole job start (a Python start,
the imports, the scheduler's launch) per instance. How many: as many as their declared
walltimes fit in the pack budget (ini ``physpipe_pack_walltime``); the task asks for the sum of
its members' walltimes. A stage whose walltime is more than half the budget is never packed.

Dependencies stay per task where they can:

- every task ``i`` of the group waits for exactly task ``i`` of one upstream array (a sweep and
  its dependents, packed alike): ``aftercorr`` on that array, so each dependent task starts as
  soon as its own upstream task is done;
- anything else: ``afterok`` on every upstream job or array the group needs, which is correct
  but makes the whole group wait for the slowest of them.

The group is ordered, and packed, so that the first case is found whenever it exists. Pure
functions, no scheduler calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from pytest_physpipe.plan import StageInstance

__all__ = [
    "array_dependency",
    "chunks",
    "group_by_level",
    "order_for_correspondence",
    "pack",
    "pack_size",
    "split_task_id",
    "task_id",
    "walltime_text",
]

Task = Sequence[StageInstance]

_PBS_TASK = re.compile(r"^(\d+)\[(\d+)\](.*)$")


def split_task_id(job_id: str) -> tuple[str, int | None]:
    """The array and task index of an array task's id; ``(job_id, None)`` for anything else.

    Slurm: ``"123_4"`` -> ``("123", 4)``; ``"123_[5-9]"`` (squeue's pending tasks) ->
    ``("123", None)``. PBS: ``"123[4].server"`` -> ``("123[].server", 4)``.
    """
    bracket = _PBS_TASK.match(job_id)
    if bracket:
        return (f"{bracket.group(1)}[]{bracket.group(3)}", int(bracket.group(2)))
    base, sep, task = job_id.partition("_")
    if not sep:
        return (job_id, None)
    return (base, int(task) if task.isdigit() else None)


def group_by_level(wanted: Sequence[StageInstance]) -> list[list[StageInstance]]:
    """``wanted`` (upstream first) as groups of one stage at one level, lower levels first."""
    keys = {instance.key for instance in wanted}
    level: dict[str, int] = {}
    groups: dict[tuple[int, str], list[StageInstance]] = {}
    for instance in wanted:
        above = [level[k] for k in instance.upstream.values() if k in keys and k in level]
        level[instance.key] = 1 + max(above) if above else 0
        groups.setdefault((level[instance.key], instance.name), []).append(instance)
    return [groups[slot] for slot in sorted(groups, key=lambda s: s[0])]


def _upstream_task(instance: StageInstance, job_ids: Mapping[str, str]) -> tuple[str, int] | None:
    """The one upstream array task ``instance`` waits for, if it waits for exactly one job and
    that job is an array task (packed instances share their task's id)."""
    upstream = {job_ids[k] for k in instance.upstream.values() if k in job_ids}
    if len(upstream) == 1:
        base, task = split_task_id(upstream.pop())
        if task is not None:
            return (base, task)
    return None


def order_for_correspondence(
    members: Sequence[StageInstance], job_ids: Mapping[str, str]
) -> list[StageInstance]:
    """``members`` sorted by the task index of their upstream array task, where they have
    exactly one upstream job and it is an array task (so ``aftercorr`` can line them up)."""

    def position(instance: StageInstance) -> tuple[tuple[int, str], int]:
        found = _upstream_task(instance, job_ids)
        return (_numeric(found[0]), found[1]) if found else ((-1, ""), -1)

    return sorted(members, key=position)


def pack_size(instance: StageInstance, budget_s: int) -> int:
    """How many instances like ``instance`` one task runs: as many as their walltimes fit in
    ``budget_s`` (1 when the budget is 0, or smaller than two walltimes)."""
    walltime = instance.spec.resources.walltime_s
    if budget_s <= 0 or walltime <= 0:
        return 1
    return max(1, budget_s // walltime)


def pack(
    members: Sequence[StageInstance], job_ids: Mapping[str, str], size: int
) -> list[list[StageInstance]]:
    """``members`` (one stage, one level, in :func:`order_for_correspondence` order) as the
    tasks of an array, each of at most ``size`` instances.

    When every member waits for one upstream array task, members of the same upstream task go
    together (cut to ``size``), so that the tasks can line up with the upstream's (``aftercorr``).
    Otherwise the members are spread evenly over as few tasks as ``size`` allows.
    """
    size = max(1, size)
    if size == 1 or not members:
        return [[m] for m in members]
    positions = [_upstream_task(m, job_ids) for m in members]
    if all(p is not None for p in positions):
        tasks: list[list[StageInstance]] = []
        last: tuple[str, int] | None = None
        for member, position in zip(members, positions, strict=True):
            if position != last or len(tasks[-1]) >= size:
                tasks.append([])
                last = position
            tasks[-1].append(member)
        return tasks
    count = -(-len(members) // size)
    base, extra = divmod(len(members), count)
    tasks = []
    start = 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        tasks.append(list(members[start:end]))
        start = end
    return tasks


def array_dependency(
    tasks: Sequence[Task], job_ids: Mapping[str, str]
) -> tuple[str, tuple[str, ...]]:
    """``(kind, ids)`` for an array whose task ``i`` computes the instances ``tasks[i]``."""
    per_task = [
        {job_ids[k] for m in task for k in m.upstream.values() if k in job_ids} for task in tasks
    ]
    if not any(per_task):
        return ("afterok", ())
    if all(len(deps) == 1 for deps in per_task):
        firsts = [split_task_id(next(iter(deps))) for deps in per_task]
        bases = {base for base, _ in firsts}
        if len(bases) == 1 and [task for _, task in firsts] == list(range(len(firsts))):
            return ("aftercorr", (bases.pop(),))
    whole = {split_task_id(dep)[0] for deps in per_task for dep in deps}
    return ("afterok", tuple(sorted(whole, key=_numeric)))


def task_id(backend: object, array_id: str, index: int) -> str:
    """The scheduler's id of task ``index`` of job array ``array_id``: the backend's
    ``task_id`` where it has one (PBS), else Slurm's ``<array>_<index>``."""
    name: Callable[[str, int], str] | None = getattr(backend, "task_id", None)
    return name(array_id, index) if name is not None else f"{array_id}_{index}"


def walltime_text(seconds: int) -> str:
    """Seconds as a ``Resources.walltime`` (``[D-]H:MM:SS``), for a packed task's request."""
    minutes, secs = divmod(max(seconds, 1), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def chunks(members: Sequence[StageInstance], size: int) -> list[list[StageInstance]]:
    """``members`` in consecutive runs of at most ``size``."""
    size = max(1, size)
    return [list(members[i : i + size]) for i in range(0, len(members), size)]


def _numeric(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)

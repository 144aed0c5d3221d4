"""Job arrays: which stage instances go out together, and what each array waits for.

A sweep of N points costs one ``sbatch --array`` instead of N ``sbatch`` calls. The instances
of one stage at one *dependency level* (0: no slow upstream being submitted; else one more than
its deepest slow upstream) form a group, submitted as arrays of at most the scheduler's
``MaxArraySize`` tasks. Dependencies stay per task where they can:

- every task ``i`` of the group waits for exactly task ``i`` of one upstream array (a sweep and
  its dependents): ``aftercorr`` on that array, so each dependent starts as soon as its own
  upstream point is done;
- anything else: ``afterok`` on every upstream job or array the group needs, which is correct
  but makes the whole group wait for the slowest of them.

The group is ordered so that the first case is found whenever it exists. Pure functions, no
scheduler calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_physpipe.plan import StageInstance

__all__ = [
    "array_dependency",
    "chunks",
    "group_by_level",
    "order_for_correspondence",
    "split_task_id",
]


def split_task_id(job_id: str) -> tuple[str, int | None]:
    """``"123_4"`` -> ``("123", 4)``; ``"123_[5-9]"`` (squeue's pending tasks) ->
    ``("123", None)``; a plain job id -> ``(id, None)``."""
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


def order_for_correspondence(
    members: Sequence[StageInstance], job_ids: Mapping[str, str]
) -> list[StageInstance]:
    """``members`` sorted by the task index of their upstream array task, where they have
    exactly one upstream job and it is an array task (so ``aftercorr`` can line them up)."""

    def position(instance: StageInstance) -> tuple[str, int]:
        upstream = [job_ids[k] for k in instance.upstream.values() if k in job_ids]
        if len(upstream) == 1:
            base, task = split_task_id(upstream[0])
            if task is not None:
                return (base, task)
        return ("", -1)

    return sorted(members, key=position)


def array_dependency(
    members: Sequence[StageInstance], job_ids: Mapping[str, str]
) -> tuple[str, tuple[str, ...]]:
    """``(kind, ids)`` for an array whose task ``i`` computes ``members[i]``."""
    per_task = [[job_ids[k] for k in m.upstream.values() if k in job_ids] for m in members]
    if not any(per_task):
        return ("afterok", ())
    if all(len(deps) == 1 for deps in per_task):
        bases = {split_task_id(deps[0])[0] for deps in per_task}
        tasks = [split_task_id(deps[0])[1] for deps in per_task]
        if len(bases) == 1 and tasks == list(range(len(tasks))):
            return ("aftercorr", (bases.pop(),))
    whole = {split_task_id(dep)[0] for deps in per_task for dep in deps}
    return ("afterok", tuple(sorted(whole, key=_numeric)))


def chunks(members: Sequence[StageInstance], size: int) -> list[list[StageInstance]]:
    """``members`` in consecutive runs of at most ``size``."""
    size = max(1, size)
    return [list(members[i : i + size]) for i in range(0, len(members), size)]


def _numeric(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)

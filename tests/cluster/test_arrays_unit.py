"""Which instances go out together as job arrays, how they are packed into tasks, and what
each array waits for (pure)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from pytest_physpipe.cluster.arrays import (
    array_dependency,
    chunks,
    group_by_level,
    order_for_correspondence,
    pack,
    pack_size,
    split_task_id,
    task_id,
    walltime_text,
)
from pytest_physpipe.models import Resources


def node(key: str, name: str, walltime: str = "1:00", **upstream: str) -> Any:
    spec = SimpleNamespace(resources=Resources(walltime=walltime))
    return cast(Any, SimpleNamespace(key=key, name=name, upstream=upstream, spec=spec))


def one_each(members: list[Any]) -> list[list[Any]]:
    return [[m] for m in members]


def test_a_sweep_and_its_dependents_are_two_groups_with_per_task_dependencies() -> None:
    points = [node(f"p{i}", "point") for i in range(3)]
    dependents = [node(f"d{i}", "dependent", point=f"p{i}") for i in range(3)]
    wanted = [x for pair in zip(points, dependents, strict=True) for x in pair]
    groups = group_by_level(wanted)
    assert [[n.key for n in g] for g in groups] == [["p0", "p1", "p2"], ["d0", "d1", "d2"]]
    job_ids = {f"p{i}": f"100_{i}" for i in range(3)}
    # The dependents listed in another order still line up with their points' tasks.
    ordered = order_for_correspondence(list(reversed(dependents)), job_ids)
    assert [n.key for n in ordered] == ["d0", "d1", "d2"]
    assert array_dependency(one_each(ordered), job_ids) == ("aftercorr", ("100",))


def test_anything_else_waits_for_every_upstream_job() -> None:
    job_ids = {"a": "7", "b0": "100_0", "b1": "100_1", "c": "101_0"}
    two_inputs = [node("x0", "x", a="a", b="b0"), node("x1", "x", a="a", b="b1")]
    assert array_dependency(one_each(two_inputs), job_ids) == ("afterok", ("7", "100"))
    shifted = [node("y0", "y", b="b1"), node("y1", "y", b="b0")]  # task 0 needs task 1
    assert array_dependency(one_each(shifted), job_ids) == ("afterok", ("100",))
    assert array_dependency([[node("z", "z")]], job_ids) == ("afterok", ())


def test_levels_put_a_stage_below_its_deepest_upstream() -> None:
    a = node("a", "a")
    b = node("b", "b", a="a")
    c = node("c", "c", a="a", b="b")
    c2 = node("c2", "c", a="a")  # the same stage, one level up: another array
    groups = group_by_level([a, b, c, c2])
    assert [[n.key for n in g] for g in groups] == [["a"], ["b"], ["c2"], ["c"]]


@given(st.integers(min_value=0, max_value=50), st.integers(min_value=1, max_value=7))
def test_chunks_keep_order_and_size(n: int, size: int) -> None:
    members = [node(str(i), "s") for i in range(n)]
    parts = chunks(members, size)
    assert [m for part in parts for m in part] == members
    assert all(1 <= len(part) <= size for part in parts)


def test_task_ids() -> None:
    assert split_task_id("123_4") == ("123", 4)
    assert split_task_id("123") == ("123", None)
    assert split_task_id("123_[0-9]") == ("123", None)  # squeue's pending tasks
    # PBS Pro and Torque: subjob 4 of array 123[].server
    assert split_task_id("123[4].server") == ("123[].server", 4)
    assert split_task_id("123[].server") == ("123[].server", None)
    assert task_id(object(), "123", 4) == "123_4"
    assert task_id(SimpleNamespace(task_id=lambda a, i: f"{a}#{i}"), "9", 1) == "9#1"


# -- packing --------------------------------------------------------------------------------------


def test_the_pack_size_is_how_many_walltimes_fit_in_the_budget() -> None:
    assert pack_size(node("a", "s", walltime="1:00"), 300) == 5
    assert pack_size(node("a", "s", walltime="2:31"), 300) == 1  # more than half: never
    assert pack_size(node("a", "s", walltime="1:00:00"), 300) == 1
    assert pack_size(node("a", "s", walltime="1:00"), 0) == 1  # packing off


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=9))
def test_packing_keeps_every_instance_once_in_order_and_balanced(n: int, size: int) -> None:
    members = [node(f"p{i}", "point") for i in range(n)]
    tasks = pack(members, {}, size)
    assert [m for task in tasks for m in task] == members
    assert all(1 <= len(task) <= size for task in tasks)
    assert len(tasks) == -(-n // size)
    if tasks:
        assert max(map(len, tasks)) - min(map(len, tasks)) <= 1


def test_dependents_are_packed_like_their_upstream_tasks_and_keep_aftercorr() -> None:
    # Six points packed three per task: tasks 100_0 and 100_1.
    job_ids = {f"p{i}": f"100_{i // 3}" for i in range(6)}
    dependents = [node(f"d{i}", "dependent", point=f"p{i}") for i in reversed(range(6))]
    ordered = order_for_correspondence(dependents, job_ids)
    tasks = pack(ordered, job_ids, 3)
    keys = [sorted(m.key for m in task) for task in tasks]
    assert keys == [["d0", "d1", "d2"], ["d3", "d4", "d5"]]
    assert array_dependency(tasks, job_ids) == ("aftercorr", ("100",))
    # Packed more tightly than their upstream: cut at the upstream's task boundaries.
    assert [len(t) for t in pack(ordered, job_ids, 2)] == [2, 1, 2, 1]
    assert array_dependency(pack(ordered, job_ids, 2), job_ids) == ("afterok", ("100",))
    # Unpacked points (one per task), dependents packable: per-task order wins.
    single = {f"p{i}": f"200_{i}" for i in range(6)}
    ordered = order_for_correspondence(dependents, single)
    assert [len(t) for t in pack(ordered, single, 3)] == [1] * 6


def test_a_packed_task_asks_for_the_sum_of_its_walltimes() -> None:
    assert walltime_text(5 * 60) == "0:05:00"
    assert walltime_text(3 * 3600 + 61) == "3:01:01"
    assert walltime_text(2 * 86400 + 30) == "2-0:00:30"
    for seconds in (1, 59, 3600, 86399, 90061):
        assert Resources(walltime=walltime_text(seconds)).walltime_s == seconds

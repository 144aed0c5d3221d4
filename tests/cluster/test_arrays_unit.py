"""Which instances go out together as job arrays, and what each array waits for (pure)."""

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
    split_task_id,
)


def node(key: str, name: str, **upstream: str) -> Any:
    return cast(Any, SimpleNamespace(key=key, name=name, upstream=upstream))


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
    assert array_dependency(ordered, job_ids) == ("aftercorr", ("100",))


def test_anything_else_waits_for_every_upstream_job() -> None:
    job_ids = {"a": "7", "b0": "100_0", "b1": "100_1", "c": "101_0"}
    two_inputs = [node("x0", "x", a="a", b="b0"), node("x1", "x", a="a", b="b1")]
    assert array_dependency(two_inputs, job_ids) == ("afterok", ("7", "100"))
    shifted = [node("y0", "y", b="b1"), node("y1", "y", b="b0")]  # task 0 needs task 1
    assert array_dependency(shifted, job_ids) == ("afterok", ("100",))
    assert array_dependency([node("z", "z")], job_ids) == ("afterok", ())


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

"""The plan per test: what resolving and ordering instances leave behind, and the memos that
make collection one lookup per test (stage names, reached marks).

The stages here are declared at import, like a conftest's; their names carry a ``pi_`` prefix
so they cannot clash with other tests' stages.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_physpipe import StageConfig, gather, stage, sweep
from pytest_physpipe.plan import Planner, StageInstance
from pytest_physpipe.stage import registry


class PiGrid(StageConfig):
    level: int = 1
    element: str = "P1"


@stage(
    params=sweep(
        PiGrid,
        level=[1, 2, 3],
        element=["P1", "P2"],
        marks=lambda c: [pytest.mark.slow] if c.level == 3 else [],
    )
)
def pi_grid(config: PiGrid) -> int:
    return config.level


@stage
def pi_solve(pi_grid: int) -> int:
    return pi_grid * 2


@stage(slow=True)
def pi_post(pi_solve: int) -> int:
    return pi_solve + 1


@stage
def pi_order(errors: Any = gather("pi_solve", over=["level"])) -> int:
    return len(errors)


@stage
def pi_table(orders: Any = gather("pi_order")) -> int:
    return len(orders)


STAGES = ["pi_grid", "pi_solve", "pi_post", "pi_order", "pi_table"]


@pytest.fixture
def planner() -> Planner:
    planner = Planner(registry=registry)
    planner.validate(STAGES)
    return planner


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Garbage collection only where the test calls it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def resolve_everything(planner: Planner) -> list[StageInstance]:
    """What collection does for a suite using every stage above: resolve each test's
    instances, order them upstream first, look up their marks."""
    grid = registry.get("pi_grid")
    order = registry.get("pi_order")
    assert grid is not None
    assert grid.params is not None
    assert order is not None
    resolved: list[StageInstance] = []
    for config in grid.params:
        needed = planner.resolve(["pi_post"], {"pi_grid": config})
        resolved += needed.values()
    for group in planner.groups(order, "errors"):
        resolved += planner.resolve(["pi_order"], {"pi_order": group}).values()
    resolved += planner.resolve(["pi_table"], {}).values()
    for instance in resolved:
        planner.reached_marks(instance)
        planner.reachable(instance)
    return planner.upstream_first(resolved)


def test_planning_leaves_no_cyclic_garbage(planner: Planner, no_automatic_gc: None) -> None:
    # A recursive nested function is a function <-> cell cycle: one per call, freed only by
    # the cyclic collector. Planning ten thousand tests must not leave that much work behind.
    ordered = resolve_everything(planner)
    assert len(ordered) == 6 + 6 + 6 + 2 + 1
    assert gc.collect() == 0
    # Resolving again (the fixtures at run time) hits the memos, and leaves nothing either.
    resolve_everything(planner)
    assert gc.collect() == 0


def test_upstream_first_puts_every_instance_after_what_it_needs(planner: Planner) -> None:
    ordered = resolve_everything(planner)
    position = {instance.key: i for i, instance in enumerate(ordered)}
    assert len(position) == len(ordered)
    for instance in ordered:
        # A gather's upstream entry is the digest of what it gathers, not an instance.
        needed = [k for k in instance.upstream.values() if planner.get(k) is not None]
        needed += [r.key for refs in instance.gathered.values() for r in refs]
        assert bool(needed) == (instance.name != "pi_grid"), instance.label
        assert all(position[key] < position[instance.key] for key in needed), instance.label
    assert [i.name for i in ordered[:3]] == ["pi_grid", "pi_solve", "pi_post"]
    assert ordered[-1].name == "pi_table"


def naive_marks(planner: Planner, instance: StageInstance) -> tuple[bool, list[pytest.Mark]]:
    """The marks a test needing ``instance`` gets, walked out in full."""
    reached = planner.reachable(instance)
    marks: list[pytest.Mark] = []
    for other in reached:
        marks.extend(m for m in other.marks if m not in marks)
    return any(r.spec.slow for r in reached), marks


def test_reached_marks_are_those_of_everything_an_instance_needs(planner: Planner) -> None:
    ordered = resolve_everything(planner)
    slow_mark = pytest.mark.slow.mark
    seen = set()
    for instance in ordered:
        slow, marks = planner.reached_marks(instance)
        assert (slow, list(marks)) == naive_marks(planner, instance), instance.label
        seen.add((instance.name, slow, slow_mark in marks))
    # Level 3 is marked slow by its sweep; pi_post is declared slow; a gather of every
    # pi_order reaches level 3 (through pi_solve) but nothing declared slow.
    assert ("pi_grid", False, True) in seen
    assert ("pi_grid", False, False) in seen
    assert ("pi_post", True, True) in seen
    assert ("pi_post", True, False) in seen
    assert ("pi_table", False, True) in seen
    assert ("pi_solve", False, False) in seen


class FakeItem:
    """What the plan reads of a pytest item."""

    def __init__(self, nodeid: str, fixturenames: list[str], params: dict[str, Any]) -> None:
        self.nodeid = nodeid
        self.fixturenames = fixturenames
        self.callspec = type("CallSpec", (), {"params": params})()


def test_stage_names_are_looked_up_once_per_fixture_list(
    planner: Planner, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []
    get = type(registry).get

    def counting(self: Any, name: str) -> Any:
        asked.append(name)
        return get(self, name)

    grid = registry.get("pi_grid")
    monkeypatch.setattr(type(registry), "get", counting)
    assert grid is not None
    assert grid.params is not None
    names = ["request", "pi_solve", "tmp_path", "pi_grid"]
    items = [FakeItem(f"t.py::test[{i}]", names, {"pi_grid": c}) for i, c in enumerate(grid.params)]
    found = [planner.for_item(item) for item in items]  # type: ignore[arg-type]
    assert len(asked) == len(names)  # once for the six tests sharing their fixture names
    assert all(list(f) == ["pi_grid", "pi_solve"] for f in found)
    assert len({f["pi_solve"].key for f in found}) == len(items)
    assert planner.for_item(items[2]) is found[2]  # type: ignore[arg-type]
    other = FakeItem("t.py::other", ["pi_table"], {})
    assert list(planner.for_item(other)) == ["pi_table"]  # type: ignore[arg-type]
    assert asked.count("pi_table") == 1
    again = FakeItem("t.py::again", ["pi_table"], {})
    asked.clear()
    assert planner.for_item(again) == planner.for_item(other)  # type: ignore[arg-type]
    assert asked == []


def test_plan_on_an_empty_store_says_new_without_searching_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_physpipe import reasons

    def searched(*args: object) -> str:
        raise AssertionError("the plan searched a store that does not exist")

    # The session imports why_missing when a miss is first explained: patched where it lives.
    monkeypatch.setattr(reasons, "why_missing", searched)
    pytester.makeconftest(
        """
        from pytest_physpipe import StageConfig, stage

        class EmptyConfig(StageConfig):
            n: int = 0

        @stage(params=[EmptyConfig(n=n) for n in range(3)])
        def empty_point(config: EmptyConfig) -> int:
            return config.n
        """
    )
    pytester.makepyfile("def test_point(empty_point):\n    assert empty_point >= 0\n")
    result = pytester.runpytest_inprocess("--physpipe-plan")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["3 stage instance(s): 0 cached, 3 missing"])
    rows = [line.split() for line in result.outlines if line.startswith("empty_point[")]
    assert [row[-1] for row in rows] == ["new", "new", "new"]


def test_a_plan_is_freed_without_the_cyclic_collector(
    pytester: pytest.Pytester, no_automatic_gc: None
) -> None:
    # The session holds the plan (an instance, its attribute dict and its test's instances by
    # name, per test): in a reference cycle, all of it would wait for the next full
    # collection, which pytest makes as it closes, and that pass would walk and free it.
    import weakref

    from pytest_physpipe.stage import RUN

    pytester.makeconftest(
        """
        from pytest_physpipe import StageConfig, stage

        class FreedConfig(StageConfig):
            n: int = 0

        @stage(params=[FreedConfig(n=n) for n in range(3)])
        def freed_point(config: FreedConfig) -> int:
            return config.n
        """
    )
    pytester.makepyfile("def test_point(freed_point):\n    assert freed_point >= 0\n")
    held: list[weakref.ref[Any]] = []

    class Probe:
        @pytest.hookimpl(trylast=True)
        def pytest_collection_finish(self, session: pytest.Session) -> None:
            physpipe = session.config.stash[RUN].existing_session
            assert physpipe is not None
            held.append(weakref.ref(physpipe))
            held.append(weakref.ref(physpipe.planner))

    for args in (["--physpipe-plan"], [], ["--physpipe-plan"]):  # planned, computed, cached
        held.clear()
        result = pytester.inline_run(*args, plugins=[Probe()])
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        assert len(held) == 2
        assert [ref() for ref in held] == [None, None], args

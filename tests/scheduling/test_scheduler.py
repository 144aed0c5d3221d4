"""The ``--physpipe-dist`` scheduler: its policy with fake nodes, then a real run."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from physpipe_testing import CallLog

from pytest_physpipe.scheduling.policy import (
    DEFAULT_COST_S,
    Manifest,
    ManifestStage,
    PhyspipeScheduling,
    Policy,
    StageCosts,
)


def stage(
    key: str, cost: float = 1.0, *, cached: bool = False, up: tuple[str, ...] = ()
) -> ManifestStage:
    return ManifestStage(key=key, label=key, cached=cached, cost=cost, upstream=up)


def make_manifest(tests: dict[str, tuple[str, ...]], *stages: ManifestStage) -> Manifest:
    return Manifest(tests=tests, stages={s.key: s for s in stages})


# -- the policy ---------------------------------------------------------------------------------


def test_tests_sharing_a_missing_stage_do_not_occupy_two_nodes() -> None:
    manifest = make_manifest(
        {"a0": ("A",), "a1": ("A",), "a2": ("A",), "b0": ("B",)}, stage("A"), stage("B")
    )
    policy = Policy(["a0", "a1", "a2", "b0"], manifest)
    first = policy.pick("n1", force=False)
    assert first == 0
    policy.assign(0, "n1")
    # n2 must not wait on A's lock while B is ready to start.
    assert policy.pick("n2", force=False) == 3
    policy.assign(3, "n2")
    # Only A's tests are left: n2 gets none unless it would otherwise be stuck ...
    assert policy.pick("n2", force=False) is None
    assert policy.pick("n2", force=True) == 1
    # ... while n1, which computes A, may queue them behind it.
    assert policy.pick("n1", force=False) == 1
    # Once the test computing A is done, A is a hit for everyone.
    policy.complete(0)
    assert policy.pick("n2", force=False) == 1


def test_expensive_missing_stages_start_first() -> None:
    manifest = make_manifest(
        {"cheap": ("C",), "cached": ("K",), "costly": ("E",)},
        stage("C", 1.0),
        stage("K", 50.0, cached=True),
        stage("E", 8.0),
    )
    policy = Policy(["cheap", "cached", "costly"], manifest)
    assert policy.pick("n1", force=False) == 2
    policy.assign(2, "n1")
    assert policy.pick("n2", force=False) == 0
    policy.assign(0, "n2")
    assert policy.pick("n2", force=False) == 1  # needs nothing missing: fills in last


def test_priority_follows_the_longest_chain_below_a_stage() -> None:
    # A is cheap but a long stage waits on it; B alone is costlier than A.
    manifest = make_manifest(
        {"b": ("B",), "a": ("A",), "long": ("A", "L")},
        stage("A", 1.0),
        stage("L", 10.0, up=("A",)),
        stage("B", 3.0),
    )
    policy = Policy(["b", "a", "long"], manifest)
    # "long" and "a" both start A (bottom level 11); "long" brings more work, so it goes first.
    assert policy.pick("n1", force=False) == 2


def test_without_costs_the_stage_most_tests_share_starts_first() -> None:
    # No cost history: every stage costs the same, so the stage four tests wait for goes before
    # the ones a single test needs, although those were collected first.
    manifest = make_manifest(
        {"c0": ("C0",), "c1": ("C1",), **{f"s{i}": ("S",) for i in range(4)}},
        stage("C0"),
        stage("C1"),
        stage("S"),
    )
    policy = Policy(["c0", "c1", "s0", "s1", "s2", "s3"], manifest)
    assert policy.pick("n1", force=False) == 2


def test_a_lost_node_gives_back_its_tests_and_its_stages() -> None:
    manifest = make_manifest({"a0": ("A",), "a1": ("A",)}, stage("A"))
    policy = Policy(["a0", "a1"], manifest)
    policy.assign(0, "n1")
    policy.assign(1, "n1")
    assert policy.pick("n2", force=False) is None
    assert not policy.has_undispatched()
    policy.give_back([1], "n1")  # n1 crashed while running a0; a1 was queued
    assert policy.has_undispatched()
    assert policy.pick("n2", force=False) == 1  # A is nobody's now: n2 computes it


def test_without_a_manifest_tests_go_in_collection_order() -> None:
    policy = Policy(["t0", "t1", "t2"], None)
    order = []
    while policy.has_undispatched():
        index = policy.pick("n1", force=False)
        assert index is not None
        policy.assign(index, "n1")
        order.append(index)
    assert order == [0, 1, 2]
    assert policy.only_free_left()


# -- the xdist protocol with fake nodes ---------------------------------------------------------


class FakeGateway:
    def __init__(self, name: str) -> None:
        self.id = name


class FakeNode:
    """What the scheduler uses of xdist's WorkerController."""

    def __init__(self, name: str) -> None:
        self.gateway = FakeGateway(name)
        self.queue: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        assert not self.shutting_down
        self.queue.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True

    def runnable(self) -> bool:
        # A worker runs a test once it knows the next one, or that there is none.
        return len(self.queue) >= 2 or (self.shutting_down and bool(self.queue))


def _random_manifest(rng: random.Random, tests: int) -> tuple[list[str], Manifest]:
    keys = [f"k{i}" for i in range(8)]
    stages = [
        stage(k, rng.uniform(0.1, 5.0), cached=rng.random() < 0.3, up=tuple(keys[:i][-1:]))
        for i, k in enumerate(keys)
    ]
    nodeids = [f"t{i}" for i in range(tests)]
    mapping = {n: tuple(rng.sample(keys, rng.randint(0, 3))) for n in nodeids}
    return nodeids, make_manifest(mapping, *stages)


@pytest.mark.parametrize("seed", range(20))
def test_every_test_runs_exactly_once_and_the_run_ends(
    pytester: pytest.Pytester, seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    nodeids, manifest = _random_manifest(rng, tests=rng.randint(0, 30))
    nodes = [FakeNode(f"gw{i}") for i in range(rng.randint(1, 4))]
    manifest.write(tmp_path / "manifest-gw0.json")
    config = pytester.parseconfig("--tx", f"{len(nodes)}*popen")
    sched = PhyspipeScheduling(config, None, manifest_dir=tmp_path)
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        sched.add_node_collection(node, nodeids)
    assert sched.collection_is_completed
    sched.schedule()
    ran: list[int] = []
    for _ in range(10 * len(nodeids) + 10):
        busy = [n for n in nodes if n.runnable()]
        if not busy:
            break
        node = rng.choice(busy)
        index = node.queue.pop(0)
        ran.append(index)
        sched.mark_test_complete(node, index)
    assert sorted(ran) == list(range(len(nodeids)))
    assert sched.tests_finished
    assert not sched.has_pending
    assert all(n.shutting_down for n in nodes)


def test_a_crashed_node_reports_its_running_test_and_requeues_the_rest(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    nodeids = [f"t{i}" for i in range(6)]
    make_manifest({n: ("A",) for n in nodeids}, stage("A")).write(tmp_path / "manifest-gw0.json")
    config = pytester.parseconfig("--tx", "2*popen")
    sched = PhyspipeScheduling(config, None, manifest_dir=tmp_path)
    n1, n2 = FakeNode("gw0"), FakeNode("gw1")
    for node in (n1, n2):
        sched.add_node(node)
        sched.add_node_collection(node, nodeids)
    sched.schedule()
    assert len(n1.queue) == 2
    running = n1.queue[0]
    assert sched.remove_node(n1) == nodeids[running]
    # n2 may compute A now, and gets n1's queued test back among the rest.
    ran = []
    while n2.runnable():
        index = n2.queue.pop(0)
        ran.append(index)
        sched.mark_test_complete(n2, index)
    assert sorted([*ran, running]) == list(range(6))


# -- manifest files and costs ----------------------------------------------------------------------


def test_manifest_and_costs_round_trip(tmp_path: Path) -> None:
    manifest = make_manifest({"t": ("A", "B")}, stage("A", 2.5, cached=True), stage("B", up=("A",)))
    manifest.write(tmp_path / "runs" / "r1" / "manifest-gw0.json")
    assert Manifest.read(tmp_path / "runs" / "r1" / "manifest-gw0.json") == manifest
    assert Manifest.read(tmp_path / "missing.json") is None

    costs = StageCosts.load(tmp_path)
    assert costs.expected(label="heat[a=1]", name="heat", slow=False) == DEFAULT_COST_S
    assert costs.expected(label="heat[a=1]", name="heat", slow=True) == 10 * DEFAULT_COST_S
    costs.update([("heat[a=1]", "heat", 4.0)])
    costs.save(tmp_path)
    again = StageCosts.load(tmp_path)
    assert again.expected(label="heat[a=1]", name="heat", slow=False) == 4.0
    assert again.expected(label="heat[a=2]", name="heat", slow=False) == 4.0  # by name
    again.update([("heat[a=1]", "heat", 2.0)])
    assert 2.0 < again.expected(label="heat[a=1]", name="heat", slow=False) < 4.0
    StageCosts.path(tmp_path).write_text("{not json")
    assert StageCosts.load(tmp_path).labels == {}


# -- a real run ---------------------------------------------------------------------------------

PROJECT = """
import os
import time
import pytest
from physlog import log
from pytest_physpipe import StageConfig, stage, sweep

class Cheap(StageConfig):
    i: int = 0

@stage(params=sweep(Cheap, i=[0, 1, 2, 3]))
def cheap(config: Cheap):
    log(f"start {os.environ['PYTEST_XDIST_WORKER']} cheap {config.i} {time.time()}")
    time.sleep(0.05)
    return config.i

@stage(slow=True)  # no history yet: slow means "expect it to be expensive"
def costly():
    log(f"start {os.environ['PYTEST_XDIST_WORKER']} costly {time.time()}")
    time.sleep(0.3)
    return 7

@pytest.mark.parametrize("j", range(2))
def test_cheap(cheap, j):
    assert cheap >= 0

@pytest.mark.parametrize("j", range(3))
def test_costly(costly, j):
    assert costly == 7
"""


def test_physpipe_dist_end_to_end(pytester: pytest.Pytester, calls: CallLog) -> None:
    pytester.makepyfile(test_project=PROJECT)
    result = pytester.runpytest_subprocess(
        "-n", "2", "--physpipe-dist", "-v", "--physpipe-report", "report.json", timeout=120
    )
    result.assert_outcomes(passed=11)
    result.stdout.fnmatch_lines(["*scheduling tests via PhyspipeScheduling*"])
    starts = sorted(
        (float(line.split()[-1]), line.split()[1], " ".join(line.split()[2:-1]))
        for line in calls.take()
    )
    assert Counter(name for _, _, name in starts) == Counter(
        ["costly", "cheap 0", "cheap 1", "cheap 2", "cheap 3"]
    )
    # Collected last, but expected to be the most expensive: the scheduler hands it out first,
    # so it is the first stage its worker starts. (Per worker: the workers start at different
    # times on a loaded machine, so an order across workers would test the machine.)
    (costly_worker,) = {worker for _, worker, name in starts if name == "costly"}
    assert next(name for _, worker, name in starts if worker == costly_worker) == "costly"
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["summary"]["computed"] == 5
    # The manifests are gone with the run; the costs it measured stay for the next one.
    runs = pytester.path / ".physpipe" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["durations.json"]
    durations = json.loads((runs / "durations.json").read_text())
    assert durations["names"]["costly"] > 0.25

    again = pytester.runpytest_subprocess("-n", "2", "--physpipe-dist", timeout=120)
    again.assert_outcomes(passed=11)
    assert calls.take() == Counter()


def test_physpipe_dist_without_stages_runs_plain_tests(
    pytester: pytest.Pytester, calls: CallLog
) -> None:
    pytester.makepyfile(
        test_plain="""
        import pytest

        @pytest.mark.parametrize("i", range(5))
        def test_plain(i):
            assert i < 5
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--physpipe-dist", "-v", timeout=120)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*scheduling tests via PhyspipeScheduling*"])
    assert (pytester.path / ".physpipe" / "CACHEDIR.TAG").is_file()

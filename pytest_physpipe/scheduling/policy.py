"""``--physpipe-dist``: an xdist scheduler that knows which stage keys every test needs.

xdist's controller collects nothing, so it learns the stage keys from its workers: each worker
writes ``<store>/runs/<run_id>/manifest-<workerid>.json`` (every test's stage keys; per key, whether
the store has it, its expected cost and its upstream keys) *before* it reports its collection
(``hooks.py``). When all collections are in, :class:`PhyspipeScheduling` reads one manifest and
places tests with :class:`Policy`:

- a test that would compute a long chain of missing stages starts first (its priority is the
  longest remaining path of expected stage costs through the stages it would compute, the
  "bottom level" of list scheduling);
- a missing stage is *owned* by the worker that was sent the first test needing it; another
  worker is not sent a test needing it while that worker computes it (it would only sit on the
  stage's lock), so independent stages spread over the workers;
- once the owning test is done, the tests that share the stage are plain hits and go anywhere.

An xdist worker runs a test only once it knows the next one (``nextitem`` for fixture
teardown), so each worker is kept two tests deep; when every remaining test waits on a stage
that another worker computes, a worker that would otherwise hold one test back is sent one of
them anyway (it waits on the lock, as under ``--dist load``), and a worker with nothing queued
is left idle until a stage completes. See ``docs/xdist.md``.

Expected costs come from ``<store>/runs/durations.json``: the compute time of earlier runs per
stage label and name, updated at the end of every run; a stage never seen costs 1 s (10 s if
it is ``slow``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.layout import StoreLayout

if TYPE_CHECKING:
    from pytest_physpipe.reported import Reported

__all__ = [
    "DEFAULT_COST_S",
    "Manifest",
    "ManifestStage",
    "PhyspipeScheduling",
    "Policy",
    "StageCosts",
]

#: Expected cost of a stage with no history (seconds); a ``slow`` one is ten times that.
DEFAULT_COST_S = 1.0
_SLOW_FACTOR = 10.0
# Exponential moving average of durations: new = old + _EMA * (latest - old).
_EMA = 0.5
# The manifest is written before the worker reports its collection, so it is there; a short
# grace period only covers filesystems whose directory entries show up late (NFS).
_MANIFEST_WAIT_S = 2.0


def _write_json(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, sort_keys=True), make_parents=True)


# --------------------------------------------------------------------------------------------
# Expected costs


class StageCosts:
    """Compute times of earlier runs, per stage label (``name[params]``) and per name."""

    def __init__(self, labels: Mapping[str, float], names: Mapping[str, float]) -> None:
        self.labels = dict(labels)
        self.names = dict(names)

    @staticmethod
    def path(store_dir: Path) -> Path:
        return StoreLayout(Path(store_dir)).durations

    @classmethod
    def load(cls, store_dir: Path) -> StageCosts:
        """The recorded costs; none (not an error) when the file is missing or unreadable."""
        try:
            data = json.loads(cls.path(store_dir).read_text())
            labels = {str(k): float(v) for k, v in data["labels"].items()}
            names = {str(k): float(v) for k, v in data["names"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls({}, {})  # a scheduling hint only: without it every stage costs the default
        return cls(labels, names)

    def expected(self, *, label: str, name: str, slow: bool) -> float:
        found = self.labels.get(label, self.names.get(name))
        if found is not None:
            return found
        return DEFAULT_COST_S * (_SLOW_FACTOR if slow else 1.0)

    def update(self, durations: Iterable[tuple[str, str, float]]) -> None:
        """Fold in ``(label, name, seconds)`` of stages computed by a run."""
        for label, name, seconds in durations:
            for table, tag in ((self.labels, label), (self.names, name)):
                old = table.get(tag)
                table[tag] = seconds if old is None else old + _EMA * (seconds - old)

    def save(self, store_dir: Path) -> None:
        _write_json(self.path(store_dir), {"labels": self.labels, "names": self.names})


def record_costs(records: Mapping[str, Reported], store_dir: Path) -> None:
    """Fold the compute times of a run's computed instances into the store's costs."""
    computed = [(r.label, r.name, r.duration_s) for r in records.values() if r.status == "computed"]
    if not computed or not store_dir.is_dir():
        return
    costs = StageCosts.load(store_dir)
    costs.update(computed)
    try:
        costs.save(store_dir)
    except OSError:
        return  # a scheduling hint: a read-only store just keeps the old one


# --------------------------------------------------------------------------------------------
# The manifest a worker hands to the controller


@dataclass(frozen=True)
class ManifestStage:
    """What the scheduler knows of one stage instance."""

    key: str
    label: str
    cached: bool
    cost: float
    upstream: tuple[str, ...] = ()
    cpu: int = 1
    slow: bool = False


@dataclass(frozen=True)
class Manifest:
    """Every test's stage keys (by node id) and every stage instance (by key)."""

    tests: Mapping[str, tuple[str, ...]]
    stages: Mapping[str, ManifestStage]

    def to_json(self) -> dict[str, Any]:
        return {
            "tests": {nodeid: list(keys) for nodeid, keys in self.tests.items()},
            "stages": {
                key: {
                    "label": s.label,
                    "cached": s.cached,
                    "cost": s.cost,
                    "upstream": list(s.upstream),
                    "cpu": s.cpu,
                    "slow": s.slow,
                }
                for key, s in self.stages.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        stages = {
            str(key): ManifestStage(
                key=str(key),
                label=str(s["label"]),
                cached=bool(s["cached"]),
                cost=float(s["cost"]),
                upstream=tuple(str(u) for u in s.get("upstream", ())),
                cpu=int(s.get("cpu", 1)),
                slow=bool(s.get("slow", False)),
            )
            for key, s in data["stages"].items()
        }
        tests = {str(n): tuple(str(k) for k in keys) for n, keys in data["tests"].items()}
        return cls(tests=tests, stages=stages)

    def write(self, path: Path) -> None:
        _write_json(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


# --------------------------------------------------------------------------------------------
# The policy (pure: no xdist, no I/O; nodes are any hashable objects)


class Policy:
    """Which undispatched test a node should run next, given what the others are computing."""

    def __init__(self, collection: Sequence[str], manifest: Manifest | None) -> None:
        stages: Mapping[str, ManifestStage] = manifest.stages if manifest is not None else {}
        tests: Mapping[str, tuple[str, ...]] = manifest.tests if manifest is not None else {}
        self.cost = {key: s.cost for key, s in stages.items()}
        # Tests with the same missing keys form a group: picking scans groups, not tests.
        self._groups: dict[frozenset[str], list[int]] = {}
        self._group_of: dict[int, frozenset[str]] = {}
        # How many tests wait for each missing stage: without cost history (every stage costs
        # the same), a stage many tests share is the one to start early.
        self._demand: dict[str, int] = {}
        for index, nodeid in enumerate(collection):
            missing = frozenset(
                k for k in tests.get(nodeid, ()) if k in stages and not stages[k].cached
            )
            self._groups.setdefault(missing, []).append(index)
            self._group_of[index] = missing
            for key in missing:
                self._demand[key] = self._demand.get(key, 0) + 1
        self.done: set[str] = set()
        self.owner: dict[str, object] = {}
        self._bottom = _bottom_levels(stages)
        self.remaining = len(collection)

    # -- queries --------------------------------------------------------------------------------

    def has_undispatched(self) -> bool:
        return self.remaining > 0

    def only_free_left(self) -> bool:
        """No undispatched test would compute anything (all it needs is stored or done)."""
        return all(not (keys - self.done) for keys, group in self._groups.items() if group)

    def pick(self, node: object, *, force: bool) -> int | None:
        """The next test for ``node``; ``None`` if each waits on another node (unless ``force``).

        Among the tests that need no stage another node is computing, the one with the longest
        remaining chain of stages it would compute goes first; then the one whose stage the most
        tests share; remaining ties go to collection order.
        """
        best: tuple[float, float, int, int] | None = None
        best_group: frozenset[str] | None = None
        fallback: tuple[float, int] | None = None
        fallback_group: frozenset[str] | None = None
        for keys, group in self._groups.items():
            if not group:
                continue
            todo = keys - self.done
            new = [k for k in todo if k not in self.owner]
            if any(self.owner.get(k, node) is not node for k in todo):
                # Blocked: another node computes one of its stages. Least extra wait first.
                rank = (-sum(self.cost.get(k, DEFAULT_COST_S) for k in new), -group[0])
                if fallback is None or rank > fallback:
                    fallback, fallback_group = rank, keys
                continue
            priority = max((self._bottom.get(k, 0.0) for k in new), default=0.0)
            work = sum(self.cost.get(k, DEFAULT_COST_S) for k in new)
            demand = max((self._demand.get(k, 0) for k in new), default=0)
            candidate = (priority, work, demand, -group[0])
            if best is None or candidate > best:
                best, best_group = candidate, keys
        chosen = best_group if best_group is not None else (fallback_group if force else None)
        if chosen is None:
            return None
        return self._groups[chosen][0]

    # -- events ---------------------------------------------------------------------------------

    def assign(self, index: int, node: object) -> None:
        keys = self._group_of[index]
        self._groups[keys].remove(index)
        self.remaining -= 1
        for key in keys - self.done:
            self.owner.setdefault(key, node)

    def complete(self, index: int) -> None:
        """Test ``index`` ended: every stage it needs was served (or failed) by now."""
        for key in self._group_of[index]:
            self.done.add(key)
            self.owner.pop(key, None)

    def give_back(self, indices: Iterable[int], node: object) -> None:
        """``node`` is gone (or gave tests back): its tests are undispatched again, and the
        stages it was computing are nobody's."""
        for index in sorted(indices, reverse=True):
            self._groups[self._group_of[index]].insert(0, index)
            self.remaining += 1
        for key in [k for k, owner in self.owner.items() if owner is node]:
            del self.owner[key]


def _bottom_levels(stages: Mapping[str, ManifestStage]) -> dict[str, float]:
    """Per missing stage: its cost plus the longest chain of missing stages downstream."""
    children: dict[str, list[str]] = {}
    for key, s in stages.items():
        for up in s.upstream:
            children.setdefault(up, []).append(key)
    bottom: dict[str, float] = {}

    def visit(key: str, path: frozenset[str]) -> float:
        found = bottom.get(key)
        if found is not None:
            return found
        below = [
            visit(c, path | {key})
            for c in children.get(key, ())
            if c not in path and not stages[c].cached
        ]
        bottom[key] = value = stages[key].cost + max(below, default=0.0)
        return value

    for key, s in stages.items():
        if not s.cached:
            visit(key, frozenset())
    return bottom


# --------------------------------------------------------------------------------------------
# The xdist scheduling protocol (xdist.scheduler.protocol.Scheduling)


class PhyspipeScheduling:
    """xdist's scheduling protocol on top of :class:`Policy` (see the module docstring)."""

    def __init__(self, config: pytest.Config, log: Any, *, manifest_dir: Path | None) -> None:
        from xdist.workermanage import parse_tx_spec_config

        self.numnodes = len(parse_tx_spec_config(config))
        self.config = config
        self.log = log.physpipesched if log is not None else (lambda *args: None)
        self.manifest_dir = manifest_dir
        self.node2collection: dict[Any, list[str]] = {}
        self.node2pending: dict[Any, list[int]] = {}
        self.collection: list[str] | None = None
        self.policy: Policy | None = None
        self.manifest: Manifest | None = None

    # -- protocol properties --------------------------------------------------------------------

    @property
    def nodes(self) -> list[Any]:
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.policy is None:
            return False
        if self.policy.has_undispatched():
            return False
        # A node's last test runs once it is told to shut down (it has no next item).
        return all(len(pending) < 2 for pending in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        if self.policy is not None and self.policy.has_undispatched():
            return True
        return any(self.node2pending.values())

    # -- protocol events ------------------------------------------------------------------------

    def add_node(self, node: Any) -> None:
        assert node not in self.node2pending
        self.node2pending[node] = []

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        assert node in self.node2pending
        # A node started later (a crashed one replaced) must have collected the same tests.
        if self.collection is not None and list(collection) != self.collection:
            from xdist.report import report_collection_diff

            first = next(iter(self.node2collection))
            self.log(
                report_collection_diff(
                    self.collection, collection, first.gateway.id, node.gateway.id
                )
            )
            return
        self.node2collection[node] = list(collection)

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)
        assert self.policy is not None
        self.policy.complete(item_index)
        self._fill_all()

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        assert self.policy is not None
        self.policy.give_back([self.collection.index(item)], node=None)
        self._fill_all()

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        assert self.policy is not None
        pending = self.node2pending[node]
        for index in indices:
            pending.remove(index)
        self.policy.give_back(indices, node)
        self._fill_all()

    def remove_node(self, node: Any) -> str | None:
        pending = self.node2pending.pop(node)
        if self.policy is None:
            return None
        self.policy.give_back(pending[1:], node)
        crashed = None
        if pending:
            # The first pending test was running: xdist reports it as crashed. What it was
            # computing is nobody's now: a later test needing it computes it.
            assert self.collection is not None
            crashed = self.collection[pending[0]]
        self._fill_all()
        return crashed

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            self._fill_all()
            return
        collections = list(self.node2collection.values())
        if any(c != collections[0] for c in collections[1:]):
            self._report_collection_diff()
            return
        self.collection = collections[0]
        self.manifest = self._read_manifest()
        self.policy = Policy(self.collection, self.manifest)
        if not self.collection:
            return
        # First slot of every node, then the second: the most urgent tests start on distinct
        # nodes at once.
        for depth in (1, 2):
            for node in self.nodes:
                self._fill(node, depth=depth)
        self._shutdown_if_done()

    # -- internals ------------------------------------------------------------------------------

    def _read_manifest(self) -> Manifest | None:
        if self.manifest_dir is None:
            return None
        assert self.collection is not None
        deadline = time.monotonic() + _MANIFEST_WAIT_S
        while True:
            for node in self.node2collection:
                manifest = Manifest.read(
                    self.manifest_dir / StoreLayout.manifest_name(node.gateway.id)
                )
                if manifest is not None:
                    return manifest
            if time.monotonic() >= deadline:
                # No stage declared (workers write no manifest), or a store nobody can write.
                self.log("no manifest from any worker: scheduling without stage keys")
                return None
            time.sleep(0.01)

    def _target(self) -> int:
        assert self.policy is not None
        if not self.policy.only_free_left():
            return 2
        # Only hits and plain tests left: send bigger chunks, like --dist load.
        return max(2, self.policy.remaining // max(1, len(self.node2pending)) // 4)

    def _fill(self, node: Any, *, depth: int | None = None) -> None:
        assert self.policy is not None
        if node.shutting_down:
            return
        pending = self.node2pending[node]
        target = self._target() if depth is None else depth
        sent: list[int] = []
        while len(pending) + len(sent) < target:
            # A node with one test queued cannot start it until it gets a next one.
            index = self.policy.pick(node, force=len(pending) + len(sent) == 1)
            if index is None:
                break
            self.policy.assign(index, node)
            sent.append(index)
        if sent:
            pending.extend(sent)
            node.send_runtest_some(sent)

    def _fill_all(self) -> None:
        if self.policy is None:
            return
        for node in self.nodes:
            self._fill(node)
        self._shutdown_if_done()

    def _shutdown_if_done(self) -> None:
        assert self.policy is not None
        if self.policy.has_undispatched():
            return
        for node in self.nodes:
            if not node.shutting_down:
                node.shutdown()

    def _report_collection_diff(self) -> None:
        from xdist.report import report_collection_diff

        (first, col), *others = self.node2collection.items()
        for node, collection in others:
            msg = report_collection_diff(col, collection, first.gateway.id, node.gateway.id)
            if msg:
                self.log(msg)
                self.config.hook.pytest_collectreport(
                    report=pytest.CollectReport(
                        nodeid=node.gateway.id, outcome="failed", longrepr=msg, result=[]
                    )
                )

"""What planning a large sweep does per instance, and what it no longer does.

The plan of ten thousand instances pays per instance for its key and little else: the key
manifest is built when something reads it, the plan's memo per test is not keyed by the node
id (a property), the statuses are one ``stat`` each, a sweep's ids come from one dump per config
through its serializer, and two configs of a sweep compare unequal without pydantic's checks.
Each test here fails where that work is back; the reference functions say what the result must
be (the keys, the manifests, the ids and the equality of before).

The stages here are declared at import, like a conftest's; their names carry a ``pc_`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from pytest_physpipe import InputFile, StageConfig, keys, stage, sweep
from pytest_physpipe.plan import Planner, StageInstance
from pytest_physpipe.stage import StageSpec, default_ids, registry

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class PcGrid(StageConfig):
    level: int = 1
    length: float = 1.0
    tags: tuple[str, ...] = ()


@stage(params=sweep(PcGrid, level=[1, 2, 3], length=[0.5, 1.0], tags=[(), ("a", "b")]))
def pc_grid(config: PcGrid) -> int:
    return config.level


@stage(version=2)
def pc_solve(pc_grid: int) -> int:
    return pc_grid * 2


class PcFiled(StageConfig):
    level: int = 1
    name: str = "a-b"
    data: InputFile = Path("pc-data.txt")


@stage(
    params=[
        PcFiled(level=1),
        pytest.param(PcFiled(level=2), marks=pytest.mark.slow),  # type: ignore[list-item]
        PcFiled(level=2, name="c"),
        PcFiled(level=1),
        PcFiled(level=3, name="c"),
    ]
)
def pc_filed(config: PcFiled) -> int:
    return config.level


class FakeItem:
    """What the plan reads of a pytest item; its node id may not be read."""

    def __init__(self, fixturenames: list[str], params: dict[str, Any]) -> None:
        self.fixturenames = fixturenames
        self.callspec = type("CallSpec", (), {"params": params})()

    @property
    def nodeid(self) -> str:
        raise AssertionError("the plan read a node id")


def planned() -> tuple[Planner, list[dict[str, StageInstance]]]:
    planner = Planner(registry=registry, packages={"numpy": "2.0"}, salt="pc")
    planner.validate(["pc_grid", "pc_solve"])
    spec = registry.get("pc_grid")
    assert spec is not None
    assert spec.params is not None
    items = [FakeItem(["request", "pc_solve", "pc_grid"], {"pc_grid": c}) for c in spec.params]
    found = [planner.for_item(item) for item in items]  # type: ignore[arg-type]
    # Asked again (when the test runs), each item gets its answer back: no node id either.
    assert all(planner.for_item(i) is f for i, f in zip(items, found, strict=True))  # type: ignore[arg-type]
    return planner, found


def reference_manifest(instance: StageInstance, planner: Planner) -> dict[str, Any]:
    """The key's document as :func:`keys.stage_key` takes it, from the declaration alone."""
    spec = instance.spec
    return {
        "stage": spec.name,
        "qualname": spec.qualname,
        "code": spec.code,
        "code_parts": dict(spec.code_info.parts),
        "version": spec.version,
        "config_class": None if spec.config_class is None else spec.config_class.__qualname__,
        "config": keys.config_json(instance.config),
        "config_key": keys.xxh3(keys.canonical(keys.config_identity(instance.config))),
        "inputs": {},
        "upstream": dict(instance.upstream),
        "packages": dict(planner.packages),
        "salt": keys.xxh3(planner.salt.encode()),
    }


def test_a_sweep_plans_to_its_keys_and_builds_each_manifest_when_read() -> None:
    planner, found = planned()
    assert len({f["pc_grid"].key for f in found}) == 12
    for needed in found:
        for instance in needed.values():
            document = reference_manifest(instance, planner)
            expected = keys.stage_key(
                name=document["stage"],
                qualname=document["qualname"],
                code=document["code"],
                version=document["version"],
                config_class=document["config_class"],
                config=keys.config_identity(instance.config),
                inputs={},
                upstream=document["upstream"],
                packages=document["packages"],
                salt=planner.salt,
            )
            assert instance.key == expected, instance.label
            assert "manifest" not in vars(instance), "the plan built a manifest nobody read"
            assert instance.manifest == document
            assert instance.manifest is instance.manifest  # built once
        assert needed["pc_solve"].upstream == {"pc_grid": needed["pc_grid"].key}


def general_instance(planner: Planner, spec: StageSpec, index: int) -> StageInstance:
    """The instance of ``params=`` entry ``index`` through the general path (as a config
    given by value, not the entry itself)."""
    assert spec.params is not None
    assert spec.marks is not None
    config = spec.params[index]
    return planner.instance(spec, config, {}, marks=spec.marks[index], param_index=index)


def test_an_entry_of_params_is_the_instance_the_general_path_builds(tmp_path: Path) -> None:
    # A sweep's entries take a short path (nothing upstream, no gathers): the same instance
    # field for field, with input files, ids of several coordinates (and values holding a
    # "-"), marks, and two equal entries (one instance, that of the first).
    (tmp_path / "pc-data.txt").write_text("some data\n")
    spec = registry.get("pc_filed")
    assert spec is not None
    assert spec.params is not None
    fast = Planner(registry=registry, packages={"numpy": "2.0"}, salt="pc", rootdir=tmp_path)
    general = Planner(registry=registry, packages={"numpy": "2.0"}, salt="pc", rootdir=tmp_path)
    items: list[Any] = [FakeItem(["pc_filed"], {"pc_filed": c}) for c in spec.params]
    found = [fast.for_item(item)["pc_filed"] for item in items]
    assert found[3] is found[0]  # equal entries
    assert len({i.key for i in found}) == len(spec.params) - 1
    for index, instance in enumerate(found):
        if index == 3:
            continue
        reference = general_instance(general, spec, index)
        assert "manifest" not in vars(instance)
        for name in ("key", "param_id", "config_json", "marks", "upstream", "gathered"):
            assert getattr(instance, name) == getattr(reference, name), (index, name)
        assert instance.config is spec.params[index]
        assert instance.manifest == reference.manifest
        assert instance.manifest["inputs"] == {
            "data": keys.input_file_hashes(instance.config, base=tmp_path)["data"]
        }
    assert [i.param_id for i in found] == [
        "level=1-name=a-b",
        "level=2-name=a-b",
        "level=2-name=c",
        "level=1-name=a-b",
        "level=3-name=c",
    ]
    assert [tuple(m.name for m in i.marks) for i in found] == [(), ("slow",), (), (), ()]


def test_ids_of_a_sweep_come_without_model_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    class PcCounted(StageConfig):
        n: int = 0
        x: float = 0.5

    dumped: list[object] = []
    model_dump = PcCounted.model_dump

    def counting(self: Any, **kwargs: Any) -> dict[str, Any]:
        dumped.append(self)
        return model_dump(self, **kwargs)

    configs = [PcCounted(n=n) for n in range(50)]
    monkeypatch.setattr(BaseModel, "model_dump", counting)
    ids = default_ids(configs, PcCounted())
    monkeypatch.undo()
    assert ids == tuple(f"n={n}" for n in range(50))
    assert dumped == []  # one dump per config through the class's serializer


def reference_ids(configs: list[StageConfig], base: StageConfig | None) -> tuple[str, ...]:
    """The ids as they were made before they were made fast (one model_dump per config)."""

    def text(value: Any) -> str:
        return repr(value) if isinstance(value, float) else str(value)

    dumps = [c.model_dump() for c in configs]
    fields = list(type(configs[0]).model_fields)
    varying = [f for f in fields if len({repr(d.get(f)) for d in dumps}) > 1]
    if not varying and base is not None:
        base_dump = base.model_dump()
        varying = [f for f in fields if any(d.get(f) != base_dump.get(f) for d in dumps)]
    if not varying:
        return tuple("default" if len(configs) == 1 else f"config{i}" for i in range(len(configs)))
    return tuple("-".join(f"{f}={text(d[f])}" for f in varying) for d in dumps)


class PcAny(StageConfig):
    a: Any = 0
    b: Any = None


values = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=3)
    | st.tuples(st.integers(0, 2))
    | st.lists(st.integers(0, 2), max_size=2)
)
configs = st.builds(PcAny, a=values, b=values)


@FAST
@given(st.lists(configs, min_size=1, max_size=6), st.none() | configs)
def test_default_ids_are_the_ids_of_before(found: list[StageConfig], base: Any) -> None:
    assert default_ids(found, base) == reference_ids(found, base)


def reference_equal(a: StageConfig, b: StageConfig) -> bool:
    """Equal configs, as before: pydantic's equality, then equal encodings."""
    equal = BaseModel.__eq__(a, b)
    if equal is not True or type(a) is not type(b):
        return bool(equal)
    try:
        return keys.canonical(keys.config_identity(a)) == keys.canonical(keys.config_identity(b))
    except keys.UnencodableField:
        return True


class PcOther(StageConfig):
    a: Any = 0
    b: Any = None


@FAST
@given(configs, configs | st.builds(PcOther, a=values, b=values))
def test_config_equality_is_the_equality_of_before(a: StageConfig, b: StageConfig) -> None:
    assert (a == b) == reference_equal(a, b)
    assert (b == a) == reference_equal(b, a)
    assert a == a  # a config equals itself, NaN fields included


@pytest.fixture
def no_pydantic_equality(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: Any, other: Any) -> bool:
        raise AssertionError("pydantic's __eq__ was asked")

    monkeypatch.setattr(BaseModel, "__eq__", refused)


def test_configs_of_a_sweep_compare_without_pydantic(no_pydantic_equality: None) -> None:
    # What pytest asks when a session fixture's param changes from one test to the next.
    first, second, again = PcGrid(level=1), PcGrid(level=2), PcGrid(level=1, tags=("a",))
    assert first != second
    assert first != again
    assert first == first  # the same object: equal without encoding it


class PcPrivate(StageConfig):
    model_config = ConfigDict(frozen=True, extra="forbid")
    n: int = 0


def test_equal_fields_still_go_through_the_encodings() -> None:
    # 1 and True are equal to pydantic, not to keys: the fast path never answers True.
    assert PcAny(a=1) != PcAny(a=True)
    assert PcAny(a=(1, 2)) != PcAny(a=[1, 2])
    assert PcPrivate(n=3) == PcPrivate(n=3)


def test_plan_statuses_are_exact_and_looked_up_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(
        """
        from pytest_physpipe import StageConfig, stage

        class PcPoint(StageConfig):
            i: int = 0

        @stage(params=[PcPoint(i=i) for i in range(4)])
        def pc_point(config: PcPoint) -> int:
            return config.i
        """
    )
    pytester.makepyfile("def test_point(pc_point):\n    assert pc_point >= 0\n")
    pytester.runpytest_inprocess().assert_outcomes(passed=4)
    entries = sorted((pytester.path / ".physpipe" / "entries").glob("*/*/meta.json"))
    assert len(entries) == 4
    entries[0].unlink()  # a damaged entry: its directory is there, its meta.json is not

    from pytest_physpipe.store.entries import Store

    def refused(self: Any, key: str) -> bool:
        raise AssertionError("the plan asked Store.exists once per key")

    monkeypatch.setattr(Store, "exists", refused)
    result = pytester.runpytest_inprocess("--physpipe-plan")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["4 stage instance(s): 3 cached, 1 missing"])
    missing = [line for line in result.outlines if " missing " in line]
    assert len(missing) == 1
    assert entries[0].parent.name[:16] in missing[0]


class PcMany(StageConfig):
    i: int = 0


@stage(params=[PcMany(i=i) for i in range(300)])
def pc_many(config: PcMany) -> int:
    return config.i


def test_a_planned_test_leaves_three_objects_for_the_collector() -> None:
    # Ten thousand planned tests are walked by every full garbage collection after them, and
    # what they allocate decides how soon the next one comes (a full collection over a
    # suite of that size is a tenth of a second). What stays per test: its instance (an
    # object and its attribute dict) and its instances by name; what it allocates besides:
    # its config's JSON dump. The memos are keyed by ints and bytes, an instance without
    # upstream or gathers shares one empty dict for both, the manifest waits until read.
    import gc

    spec = registry.get("pc_many")
    assert spec is not None
    assert spec.params is not None
    items = [FakeItem(["pc_many"], {"pc_many": c}) for c in spec.params]
    Planner(registry=registry).for_item(items[0])  # type: ignore[arg-type]  # fingerprints
    planner = Planner(registry=registry)
    gc.collect()
    before = len(gc.get_objects())
    gc.disable()
    try:
        start = gc.get_count()[0]
        found = [planner.for_item(item) for item in items]  # type: ignore[arg-type]
        allocated = gc.get_count()[0] - start  # net: what was freed since is not counted
    finally:
        gc.enable()
    gc.collect()
    kept = len(gc.get_objects()) - before
    assert len({needed["pc_many"].key for needed in found}) == len(items)
    assert kept <= 3 * len(items) + 50, kept / len(items)
    assert allocated <= 4 * len(items) + 50, allocated / len(items)
    first, second = found[0]["pc_many"], found[1]["pc_many"]
    assert first.gathered is second.gathered == {}
    assert first.upstream is second.upstream == {}


PLAN_PROBE = """
import sys

def pytest_sessionfinish(session):
    names = sorted(n for n in sys.modules if n.startswith("pytest_physpipe"))
    with open("plan-modules.txt", "w") as handle:
        handle.write("\\n".join(names))
"""


def test_a_plan_of_stored_instances_imports_no_store_nor_runner(pytester: pytest.Pytester) -> None:
    # Each module a run imports costs it time: a plan decides statuses from the store's
    # layout, and makes neither the store, the codecs nor the runner a run needs.
    pytester.makeconftest(
        """
        from pytest_physpipe import StageConfig, stage

        class PcStored(StageConfig):
            i: int = 0

        @stage(params=[PcStored(i=i) for i in range(3)])
        def pc_stored(config: PcStored) -> int:
            return config.i
        """
    )
    pytester.makepyfile(test_stored="def test_point(pc_stored):\n    assert pc_stored >= 0\n")
    pytester.makepyfile(plan_probe=PLAN_PROBE)
    pytester.runpytest_subprocess().assert_outcomes(passed=3)
    result = pytester.runpytest_subprocess("--physpipe-plan", "-p", "plan_probe")
    result.stdout.fnmatch_lines(["3 stage instance(s): 3 cached*"])
    imported = (pytester.path / "plan-modules.txt").read_text().split()
    assert "pytest_physpipe.plan" in imported
    for module in ("store.entries", "store.codecs", "execute", "records", "readahead"):
        assert f"pytest_physpipe.{module}" not in imported

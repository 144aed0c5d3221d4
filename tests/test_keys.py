"""Provenance keys: same declaration → same key (across processes too); any change → new key."""

from __future__ import annotations

import dataclasses
import importlib
import json
import linecache
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict

from pytest_physpipe import keys
from pytest_physpipe.codefp import fingerprint, fingerprint_source
from pytest_physpipe.errors import ConfigError
from pytest_physpipe.models import StageConfig
from pytest_physpipe.plan import Planner
from pytest_physpipe.stage import StageSpec, registry

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- stage_key as a pure function -----------------------------------------------------------------

hexkey = st.text("0123456789abcdef", min_size=32, max_size=32)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_data = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
FIELDS = ("name", "qualname", "code", "version", "config_class", "config", "inputs",
          "upstream", "packages", "salt")  # fmt: skip
declarations = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=10),
        "qualname": st.text(min_size=1, max_size=10),
        "code": hexkey,
        "version": st.none() | st.integers(0, 5) | st.text(max_size=3),
        "config_class": st.none() | st.text(max_size=10),
        "config": st.dictionaries(st.text(max_size=5), json_data, max_size=3),
        "inputs": st.dictionaries(st.text(max_size=5), hexkey, max_size=2),
        "upstream": st.dictionaries(st.text(max_size=5), hexkey, max_size=3),
        "packages": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        "salt": st.text(max_size=6),
    }
)


@FAST
@given(declarations)
def test_stage_key_is_deterministic_and_well_formed(decl: dict[str, Any]) -> None:
    key = keys.stage_key(**decl)
    assert keys.KEY_PATTERN.match(key)
    # A deep copy with dicts rebuilt in reverse order: insertion order must not matter.
    shuffled = {k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v
                for k, v in decl.items()}  # fmt: skip
    assert keys.stage_key(**shuffled) == key  # type: ignore[arg-type]
    seed = keys.seed_from_key(key)
    assert 0 <= seed < 2**63
    assert seed == keys.seed_from_key(key)


@FAST
@given(declarations, declarations, st.sampled_from(FIELDS))
def test_changing_any_field_changes_the_key(
    decl: dict[str, Any], other: dict[str, Any], field: str
) -> None:
    changed = {**decl, field: other[field]}
    assume(keys.canonical(changed[field]) != keys.canonical(decl[field]))
    assert keys.stage_key(**changed) != keys.stage_key(**decl)


@FAST
@given(declarations)
def test_key_template_gives_stage_key_byte_for_byte(decl: dict[str, Any]) -> None:
    fixed = {k: v for k, v in decl.items() if k not in ("config", "inputs", "upstream")}
    template = keys.KeyTemplate(**fixed)
    composed = template.key(keys.canonical(decl["config"]), decl["inputs"], decl["upstream"])
    assert composed == keys.stage_key(**decl)
    # A sweep's usual instance: no inputs, nothing upstream.
    plain = template.plain_key(keys.canonical(decl["config"]))
    assert plain == keys.stage_key(**{**decl, "inputs": {}, "upstream": {}})


@FAST
@given(json_data)
def test_canonical_is_the_sorted_compact_json_dump(value: Any) -> None:
    expected = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode()
    assert keys.canonical(value) == expected
    assert (
        keys.canonical({"b": value, "a": [value]})
        == b'{"a":[' + expected + b'],"b":' + expected + b"}"
    )


def test_version_1_and_string_1_are_different_keys() -> None:
    base: dict[str, Any] = {
        "name": "s", "qualname": "s", "code": "0" * 32, "version": 1, "config_class": None,
        "config": {}, "inputs": {}, "upstream": {}, "packages": {}, "salt": "",
    }  # fmt: skip
    assert keys.stage_key(**base) != keys.stage_key(**{**base, "version": "1"})
    assert keys.stage_key(**base) != keys.stage_key(**{**base, "version": None})


# -- the Planner on real stages -------------------------------------------------------------------

STAGES = """
from pytest_physpipe import stage, StageConfig

class KConfig(StageConfig):
    n: int = 8
    length: float = 1.0
    tags: frozenset[str] = frozenset({{"alpha", "beta", "gamma", "delta", "epsilon"}})

@stage(name="{up}")
def {up}(config: KConfig) -> list:
    return [config.n] * 3

@stage(name="{down}", version=1)
def {down}({up}: list) -> int:
    return sum({up})
"""

KEY_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import importlib
mod = importlib.import_module(sys.argv[2])
from pytest_physpipe.plan import Planner
from pytest_physpipe.stage import registry
planner = Planner(registry=registry, packages={"numpy": "1.0"}, salt="s")
up = registry.get(sys.argv[3])
down = registry.get(sys.argv[4])
k_up = planner.instance(up, planner.resolve_config(up), {}).key
k_down = planner.instance(down, None, {sys.argv[3]: k_up}).key
print(k_up, k_down)
"""


@pytest.fixture
def stage_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str, Path]:
    """A module declaring two stages with unique names; (module, up, down, folder)."""
    tag = uuid.uuid4().hex[:8]
    module, up, down = f"keystages_{tag}", f"kup_{tag}", f"kdown_{tag}"
    (tmp_path / f"{module}.py").write_text(STAGES.format(up=up, down=down))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(module)
    return module, up, down, tmp_path


def _spec(name: str) -> StageSpec:
    spec = registry.get(name)
    assert spec is not None
    return spec


def _keys(planner: Planner, up: str, down: str) -> tuple[str, str]:
    spec_up, spec_down = _spec(up), _spec(down)
    k_up = planner.instance(spec_up, planner.resolve_config(spec_up), {}).key
    return k_up, planner.instance(spec_down, None, {up: k_up}).key


def test_same_declaration_same_key_across_processes_and_hash_seeds(
    stage_module: tuple[str, str, str, Path],
) -> None:
    module, up, down, folder = stage_module
    here = _keys(Planner(registry=registry, packages={"numpy": "1.0"}, salt="s"), up, down)
    # A second Planner in this process agrees (no per-instance state leaks into keys).
    assert _keys(Planner(registry=registry, packages={"numpy": "1.0"}, salt="s"), up, down) == here
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run(
            [sys.executable, "-c", KEY_SCRIPT, str(folder), module, up, down],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.split()
        # The config holds a frozenset of strings, whose order varies with the hash seed.
        assert tuple(out) == here, f"PYTHONHASHSEED={seed}"


def test_every_declared_input_changes_the_key(
    stage_module: tuple[str, str, str, Path],
) -> None:
    _module, up, down, _folder = stage_module
    planner = Planner(registry=registry, packages={"numpy": "1.0"}, salt="s")
    spec_up, spec_down = _spec(up), _spec(down)
    config = planner.resolve_config(spec_up)
    assert config is not None
    base_up, base_down = _keys(planner, up, down)
    seen = {base_up, base_down}

    def check(key: str) -> None:
        assert key not in seen
        seen.add(key)

    cfg_class: Any = type(config)
    check(planner.instance(spec_up, cfg_class(n=9), {}).key)
    check(planner.instance(spec_up, cfg_class(length=1.5), {}).key)
    check(planner.instance(spec_up, cfg_class(tags=frozenset({"alpha"})), {}).key)
    check(planner.instance(dataclasses.replace(spec_up, name="renamed"), config, {}).key)
    check(planner.instance(dataclasses.replace(spec_down, version=2), None, {up: base_up}).key)
    check(planner.instance(spec_down, None, {up: "f" * 32}).key)
    edited = dataclasses.replace(spec_up)
    edited.__dict__["code"] = "0" * 32  # the cached fingerprint, as if the function changed
    check(planner.instance(edited, config, {}).key)
    for other in (
        Planner(registry=registry, packages={"numpy": "2.0"}, salt="s"),
        Planner(registry=registry, packages={"numpy": "1.0", "scipy": "1.0"}, salt="s"),
        Planner(registry=registry, packages={"numpy": "1.0"}, salt="t"),
    ):
        check(_keys(other, up, down)[0])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    n=st.integers(-(2**70), 2**70),
    length=st.floats(allow_nan=False),
    n2=st.integers(-(2**70), 2**70),
    length2=st.floats(allow_nan=False),
)
def test_config_key_equal_iff_config_json_equal(
    stage_module: tuple[str, str, str, Path], n: int, length: float, n2: int, length2: float
) -> None:
    spec = _spec(stage_module[1])
    cls = spec.config_class
    assert cls is not None
    planner = Planner(registry=registry)
    a, b = cls(n=n, length=length), cls(n=n2, length=length2)  # type: ignore[call-arg]
    same = keys.canonical(keys.config_json(a)) == keys.canonical(keys.config_json(b))
    assert (planner.instance(spec, a, {}).key == planner.instance(spec, b, {}).key) == same


def test_input_file_content_is_hashed(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    source = textwrap.dedent(
        f"""
        from pytest_physpipe import stage, StageConfig, InputFile

        class FConfig(StageConfig):
            data: InputFile = "data.txt"

        @stage(name="reader_{tag}")
        def reader_{tag}(config: FConfig) -> str:
            return config.data.read_text()
        """
    )
    module = _import_source(tmp_path, f"inputstages_{tag}", source)
    assert module is not None
    spec = _spec(f"reader_{tag}")
    data = tmp_path / "data.txt"

    def key() -> str:
        planner = Planner(registry=registry, rootdir=tmp_path)  # fresh memo per "run"
        return planner.instance(spec, planner.resolve_config(spec), {}).key

    data.write_text("1.0 2.0 3.0\n")
    first = key()
    data.write_text("1.0 2.0 3.0\n")  # rewritten, same content
    os.utime(data, ns=(1_000_000_000, 1_000_000_000))
    assert key() == first
    data.write_text("1.0 2.0 3.5 4.0\n")
    edited = key()
    assert edited != first
    data.write_text("1.0 2.0 3.0\n")
    assert key() == first
    data.unlink()
    with pytest.raises(ConfigError, match=r"no file at .*data\.txt"):
        key()


# -- code fingerprints ----------------------------------------------------------------------------

BODY = [
    ("x = config.n * 2", "x = config.n * 3"),
    ("y = np.sum(grid) + x", "y = np.sum(grid) - x"),
    ("if y > 1.0:", "if y >= 1.0:"),
    ("    y = y / 2", "    y = y / 2.5"),
    ("return {'y': y, 'x': x}", "return {'y': y, 'x': -x}"),
]


def _render(
    decorator: str, docstring: bool, comments: bool, blank: bool, spaced: bool, edit: int | None
) -> str:
    lines = [decorator, "def heat(grid, config):"]
    if docstring:
        lines.append('    """Heat it up.\n\n    Long description."""')
    for index, (plain, changed) in enumerate(BODY):
        text = changed if index == edit else plain
        if spaced:
            text = text.replace(" * ", "*").replace(" + ", "+").replace("{'y': y", "{'y':y")
        if comments:
            lines.append("    # why: physics")
        lines.append("    " + text + ("  # trailing" if comments else ""))
        if blank:
            lines.append("")
    return "\n".join(lines) + "\n"


decorators = st.sampled_from(
    [
        "@stage",
        "@stage()",
        "@stage(version=1)",
        "@stage(resources=Resources(cpu=4), slow=True, retries=2)",
        "@stage(\n    cache=False,\n    codec='npy',\n)",
    ]
)


@FAST
@given(decorators, decorators, st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_fingerprint_ignores_comments_docstrings_formatting_and_decorators(
    deco_a: str, deco_b: str, docstring: bool, comments: bool, blank: bool, spaced: bool
) -> None:
    plain = _render(deco_a, False, False, False, False, None)
    variant = _render(deco_b, docstring, comments, blank, spaced, None)
    assert fingerprint_source(variant) == fingerprint_source(plain)
    # Indented source (a method or nested function) fingerprints the same.
    assert fingerprint_source(textwrap.indent(variant, "    ")) == fingerprint_source(plain)


@FAST
@given(st.integers(0, len(BODY) - 1), decorators, st.booleans(), st.booleans())
def test_fingerprint_changes_with_any_edited_expression(
    edit: int, decorator: str, docstring: bool, comments: bool
) -> None:
    plain = _render("@stage", False, False, False, False, None)
    edited = _render(decorator, docstring, comments, False, False, edit)
    assert fingerprint_source(edited) != fingerprint_source(plain)


def test_docstring_only_body_equals_pass() -> None:
    assert fingerprint_source("def f():\n    'doc'\n") == fingerprint_source("def f():\n    pass\n")
    assert fingerprint_source("def f():\n    return 1\n") != fingerprint_source(
        "def f():\n    return 2\n"
    )


TRACKED = '''



def helper(x):
    """Helper docstring."""
    return {helper_body}


# a comment
@stage(name="{name}", track=[helper])
def {name}():
    return helper(1.0)
'''


def _import_source(folder: Path, module: str, source: str) -> ModuleType:
    """Import ``source`` as ``module`` afresh (a new module object, as in a new process)."""
    path = folder / f"{module}.py"
    path.write_text(source)
    sys.modules.pop(module, None)
    linecache.clearcache()  # same path, new text: inspect.getsource must see the new one
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(folder))


def test_tracked_helpers_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    module, name = f"tracked_{tag}", f"tracked_stage_{tag}"
    header = "from pytest_physpipe import stage\n"

    def code(helper_body: str, extra: str = "") -> str:
        source = header + TRACKED.format(helper_body=helper_body, name=name) + extra
        _import_source(tmp_path, module, source)
        return _spec(name).code

    try:
        base = code("x * 2")
        assert code("x  *  2 # spaced and commented") == base
        assert code("x * 2", extra="\n\ndef unrelated():\n    return 3\n") == base
        assert code("x * 3") != base
        assert code("x ** 2") != base
    finally:
        sys.modules.pop(module, None)


def test_tracked_module_counts_whole(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"helpers_{tag}"

    def fp(source: str) -> str:
        mod = _import_source(tmp_path, name, source)
        return fingerprint(_plain_function, track=[mod])

    try:
        base = fp("A = 1.0\n\n\ndef f(x):\n    return x * A\n")
        assert fp("# comment\nA = 1.0\n\n\ndef f(x):\n    '''doc'''\n    return x * A\n") == base
        assert fp("A = 1.5\n\n\ndef f(x):\n    return x * A\n") != base
        assert fp("A = 1.0\n\n\ndef f(x):\n    return x / A\n") != base
    finally:
        sys.modules.pop(name, None)
    assert fingerprint(_plain_function) != base  # tracking adds to the key


def _plain_function() -> int:
    return 1


def test_function_without_source_is_fingerprinted_by_bytecode() -> None:
    namespace: dict[str, Callable[[], int]] = {}
    exec("def made():\n    return 41 + 1\n", namespace)  # no file: inspect cannot find source
    with pytest.warns(UserWarning, match="no source"):
        first = fingerprint(namespace["made"])
    exec("def made():\n    return 41 + 2\n", namespace)
    with pytest.warns(UserWarning, match="no source"):
        assert fingerprint(namespace["made"]) != first


# -- configs faithful to types --------------------------------------------------------------------


class AnyConfig(StageConfig):
    value: Any = None


def _identity(value: Any) -> bytes:
    return keys.canonical(keys.config_identity(AnyConfig(value=value)))


def _strictly_equal(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (``1 == 1.0 == True`` are not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_strictly_equal, a, b))
    if isinstance(a, dict):
        pairs_b = list(b.items())
        return len(a) == len(b) and all(
            any(_strictly_equal(k, kb) and _strictly_equal(v, vb) for kb, vb in pairs_b)
            for k, v in a.items()
        )
    return bool(a == b)


scalar = (
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-3, 3) | st.text("1a", max_size=2)
)
hashable = st.recursive(scalar, lambda inner: st.tuples(inner, inner), max_leaves=3)
typed_values = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(hashable, inner, max_size=3)
    ),
    max_leaves=6,
)


@FAST
@given(typed_values, typed_values)
def test_config_identity_is_faithful_to_types(a: Any, b: Any) -> None:
    assert _identity(a) == _identity(a)
    assert (_identity(a) == _identity(b)) == _strictly_equal(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({1: "v"}, {"1": "v"}),
        ({True: "v"}, {1: "v"}),
        ((1, 2), [1, 2]),
        (1, 1.0),
        (1, True),
        (1.0, True),
        ({"a": (1,)}, {"a": [1]}),
        (b"1", "1"),
        (frozenset({1}), [1]),
    ],
    ids=repr,
)
def test_look_alike_configs_get_distinct_keys(a: Any, b: Any) -> None:
    assert _identity(a) != _identity(b)


def test_plain_configs_keep_their_json_encoding() -> None:
    # Ordinary configs (str-keyed dicts, lists, numbers) are keyed as before: no invalidation.
    config = AnyConfig(value={"a": [1, 2.5, None, "x", True]})
    assert keys.config_identity(config) == keys.config_json(config)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(object(), "Unable to serialize"), (b"\xff\xfe", "UTF-8|utf-8")],
    ids=["object", "non-utf8-bytes"],
)
def test_unencodable_field_is_named(value: Any, reason: str) -> None:
    class Holder(StageConfig):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        n: int = 1
        blob: Any = None

    with pytest.raises(keys.UnencodableField, match=reason) as info:
        keys.config_identity(Holder(blob=value))
    assert info.value.field == "blob"


@FAST
@given(json_data)
def test_configs_are_encoded_from_what_model_dump_gives(value: Any) -> None:
    # The plan dumps through the model's serializer directly; the result is model_dump's.
    config = AnyConfig(value=value)
    assert keys.config_json(config) == config.model_dump(mode="json")
    assert keys.config_encodings(config)[0] == config.model_dump(mode="json")


def test_a_config_class_overriding_model_dump_is_keyed_through_it() -> None:
    class Plain(StageConfig):
        n: int = 1

    class Scaled(StageConfig):
        n: int = 1

        def model_dump(self, **kwargs: Any) -> dict[str, Any]:
            return {**super().model_dump(**kwargs), "scaled": self.n * 10}

    assert keys.config_encodings(Plain(n=2)) == ({"n": 2}, {"n": 2})
    assert keys.config_encodings(Scaled(n=2)) == ({"n": 2, "scaled": 20},) * 2

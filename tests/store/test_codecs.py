"""Codecs: every built-in codec round-trips what it accepts, exactly, read-only, typed."""

from __future__ import annotations

import enum
import json
import math
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from physpipe_testing import json_leaves, json_values
from pydantic import BaseModel

from pytest_physpipe.errors import CodecError, CorruptEntryError, UnstorableValueError
from pytest_physpipe.store.codecs import (
    CodecRegistry,
    JsonCodec,
    NpyCodec,
    PickleCodec,
    TreeCodec,
    load_secret,
)
from pytest_physpipe.store.signing import Signer

FAST = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def roundtrip(codec: Any, value: object, base: Path, *, mmap_min: int = 1 << 20) -> object:
    dest = base / uuid.uuid4().hex
    dest.mkdir()
    meta = codec.encode(value, dest)
    json.dumps(meta)  # codec metadata goes into meta.json
    return codec.decode(dest, json.loads(json.dumps(meta)), mmap_min=mmap_min)


def same(a: object, b: object) -> bool:
    """Deep equality that also checks types, dtypes, shapes and NaN positions."""
    if type(a) is not type(b) and not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and (
                np.array_equal(a, b, equal_nan=True)
                if a.dtype.kind in "fc"
                else np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
            )
        )
    if isinstance(a, np.generic):
        assert isinstance(b, np.generic)
        return same(np.asarray(a), np.asarray(b))  # long double has padding: values, not bytes
    if isinstance(a, float | complex):
        return repr(a) == repr(b)  # NaN == NaN, -0.0 != 0.0
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


# -- npy ------------------------------------------------------------------------------------------

dtypes = (
    hnp.boolean_dtypes()
    | hnp.integer_dtypes(endianness="=")
    | hnp.integer_dtypes(endianness=">")
    | hnp.unsigned_integer_dtypes(endianness="?")
    | hnp.floating_dtypes(endianness="?")
    | hnp.complex_number_dtypes(endianness="?")
    | hnp.datetime64_dtypes()
    | hnp.byte_string_dtypes(max_len=4)
    | hnp.unicode_string_dtypes(max_len=4)
)
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))


@FAST
@given(arrays, st.sampled_from([0, 1 << 30]), st.booleans())
def test_npy_roundtrip(
    tmp_path: Path, array: np.ndarray[Any, Any], mmap_min: int, strided: bool
) -> None:
    if strided and array.ndim:
        array = array[::-1]  # a negative-stride view, not contiguous
    if strided and array.ndim > 1:
        array = array.T
    assert NpyCodec().accepts(array)
    out = roundtrip(NpyCodec(), array, tmp_path, mmap_min=mmap_min)
    assert isinstance(out, np.ndarray)
    assert same(array, out)
    assert not out.flags.writeable
    assert isinstance(out, np.memmap) == (mmap_min == 0)


def test_npy_large_is_memory_mapped_not_copied(tmp_path: Path) -> None:
    array = np.arange(300_000, dtype=">f8")
    out = roundtrip(NpyCodec(), array, tmp_path, mmap_min=1 << 20)
    assert isinstance(out, np.memmap)
    assert out.filename is not None
    assert Path(out.filename).name == "value.npy"
    assert not out.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        out[0] = 1.0
    small = roundtrip(NpyCodec(), array[:10], tmp_path, mmap_min=1 << 20)
    assert not isinstance(small, np.memmap)
    assert not small.flags.writeable  # type: ignore[attr-defined]


def test_npy_refuses_object_arrays(tmp_path: Path) -> None:
    value = np.array([{"a": 1}, None], dtype=object)
    assert not NpyCodec().accepts(value)
    with pytest.raises(CodecError, match="npy"):
        NpyCodec().encode(value, tmp_path)
    with pytest.raises(CodecError):
        NpyCodec().encode([1, 2], tmp_path)


# -- json -----------------------------------------------------------------------------------------

leaves = json_leaves()


@FAST
@given(json_values(20))
def test_json_roundtrip(tmp_path: Path, value: object) -> None:
    assert JsonCodec().accepts(value)
    assert same(value, roundtrip(JsonCodec(), value, tmp_path))


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {1: "a"},
        np.float64(1.0),
        np.int64(3),
        [np.str_("x")],
        {"a": {"b": np.arange(2)}},
        Level.LOW,
        1j,
    ],
    ids=repr,
)
def test_json_refuses_what_it_would_not_give_back(value: object) -> None:
    assert not JsonCodec().accepts(value)


# -- tree -----------------------------------------------------------------------------------------


class Inner(BaseModel):
    x: float
    tags: tuple[str, ...] = ()


class Outer(BaseModel):
    name: str
    inner: Inner
    values: list[int]


scalar_dtypes = st.sampled_from(
    ["bool", "i1", "i8", "u8", "f2", "f4", "f8", "c8", "c16", "longdouble", "clongdouble"]
)


@st.composite
def numpy_scalars(draw: st.DrawFn) -> np.generic:
    dtype = np.dtype(draw(scalar_dtypes))
    array = draw(hnp.arrays(dtype, ()))
    scalar: np.generic = array[()]  # type: ignore[assignment]  # numpy types () as an array
    return scalar


small_arrays = hnp.arrays(
    hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4)
)
models = st.builds(
    Outer,
    name=st.text(max_size=5),
    inner=st.builds(Inner, x=st.floats(allow_nan=False), tags=st.tuples(st.text(max_size=3))),
    values=st.lists(st.integers(-(2**40), 2**40), max_size=3),
)
tree_leaves = leaves | numpy_scalars() | st.complex_numbers() | small_arrays | models
hashable_keys = (
    st.text(max_size=5)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.none()
    | st.tuples(st.integers(), st.text(max_size=3))
    | st.just("__physpipe__")
)
tree_values = st.recursive(
    tree_leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4) | st.just("__physpipe__"), inner, max_size=3)
        | st.dictionaries(hashable_keys, inner, max_size=3)
    ),
    max_leaves=12,
)


@FAST
@given(tree_values, st.sampled_from([0, 1 << 30]))
def test_tree_roundtrip(tmp_path: Path, value: object, mmap_min: int) -> None:
    assert TreeCodec().accepts(value)
    out = roundtrip(TreeCodec(), value, tmp_path, mmap_min=mmap_min)
    assert same(value, out), (value, out)
    _assert_arrays_readonly(out)


def _assert_arrays_readonly(value: object) -> None:
    if isinstance(value, np.ndarray):
        assert not value.flags.writeable
    elif isinstance(value, list | tuple):
        for item in value:
            _assert_arrays_readonly(item)
    elif isinstance(value, dict):
        for item in value.values():
            _assert_arrays_readonly(item)


def test_tree_tag_key_and_tag_lookalikes_stay_data(tmp_path: Path) -> None:
    value = {
        "__physpipe__": "ndarray",
        "file": "../../etc/passwd",
        "nested": {"__physpipe__": "model", "class": "os:system", "data": "rm"},
    }
    out = roundtrip(TreeCodec(), {"v": value, "a": np.ones(2)}, tmp_path)
    assert same({"v": value, "a": np.ones(2)}, out)


def test_tree_refuses_hostile_skeletons(tmp_path: Path) -> None:
    (tmp_path / "tree.json").write_text(json.dumps({"__physpipe__": "ndarray", "file": "../x"}))
    with pytest.raises(CorruptEntryError, match="outside"):
        TreeCodec().decode(tmp_path, {}, mmap_min=0)
    hostile = json.dumps({"__physpipe__": "model", "class": "os:system", "data": {}})
    (tmp_path / "tree.json").write_text(hostile)
    with pytest.raises(CorruptEntryError, match="not signed"):  # nothing imported
        TreeCodec().decode(tmp_path, {}, mmap_min=0)
    signature = Signer().sign(hostile.encode())  # even signed, only model classes load
    with pytest.raises(CorruptEntryError, match="not a pydantic model"):
        TreeCodec().decode(tmp_path, signature, mmap_min=0)
    (tmp_path / "tree.json").write_text(json.dumps({"__physpipe__": "exec", "code": "1"}))
    with pytest.raises(CorruptEntryError, match="unknown node tag"):
        TreeCodec().decode(tmp_path, {}, mmap_min=0)


def test_tree_large_arrays_are_memory_mapped(tmp_path: Path) -> None:
    value = {"big": np.zeros(200_000), "small": np.zeros(3)}
    out = roundtrip(TreeCodec(), value, tmp_path, mmap_min=1 << 20)
    assert isinstance(out, dict)
    assert isinstance(out["big"], np.memmap)
    assert not isinstance(out["small"], np.memmap)


@pytest.mark.parametrize(
    "value",
    [
        {"f": lambda: 1},
        [object()],
        (np.array([None]),),
        {frozenset({1}): 1},
        np.datetime64("2020-01-01"),
    ],
    ids=["lambda", "object", "object-array", "frozenset-key", "datetime64-scalar"],
)
def test_tree_refuses_what_it_cannot_describe(tmp_path: Path, value: object) -> None:
    assert not TreeCodec().accepts(value)
    with pytest.raises(CodecError, match="tree codec cannot store"):
        TreeCodec().encode(value, tmp_path)


# -- pickle ---------------------------------------------------------------------------------------


class Opaque:
    def __init__(self, payload: object) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and same(self.payload, other.payload)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Test ids use repr: xdist workers must all derive the same id (no memory address).
        return f"Opaque({self.payload!r})"


@pytest.fixture(scope="module", autouse=True)
def _private_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Signed codecs here use a throwaway per-user secret, never the real one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PHYSPIPE_SECRET", raising=False)
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
        yield


@pytest.fixture
def secret_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("PHYSPIPE_SECRET", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "pytest-physpipe" / "secret"


def test_secret_file_is_created_owner_only_and_reused(secret_home: Path) -> None:
    first = load_secret()
    assert secret_home.is_file()
    assert stat.S_IMODE(secret_home.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_home.parent.stat().st_mode) & 0o077 == 0
    assert len(first) >= 32
    assert load_secret() == first


def test_env_secret_wins(secret_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHYSPIPE_SECRET", "s3cret-0123456789abcdef")
    assert load_secret() == b"s3cret-0123456789abcdef"
    assert not secret_home.exists()


# numpy drops the byte order of big-endian datetime64/timedelta64 when pickling: not ours.
pickle_values = st.recursive(
    leaves
    | numpy_scalars()
    | st.complex_numbers()
    | models
    | hnp.arrays(
        hnp.scalar_dtypes().filter(lambda d: d.kind not in "mM" or d.isnative), hnp.array_shapes()
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hashable_keys, inner, max_size=3),
    max_leaves=8,
)


@FAST
@given(pickle_values)
def test_pickle_roundtrip(tmp_path: Path, secret_home: Path, value: object) -> None:
    wrapped = Opaque(value)
    assert same(wrapped.payload, roundtrip(PickleCodec(), wrapped, tmp_path).payload)  # type: ignore[attr-defined]


def _pickled(tmp_path: Path, value: object) -> tuple[Path, dict[str, Any]]:
    dest = tmp_path / uuid.uuid4().hex
    dest.mkdir()
    return dest, PickleCodec().encode(value, dest)


def test_pickle_refused_with_another_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHYSPIPE_SECRET", "alice-0123456789abcdef")
    dest, meta = _pickled(tmp_path, Opaque(42))
    assert PickleCodec().decode(dest, meta, mmap_min=0) == Opaque(42)
    monkeypatch.setenv("PHYSPIPE_SECRET", "mallory-0123456789abcdef")
    with pytest.raises(CorruptEntryError, match="signed with another secret"):
        PickleCodec().decode(dest, meta, mmap_min=0)


class Boom:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch pwned",))  # never to be run


def test_pickle_tampered_payload_is_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHYSPIPE_SECRET", "alice-0123456789abcdef")
    monkeypatch.chdir(tmp_path)
    dest, meta = _pickled(tmp_path, Opaque([1, 2, 3]))
    payload = dest / "value.pkl"
    honest = payload.read_bytes()
    # Swap in a malicious pickle, keeping the HMAC of the honest one.
    import pickle

    payload.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CorruptEntryError, match="refused"):
        PickleCodec().decode(dest, meta, mmap_min=0)
    assert not (tmp_path / "pwned").exists()
    # One flipped byte, and a missing HMAC, are refused as well.
    payload.write_bytes(honest[:-1] + bytes([honest[-1] ^ 1]))
    with pytest.raises(CorruptEntryError):
        PickleCodec().decode(dest, meta, mmap_min=0)
    payload.write_bytes(honest)
    with pytest.raises(CorruptEntryError):
        PickleCodec().decode(dest, {}, mmap_min=0)
    assert PickleCodec().decode(dest, meta, mmap_min=0) == Opaque([1, 2, 3])


def test_pickle_encode_failure_is_a_codec_error(tmp_path: Path, secret_home: Path) -> None:
    with pytest.raises(CodecError, match="pickling failed"):
        PickleCodec().encode(lambda: 1, tmp_path)


# -- registry: auto order and errors --------------------------------------------------------------


class Special:
    pass


class SpecialCodec:
    name = "special"

    def accepts(self, value: object) -> bool:
        return isinstance(value, Special | list)

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        (dest / "special").write_text("x")
        return {}

    def decode(self, src: Path, meta: Any, *, mmap_min: int) -> object:
        return Special()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.arange(3), "npy"),
        (np.array(1.5), "npy"),
        (np.array([None]), "pickle"),
        ({"a": [1, 2.5, None]}, "json"),
        ([1, "x"], "json"),
        (math.inf, "json"),
        ((1, 2), "tree"),
        ({"a": np.arange(2)}, "tree"),
        (np.float64(2.0), "tree"),
        (1 + 2j, "tree"),
        (Inner(x=1.0), "tree"),
        ({1: "a"}, "tree"),
        (Opaque(1), "pickle"),
        (Level.LOW, "pickle"),
    ],
    ids=repr,
)
def test_auto_choice_order(value: object, expected: str) -> None:
    assert CodecRegistry().choose(value, "auto", stage="s").name == expected


def test_registered_codec_comes_after_builtins_but_before_pickle() -> None:
    registry = CodecRegistry()
    registry.add(SpecialCodec())
    assert "special" in registry.names()
    assert registry.choose(Special(), "auto", stage="s").name == "special"
    assert registry.choose([1, 2], "auto", stage="s").name == "json"  # built-ins first
    assert registry.choose(Opaque(1), "auto", stage="s").name == "pickle"
    with pytest.raises(TypeError, match="Codec protocol"):
        registry.add(object())  # type: ignore[arg-type]


def test_unstorable_value_names_stage_and_type_and_says_what_to_do() -> None:
    with pytest.raises(UnstorableValueError) as info:
        CodecRegistry().choose(Opaque(1), "npy", stage="heat[n=8]")
    message = str(info.value)
    assert "heat[n=8]" in message
    assert "Opaque" in message
    assert "codec=" in message
    assert "cache=False" in message
    with pytest.raises(CodecError, match="no codec named 'nope'"):
        CodecRegistry().choose(1, "nope", stage="s")


def test_unpicklable_value_through_the_plugin_names_stage_and_type(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PHYSPIPE_DIR", raising=False)
    monkeypatch.setenv("PHYSPIPE_SECRET", "k" * 32)
    pytester.makepyfile(
        """
        import threading
        from pytest_physpipe import stage

        @stage
        def solver():
            return {"lock": threading.Lock()}

        def test_it(solver):
            pass
        """
    )
    store = tmp_path / "store"
    result = pytester.runpytest_subprocess(f"--physpipe-dir={store}", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*UnstorableValueError*solver*"])
    output = result.stdout.str()
    assert "lock" in output
    assert "cache=False" in output
    assert not list((store / "entries").rglob("meta.json"))
    assert not list((store / "tmp").iterdir())

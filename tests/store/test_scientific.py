"""Scientific codecs (scipy.sparse, pandas, xarray) and leaves inside trees: round trips.

Each library is optional; its tests skip without it. Values round-trip exactly (type, dtype,
format, index, coordinates), and no payload is a pickle.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pytest_physpipe.errors import CorruptEntryError
from pytest_physpipe.store.codecs import CodecRegistry

sp = pytest.importorskip("scipy.sparse")

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def store_and_load(value: object, base: Path, registry: CodecRegistry | None = None) -> Any:
    """Encode with the codec ``auto`` picks, decode from a fresh folder: (codec, value, files)."""
    registry = registry or CodecRegistry()
    codec = registry.choose(value, "auto", stage="s")
    dest = base / uuid.uuid4().hex
    dest.mkdir()
    meta = json.loads(json.dumps(codec.encode(value, dest)))
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert not any(f.endswith(".pkl") for f in files), files
    return codec.name, codec.decode(dest, meta, mmap_min=1 << 20), files


# -- scipy.sparse ---------------------------------------------------------------------------------

FORMATS = ["csr", "csc", "coo", "bsr", "dia", "lil", "dok"]


@st.composite
def sparse_values(draw: st.DrawFn) -> Any:
    shape = (draw(st.integers(0, 12)), draw(st.integers(0, 12)))
    dtype = draw(st.sampled_from(["float64", "float32", "int32", "complex128", "bool"]))
    dense = draw(
        hnp.arrays(dtype, shape, elements=hnp.from_dtype(np.dtype(dtype), allow_nan=False))
    )
    mask = draw(hnp.arrays(bool, shape))
    dense = np.where(mask, dense, np.zeros((), dtype=dtype))
    fmt = draw(st.sampled_from(FORMATS))
    kind = draw(st.sampled_from(["matrix", "array"]))
    return getattr(sp, f"{fmt}_{kind}")(dense)


@FAST
@given(sparse_values())
def test_sparse_roundtrip(tmp_path: Path, value: Any) -> None:
    name, loaded, files = store_and_load(value, tmp_path)
    assert name == "scipy-sparse"
    assert files == ["value.npz"]
    assert type(loaded) is type(value)
    assert loaded.format == value.format
    assert loaded.dtype == value.dtype
    assert loaded.shape == value.shape
    np.testing.assert_array_equal(loaded.toarray(), value.toarray())


# -- pandas ---------------------------------------------------------------------------------------


def _pandas() -> Any:
    return pytest.importorskip("pandas")


@st.composite
def frames(draw: st.DrawFn) -> Any:
    pd = _pandas()
    rows = draw(st.integers(0, 8))
    columns: dict[Any, Any] = {}
    for i in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["int64", "float64", "bool", "str", "category", "datetime"]))
        name = draw(st.sampled_from([f"c{i}", i]))
        if kind == "str":
            columns[name] = draw(st.lists(st.text(max_size=5), min_size=rows, max_size=rows))
        elif kind == "category":
            labels = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=rows, max_size=rows))
            columns[name] = pd.Categorical(labels)
        elif kind == "datetime":
            days = draw(hnp.arrays("int64", rows, elements=st.integers(0, 10_000)))
            columns[name] = pd.to_datetime(days, unit="D")
        else:
            columns[name] = draw(hnp.arrays(kind, rows))
    if len({type(n) for n in columns}) > 1:  # mixed int/str column names do not sort: keep one
        columns = {str(k): v for k, v in columns.items()}
    index = draw(
        st.sampled_from(
            [
                pd.RangeIndex(rows),
                pd.RangeIndex(10, 10 + 2 * rows, 2, name="step"),
                pd.Index([f"r{i}" for i in range(rows)], name="row"),
                pd.Index(np.arange(rows, dtype="float64") / 2),
            ]
        )
    )
    return pd.DataFrame(columns, index=index)


@FAST
@given(frames())
def test_dataframe_roundtrip(tmp_path: Path, frame: Any) -> None:
    pd = _pandas()
    name, loaded, files = store_and_load(frame, tmp_path)
    assert name == "pandas"
    assert "frame.json" in files
    pd.testing.assert_frame_equal(loaded, frame, check_exact=True, check_index_type=True)
    assert type(loaded.index) is type(frame.index)


@FAST
@given(frames(), st.sampled_from([None, "x", 3]))
def test_series_roundtrip(tmp_path: Path, frame: Any, series_name: Any) -> None:
    pd = _pandas()
    if frame.shape[1] == 0:
        return
    series = frame.iloc[:, 0].rename(series_name)
    name, loaded, _ = store_and_load(series, tmp_path)
    assert name == "pandas"
    pd.testing.assert_series_equal(loaded, series, check_exact=True)


def test_pandas_values_it_cannot_hold_exactly_go_elsewhere(tmp_path: Path) -> None:
    pd = _pandas()
    registry = CodecRegistry()
    codec = registry.get("pandas")
    multi = pd.DataFrame({"a": [1, 2]}, index=pd.MultiIndex.from_tuples([(1, 2), (3, 4)]))
    objects = pd.DataFrame({"a": [object(), object()]})
    tz = pd.DataFrame({"t": pd.date_range("2020", periods=2, tz="UTC")})
    with_attrs = pd.DataFrame({"a": [1]})
    with_attrs.attrs["units"] = object()
    for value in (multi, objects, tz, with_attrs):
        assert not codec.accepts(value)
    assert registry.choose(multi, "auto", stage="s").name == "pickle"


# -- xarray ---------------------------------------------------------------------------------------


@st.composite
def xarrays(draw: st.DrawFn) -> Any:
    xr = pytest.importorskip("xarray")
    nx, ny = draw(st.integers(0, 4)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["float64", "int16", "complex64", "bool"]))
    data = draw(hnp.arrays(dtype, (nx, ny)))
    attrs = draw(st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3)))
    coords: dict[str, Any] = {"x": np.arange(nx) * 0.5}
    if draw(st.booleans()):
        coords["label"] = ("y", [f"l{i}" for i in range(ny)])
    array = xr.DataArray(data, dims=("x", "y"), coords=coords, name="field", attrs=attrs)
    return array.to_dataset() if draw(st.booleans()) else array


@FAST
@given(xarrays())
def test_xarray_roundtrip(tmp_path: Path, value: Any) -> None:
    xr = pytest.importorskip("xarray")
    name, loaded, files = store_and_load(value, tmp_path)
    assert name == "xarray"
    assert "dataset.json" in files
    assert type(loaded) is type(value)
    xr.testing.assert_identical(loaded, value)


# -- leaves in trees ------------------------------------------------------------------------------


class Vec:
    """A plugin's own type, stored by a plugin codec."""

    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vec) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


class VecCodec:
    name = "vec"

    def accepts(self, value: object) -> bool:
        return type(value) is Vec

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        assert isinstance(value, Vec)
        (dest / "vec.json").write_text(json.dumps([value.x, value.y]))
        return {"v": 1}

    def decode(self, src: Path, meta: Any, *, mmap_min: int) -> object:
        assert meta == {"v": 1}
        return Vec(*json.loads((src / "vec.json").read_text()))


@FAST
@given(sparse_values(), st.lists(st.integers(), max_size=3))
def test_a_container_of_scientific_values_stays_a_tree_with_leaves(
    tmp_path: Path, matrix: Any, numbers: list[int]
) -> None:
    registry = CodecRegistry()
    registry.add(VecCodec())
    value = {"K": matrix, "parts": [np.arange(3), Vec(1.0, 2.0), tuple(numbers)], "n": 7}
    name, loaded, files = store_and_load(value, tmp_path, registry)
    assert name == "tree"
    assert "tree.json" in files
    assert any(f.endswith("/value.npz") for f in files)
    assert any(f.endswith("/vec.json") for f in files)
    assert type(loaded["K"]) is type(matrix)
    np.testing.assert_array_equal(loaded["K"].toarray(), matrix.toarray())
    assert loaded["parts"][1] == Vec(1.0, 2.0)
    assert loaded["parts"][2] == tuple(numbers)
    np.testing.assert_array_equal(loaded["parts"][0], np.arange(3))
    assert loaded["n"] == 7


def test_a_top_level_sparse_matrix_is_not_wrapped_in_a_tree(tmp_path: Path) -> None:
    name, _, files = store_and_load(sp.eye(3, format="csr"), tmp_path)
    assert (name, files) == ("scipy-sparse", ["value.npz"])


@pytest.mark.parametrize("leaf", ["pickle", "tree", "nosuch", "../x"])
def test_a_tampered_leaf_is_refused(tmp_path: Path, leaf: str) -> None:
    registry = CodecRegistry()
    tree = registry.get("tree")
    dest = tmp_path / "entry"
    dest.mkdir()
    tree.encode({"K": sp.eye(2, format="csr")}, dest)
    skeleton = json.loads((dest / "tree.json").read_text())
    if leaf == "../x":
        skeleton["K"]["dir"] = leaf
    else:
        skeleton["K"]["codec"] = leaf
    (dest / "tree.json").write_text(json.dumps(skeleton))
    with pytest.raises(CorruptEntryError):
        tree.decode(dest, {}, mmap_min=1 << 20)


def test_a_stage_returning_scientific_values_is_a_hit_without_pickle(
    pytester: pytest.Pytester, calls: Any
) -> None:
    pytest.importorskip("pandas")
    pytester.makepyfile(
        test_sci="""
        import numpy as np
        import pandas as pd
        import scipy.sparse as sp
        from physlog import log
        from pytest_physpipe import stage


        @stage
        def system():
            log("system")
            return {"K": sp.diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(50, 50), format="csr"),
                    "table": pd.DataFrame({"n": np.arange(5), "name": list("abcde")})}


        def test_system(system):
            assert system["K"].nnz == 148
            assert list(system["table"]["name"]) == list("abcde")
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert calls.take() == {"system": 1}
    meta = json.loads(next(pytester.path.glob(".physpipe/entries/*/*/meta.json")).read_text())
    assert meta["codec"] == "tree"
    assert not any(name.endswith(".pkl") for name in meta["files"])
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert calls.take() == {}


def test_sparse_hits_read_the_npz_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fast reader must cover what save_npz writes; scipy's load_npz is only a fallback.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_npz used")

    monkeypatch.setattr(sp, "load_npz", refuse)
    for fmt in ("csr", "csc", "bsr", "dia", "coo"):
        value = sp.random(30, 20, density=0.2, format=fmt, random_state=1)
        _, loaded, _ = store_and_load(value, tmp_path)
        assert loaded.format == fmt
        np.testing.assert_array_equal(loaded.toarray(), value.toarray())

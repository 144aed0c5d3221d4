"""Codecs for scientific values: scipy.sparse, pandas and xarray, stored without pickle.

Each library is optional: a codec accepts a value only when the library is already imported
(a value of its type cannot exist otherwise), so loading the plugin imports none of them.
Every payload is numpy ``.npy``/``.npz`` (read with ``allow_pickle=False``) plus JSON, so
loading an entry never runs code. A value these formats cannot hold exactly (object columns of
anything but strings, a MultiIndex, attrs that are not JSON data, ...) is not accepted: it falls
through to the next codec (in the end, the signed pickle).

- ``scipy-sparse``: any scipy.sparse matrix or array as ``value.npz`` (scipy's own format),
  the original format (``lil``, ``dok``, ...) restored on load;
- ``pandas``: a DataFrame or Series as ``frame.json`` plus one ``.npy`` per column and index;
- ``xarray``: a DataArray or Dataset as ``dataset.json`` plus one ``.npy`` per variable.

These codecs are also *leaves* of the ``tree`` codec: a dict holding a sparse matrix stays a
JSON skeleton with the matrix in its own ``.npz``.
"""

from __future__ import annotations

import importlib
import json
import math
import struct
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_physpipe.errors import CodecError, CorruptEntryError
from pytest_physpipe.store.fileio import is_json_safe

__all__ = ["PandasCodec", "SparseCodec", "XarrayCodec", "scientific_codecs"]

#: Formats scipy's ``save_npz`` writes as they are; the others go through CSR.
_NPZ_FORMATS = ("csr", "csc", "bsr", "dia", "coo")


def _import(name: str) -> Any:
    """Import a module of an optional library (untyped: mypy sees ``Any``)."""
    return importlib.import_module(name)


def _module(name: str) -> Any:
    """The module if something imported it already, else ``None``."""
    return sys.modules.get(name)


def _file(src: Path, name: object) -> Path:
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise CorruptEntryError(f"entry names a payload file outside it: {name!r}")
    return src / name


def _save(array: Any, path: Path) -> None:
    import numpy

    with path.open("wb") as handle:
        numpy.save(handle, array, allow_pickle=False)


def _load(path: Path, mmap_min: int) -> Any:
    """A ``.npy`` payload: memory-mapped (read-only) from ``mmap_min`` bytes, as arrays are."""
    import numpy

    if path.stat().st_size >= mmap_min:
        return numpy.load(path, mmap_mode="r", allow_pickle=False)
    array = numpy.load(path, allow_pickle=False)
    array.flags.writeable = False
    return array


# -- scipy.sparse ---------------------------------------------------------------------------------


class SparseCodec:
    """A scipy.sparse matrix or array as ``value.npz`` (``scipy.sparse.save_npz``)."""

    name = "scipy-sparse"

    def accepts(self, value: object) -> bool:
        sparse = _module("scipy.sparse")
        return (
            sparse is not None and bool(sparse.issparse(value)) and not value.dtype.hasobject  # type: ignore[attr-defined]
        )

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        if not self.accepts(value):
            raise CodecError(f"the scipy-sparse codec stores sparse matrices, not {value!r}")
        sparse = _module("scipy.sparse")
        fmt = str(value.format)  # type: ignore[attr-defined]
        stored = value if fmt in _NPZ_FORMATS else value.tocsr()  # type: ignore[attr-defined]
        with (dest / "value.npz").open("wb") as handle:
            sparse.save_npz(handle, stored, compressed=False)
        return {"format": fmt, "array": bool(isinstance(value, sparse.sparray))}

    def decode(self, src: Path, meta: Mapping[str, Any], *, mmap_min: int) -> object:
        scipy_sparse = _import("scipy.sparse")
        fmt = meta.get("format")
        if not isinstance(fmt, str) or fmt not in (*_NPZ_FORMATS, "lil", "dok"):
            raise CorruptEntryError(f"sparse entry names an unknown format {fmt!r}")
        try:
            loaded = _read_sparse_npz(src / "value.npz", scipy_sparse)
        except _NotExact:
            # Not the layout save_npz wrote here; scipy's reader (allow_pickle=False) decides.
            loaded = scipy_sparse.load_npz(src / "value.npz")
        if loaded.format != fmt:
            loaded = loaded.asformat(fmt)
        if bool(meta.get("array")) != isinstance(loaded, scipy_sparse.sparray):
            kind = "array" if meta.get("array") else "matrix"
            loaded = getattr(scipy_sparse, f"{fmt}_{kind}")(loaded)
        return loaded


#: What ``save_npz`` writes per format, besides ``format``, ``shape`` and ``_is_array``.
_SPARSE_PARTS = {
    "csr": ("data", "indices", "indptr"),
    "csc": ("data", "indices", "indptr"),
    "bsr": ("data", "indices", "indptr"),
    "dia": ("data", "offsets"),
    "coo": ("data", "row", "col"),
}


def _read_sparse_npz(path: Path, scipy_sparse: Any) -> Any:
    """A matrix from an uncompressed ``save_npz`` file, its arrays read straight from their
    offsets in the zip: ``load_npz`` streams each member through zipfile's CRC check, several
    times slower; the store's own checksums cover the file."""
    arrays = _read_npz(path)
    fmt = bytes(arrays.get("format", b"")).decode("ascii", "replace")
    parts = _SPARSE_PARTS.get(fmt)
    if parts is None or "shape" not in arrays or not all(p in arrays for p in parts):
        raise _NotExact(f"npz layout {sorted(arrays)}")
    shape = tuple(int(n) for n in arrays["shape"])
    kind = "array" if bool(arrays.get("_is_array", False)) else "matrix"
    cls = getattr(scipy_sparse, f"{fmt}_{kind}")
    data = arrays["data"]
    if fmt == "dia":
        return cls((data, arrays["offsets"]), shape=shape)
    if fmt == "coo":
        return cls((data, (arrays["row"], arrays["col"])), shape=shape)
    return cls((data, arrays["indices"], arrays["indptr"]), shape=shape)


def _read_npz(path: Path) -> dict[str, Any]:
    """The arrays of an uncompressed ``.npz`` (each a writable copy), or :class:`_NotExact`."""
    import numpy

    npy = numpy.lib.format
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    arrays: dict[str, Any] = {}
    with path.open("rb") as handle:
        for member in members:
            if member.compress_type != zipfile.ZIP_STORED or not member.filename.endswith(".npy"):
                raise _NotExact(member.filename)
            handle.seek(member.header_offset)
            local = handle.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise CorruptEntryError(f"{path.name}: bad zip member header")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            handle.seek(member.header_offset + 30 + name_length + extra_length)
            version = npy.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = npy.read_array_header_2_0(handle)
            if dtype.hasobject:
                raise CorruptEntryError(f"{path.name}: an object array (would need pickle)")
            count = math.prod(shape)
            array = numpy.fromfile(handle, dtype=dtype, count=count)
            if array.size != count:
                raise CorruptEntryError(f"{path.name}: {member.filename} is truncated")
            arrays[member.filename[:-4]] = array.reshape(shape, order="F" if fortran else "C")
    return arrays


# -- pandas ---------------------------------------------------------------------------------------


class _NotExact(Exception):
    """This value has a part the format cannot hold exactly."""


def _column(values: Any, files: list[Any]) -> dict[str, Any]:
    """One column (a Series) or index as a JSON node; arrays go to ``files``."""
    import numpy

    pandas = _module("pandas")
    dtype = values.dtype  # a Series' or an Index's: numpy's, or a pandas extension dtype
    if isinstance(dtype, pandas.CategoricalDtype):
        cats = _column(dtype.categories, files)
        codes = _column(pandas.Index(values.array.codes), files)
        return {"kind": "category", "categories": cats, "codes": codes, "ordered": dtype.ordered}
    if isinstance(dtype, numpy.dtype) and dtype.kind in "biufcmM":
        files.append(numpy.ascontiguousarray(values.to_numpy()))
        return {"kind": "npy", "file": f"c{len(files) - 1}.npy"}
    if isinstance(dtype, pandas.StringDtype) or (
        isinstance(dtype, numpy.dtype) and dtype.kind == "O"
    ):
        items = list(values)
        if all(isinstance(v, str) for v in items):
            kind = "string" if isinstance(dtype, pandas.StringDtype) else "str"
            storage = getattr(dtype, "storage", None)
            na = getattr(dtype, "na_value", None)
            return {
                "kind": kind,
                "values": items,
                "storage": storage,
                "na": "nan" if kind == "string" and na is not pandas.NA else None,
            }
    raise _NotExact(str(dtype))


def _rebuild_column(node: Mapping[str, Any], src: Path, mmap_min: int) -> Any:
    import numpy

    pandas = _import("pandas")
    kind = node.get("kind")
    if kind == "npy":
        return _load(_file(src, node.get("file")), mmap_min)
    if kind == "str":
        return numpy.array(node["values"], dtype=object)
    if kind == "string":
        if node.get("na") == "nan":
            dtype = pandas.StringDtype(storage=node.get("storage"), na_value=numpy.nan)
        else:
            dtype = pandas.StringDtype(storage=node.get("storage"))
        return pandas.array(node["values"], dtype=dtype)
    if kind == "category":
        categories = pandas.Index(_rebuild_column(node["categories"], src, mmap_min))
        codes = _rebuild_column(node["codes"], src, mmap_min)
        return pandas.Categorical.from_codes(
            codes, categories=categories, ordered=bool(node["ordered"])
        )
    raise CorruptEntryError(f"pandas entry has an unknown column kind {kind!r}")


def _label(value: object) -> object:
    """A column name or Series name JSON keeps as it is (str, int, float, bool, None)."""
    import numpy

    if isinstance(value, numpy.generic):
        raise _NotExact("numpy scalar label")
    if value is None or type(value) in (str, int, bool):
        return value
    if type(value) is float:
        return value
    raise _NotExact(f"label {value!r}")


def _index(index: Any, files: list[Any]) -> dict[str, Any]:
    pandas = _module("pandas")
    name = _label(index.name)
    if type(index) is pandas.RangeIndex:
        return {"kind": "range", "start": index.start, "stop": index.stop, "step": index.step,
                "name": name}  # fmt: skip
    if isinstance(index, pandas.MultiIndex) or type(index) not in (
        pandas.Index,
        pandas.DatetimeIndex,
        pandas.TimedeltaIndex,
        pandas.CategoricalIndex,
    ):
        raise _NotExact(type(index).__name__)
    if getattr(index, "freq", None) is not None or getattr(index.dtype, "tz", None) is not None:
        raise _NotExact("index with a frequency or a time zone")
    return {"kind": "index", "values": _column(index, files), "name": name}


def _rebuild_index(node: Mapping[str, Any], src: Path, mmap_min: int) -> Any:
    pandas = _import("pandas")
    if node.get("kind") == "range":
        return pandas.RangeIndex(node["start"], node["stop"], node["step"], name=node["name"])
    values = _rebuild_column(node["values"], src, mmap_min)
    return pandas.Index(values, name=node["name"], copy=False)


class _SkeletonCodec:
    """A value as a JSON skeleton (``<skeleton>``) plus ``<prefix><i>.npy`` files.

    Subclasses build the skeleton; a value with a part the format cannot hold exactly is not
    accepted, so the registry falls through to the next codec.
    """

    name: str
    skeleton: str
    prefix: str

    def _skeleton(self, value: Any, files: list[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def accepts(self, value: object) -> bool:
        try:
            self._skeleton(value, [])
        except _NotExact:
            return False
        return True

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        files: list[Any] = []
        try:
            skeleton = self._skeleton(value, files)
        except _NotExact as exc:
            raise CodecError(
                f"the {self.name} codec cannot store this value exactly ({exc})"
            ) from None
        for index, array in enumerate(files):
            _save(array, dest / f"{self.prefix}{index}.npy")
        (dest / self.skeleton).write_text(json.dumps(skeleton, allow_nan=True))
        return {}


class PandasCodec(_SkeletonCodec):
    """A pandas DataFrame or Series as ``frame.json`` plus one ``.npy`` per column."""

    name = "pandas"
    skeleton = "frame.json"
    prefix = "c"

    def _skeleton(self, value: Any, files: list[Any]) -> dict[str, Any]:
        pandas = _module("pandas")
        if pandas is None:
            raise _NotExact("pandas not loaded")
        if type(value) is pandas.Series:
            if value.attrs:
                raise _NotExact("attrs")
            return {
                "kind": "series",
                "name": _label(value.name),
                "index": _index(value.index, files),
                "values": _column(value, files),
            }
        if type(value) is pandas.DataFrame:
            if value.attrs or value.columns.has_duplicates:
                raise _NotExact("attrs or duplicate columns")
            columns = _index(value.columns, files)
            return {
                "kind": "frame",
                "index": _index(value.index, files),
                "columns": columns,
                "values": [_column(value.iloc[:, i], files) for i in range(value.shape[1])],
            }
        raise _NotExact(type(value).__name__)

    def decode(self, src: Path, meta: Mapping[str, Any], *, mmap_min: int) -> object:
        pandas = _import("pandas")
        node = json.loads((src / self.skeleton).read_bytes())
        index = _rebuild_index(node["index"], src, mmap_min)
        if node.get("kind") == "series":
            values = _rebuild_column(node["values"], src, mmap_min)
            return pandas.Series(values, index=index, name=node["name"], copy=False)
        if node.get("kind") != "frame":
            raise CorruptEntryError(f"pandas entry has an unknown kind {node.get('kind')!r}")
        columns = _rebuild_index(node["columns"], src, mmap_min)
        data = {i: _rebuild_column(c, src, mmap_min) for i, c in enumerate(node["values"])}
        frame = pandas.DataFrame(data, index=index, copy=False)
        frame.columns = columns
        return frame


# -- xarray ---------------------------------------------------------------------------------------


def _variable(variable: Any, files: list[Any]) -> dict[str, Any]:
    import numpy

    if not is_json_safe(dict(variable.attrs)):
        raise _NotExact("attrs")
    data = numpy.asarray(variable.values)
    if data.dtype.kind in "biufcmM":
        files.append(numpy.ascontiguousarray(data))
        node: dict[str, Any] = {"file": f"v{len(files) - 1}.npy"}
    elif data.dtype.kind in "OU" and all(isinstance(v, str) for v in data.ravel()):
        node = {"strings": data.tolist(), "unicode": data.dtype.kind == "U"}
    else:
        raise _NotExact(str(data.dtype))
    return {"dims": list(variable.dims), "attrs": dict(variable.attrs), **node}


def _rebuild_variable(node: Mapping[str, Any], src: Path, mmap_min: int) -> tuple[Any, ...]:
    import numpy

    if "file" in node:
        data = _load(_file(src, node["file"]), mmap_min)
    else:
        data = numpy.array(node["strings"], dtype=None if node.get("unicode") else object)
    return (tuple(node["dims"]), data, dict(node["attrs"]))


def _names(mapping: Any) -> list[str]:
    names = list(mapping)
    if not all(isinstance(n, str) for n in names):
        raise _NotExact("variable names must be strings")
    return names


class XarrayCodec(_SkeletonCodec):
    """An xarray DataArray or Dataset as ``dataset.json`` plus one ``.npy`` per variable."""

    name = "xarray"
    skeleton = "dataset.json"
    prefix = "v"

    def _skeleton(self, value: Any, files: list[Any]) -> dict[str, Any]:
        xarray = _module("xarray")
        if xarray is None or type(value) not in (xarray.DataArray, xarray.Dataset):
            raise _NotExact(type(value).__name__)
        if not is_json_safe(dict(value.attrs)):
            raise _NotExact("attrs")
        coords = {n: _variable(value.coords[n].variable, files) for n in _names(value.coords)}
        if type(value) is xarray.DataArray:
            name = value.name
            if name is not None and not isinstance(name, str):
                raise _NotExact("name")
            return {
                "kind": "dataarray",
                "name": name,
                "data": _variable(value.variable, files),
                "coords": coords,
            }
        assert isinstance(value, xarray.Dataset)
        variables = {n: _variable(value[n].variable, files) for n in _names(value.data_vars)}
        return {"kind": "dataset", "attrs": dict(value.attrs), "vars": variables, "coords": coords}

    def decode(self, src: Path, meta: Mapping[str, Any], *, mmap_min: int) -> object:
        xarray = _import("xarray")
        node = json.loads((src / self.skeleton).read_bytes())
        coords = {n: _rebuild_variable(v, src, mmap_min) for n, v in node["coords"].items()}
        if node.get("kind") == "dataarray":
            dims, data, attrs = _rebuild_variable(node["data"], src, mmap_min)
            return xarray.DataArray(data, dims=dims, coords=coords, name=node["name"], attrs=attrs)
        if node.get("kind") != "dataset":
            raise CorruptEntryError(f"xarray entry has an unknown kind {node.get('kind')!r}")
        variables = {n: _rebuild_variable(v, src, mmap_min) for n, v in node["vars"].items()}
        return xarray.Dataset(variables, coords=coords, attrs=node["attrs"])


def scientific_codecs() -> list[Any]:
    """The codecs of this module, for the codec registry (each inert until its library loads)."""
    return [SparseCodec(), PandasCodec(), XarrayCodec()]

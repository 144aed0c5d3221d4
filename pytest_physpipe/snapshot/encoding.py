"""The golden value format: Python values to JSON nodes and back, without touching the disk.

A golden value is plain JSON. Numbers, strings, booleans, null, lists and string-keyed
objects stand for themselves; everything else is an object tagged by one key starting with a
single "$" (``{"$tuple": [...]}``, ``{"$array": "float64", ...}``). A user's own key that starts
with "$" is written with one more "$", so a tag can never be confused with data.

Guarantees: decoding an encoded value gives back a value that compares equal to it (floats and
every inlined array dtype exactly); arrays too large to inline are named by the xxh3-128 of
their content (:func:`digest`), so the same array always gets the same sidecar name. Reading and
writing files is :mod:`pytest_physpipe.snapshot.files`'s job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import numpy as np

from pytest_physpipe.errors import PhyspipeError
from pytest_physpipe.tolerance import child_path, index_path
from pytest_physpipe.valuetypes import Frame, view

__all__ = [
    "INLINE_MAX_ELEMENTS",
    "Decoder",
    "Encoder",
    "GoldenFileError",
    "SidecarLoader",
    "digest",
    "dtype_text",
    "escape_key",
    "float_node",
    "hashable",
    "special_text",
    "tag_of",
    "unescape_key",
]

#: Arrays with more elements than this (or of a dtype JSON cannot hold exactly) go to a sidecar;
#: the ini option ``physpipe_snapshot_inline_max`` changes it.
INLINE_MAX_ELEMENTS = 64

#: ``(sidecar name, dtype text, shape) -> array``: how a :class:`Decoder` reads a sidecar.
SidecarLoader: TypeAlias = Callable[[str, str, tuple[int, ...]], np.ndarray]


class GoldenFileError(PhyspipeError, ValueError):
    """A golden file or one of its array sidecars is unreadable, corrupt, or too new."""


def special_text(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def float_node(x: float) -> object:
    return x if math.isfinite(x) else special_text(x)


def escape_key(key: str) -> str:
    return "$" + key if key.startswith("$") else key


def unescape_key(key: str) -> str:
    return key[1:] if key.startswith("$$") else key


def tag_of(node: Mapping[str, Any]) -> str | None:
    for key in node:
        if key.startswith("$") and not key.startswith("$$"):
            return key
    return None


def digest(array: np.ndarray) -> str:
    import xxhash

    hasher = xxhash.xxh3_128()
    descr = np.lib.format.dtype_to_descr(array.dtype)
    hasher.update(repr((descr, array.shape)).encode())
    hasher.update(array.reshape(-1).view(np.uint8).data)
    return str(hasher.hexdigest())


def _inline_ok(array: np.ndarray, inline_max: int) -> bool:
    kind, size = array.dtype.kind, array.dtype.itemsize
    exact_in_json = kind in "biuU" or (kind == "f" and size <= 8) or (kind == "c" and size <= 16)
    return exact_in_json and array.size <= inline_max


def _inline_data(item: object) -> object:
    # ndarray.tolist() gives Python scalars that hold every inlinable dtype exactly (float32 and
    # float16 values are exact doubles), so repr() of them round-trips.
    if isinstance(item, list):
        return [_inline_data(x) for x in item]
    if isinstance(item, float):
        return float_node(item)
    if isinstance(item, complex):
        return [float_node(item.real), float_node(item.imag)]
    return item


def _number(x: object) -> object:
    if isinstance(x, (np.integer, np.bool_)):
        return int(x)
    return float_node(float(x))  # type: ignore[arg-type]


def _summary(array: np.ndarray) -> dict[str, object]:
    """min, max, mean and norm of a sidecar array: what a reviewer reads instead of the data."""
    # Display only: a norm or mean that overflows to inf is still the right thing to show.
    with np.errstate(over="ignore", invalid="ignore"):
        return _summary_stats(array)


def _summary_stats(array: np.ndarray) -> dict[str, object]:
    kind = array.dtype.kind
    if kind not in "biufc" or array.size == 0:
        return {}
    values = array.reshape(-1)
    out: dict[str, object] = {}
    nonfinite = 0
    if kind in "fc":
        finite = np.isfinite(values)
        nonfinite = int(values.size - np.count_nonzero(finite))
        if nonfinite:
            values = values[finite]
    if values.size:
        if kind == "c":
            mean = complex(values.mean(dtype=np.complex128))
            out["mean"] = [float_node(mean.real), float_node(mean.imag)]
        else:
            numeric = values.astype(np.int64) if kind == "b" else values
            out["min"] = _number(numeric.min())
            out["max"] = _number(numeric.max())
            out["mean"] = float_node(float(numeric.mean(dtype=np.float64)))
        out["norm"] = float_node(
            float(np.linalg.norm(np.asarray(values, dtype=np.result_type(values, 1.0))))
        )
    if kind in "fc":
        out["nonfinite"] = nonfinite
    return out


def dtype_text(dtype: np.dtype[Any]) -> str:
    # Names read best ("float64"); strings keep their width, which names drop; structured
    # dtypes spell out their fields (they only ever live in sidecars, which hold the dtype).
    if dtype.names is not None:
        return str(dtype)
    return str(dtype.str if dtype.kind in "USV" else dtype.name)


class Encoder:
    """Turns a value into JSON nodes, collecting the arrays that go to sidecars."""

    def __init__(self, *, for_write: bool = True, inline_max: int = INLINE_MAX_ELEMENTS) -> None:
        # Checksums and summaries cost a few passes over a large array; a run that will not
        # write (no --snapshot-update) compares values only and skips them.
        self.for_write = for_write
        self.inline_max = inline_max
        self.sidecars: dict[str, np.ndarray] = {}

    def encode(self, value: object, path: str) -> object:
        try:
            kind, canonical = view(value)
        except TypeError as exc:
            raise TypeError(f"at {path or '(the whole value)'}: {exc}") from None
        if kind == "none" or kind in ("bool", "int", "str"):
            return canonical
        if kind == "float":
            x = float(canonical)
            return x if math.isfinite(x) else {"$float": special_text(x)}
        if kind == "complex":
            return {"$complex": [float_node(canonical.real), float_node(canonical.imag)]}
        if kind == "bytes":
            return {"$bytes": canonical.hex()}
        if kind == "sequence":
            items = [self.encode(v, index_path(path, i)) for i, v in enumerate(canonical)]
            return {"$tuple": items} if isinstance(value, tuple) else items
        if kind == "array":
            return self.encode_array(canonical, path)
        if kind == "masked":
            return {
                "$masked": self.encode_array(canonical.data, child_path(path, "data")),
                "mask": self.encode_array(canonical.mask, child_path(path, "mask")),
            }
        if kind == "frame":
            return {
                "$frame": canonical.kind,
                "index": self.encode_array(canonical.index, child_path(path, "index")),
                "columns": [
                    [self.encode(label, path), self.encode_array(column, child_path(path, label))]
                    for label, column in canonical.columns.items()
                ],
            }
        fields = self.encode_mapping(canonical, path)
        if hasattr(type(value), "model_fields"):
            return {"$model": _qualname(value), "fields": fields}
        if not isinstance(value, Mapping):
            return {"$dataclass": _qualname(value), "fields": fields}
        return fields

    def encode_mapping(self, mapping: dict[object, object], path: str) -> object:
        keys = [view(k)[1] if not isinstance(k, tuple) else k for k in mapping]
        if all(isinstance(k, str) for k in keys):
            return {
                escape_key(str(k)): self.encode(mapping[k], child_path(path, k))
                for k in sorted(mapping, key=str)
            }
        pairs = [
            [self.encode(k, path), self.encode(mapping[k], child_path(path, ck))]
            for k, ck in zip(mapping, keys, strict=True)
        ]
        pairs.sort(key=lambda pair: json.dumps(pair[0], sort_keys=True))
        return {"$dict": pairs}

    def encode_array(self, array: np.ndarray, path: str) -> object:
        if array.dtype.hasobject:
            raise TypeError(
                f"at {path or '(the whole value)'}: an array of dtype {array.dtype} holds Python "
                "objects, which a golden cannot store without pickle; convert it to a numeric "
                "or string dtype"
            )
        node: dict[str, object] = {
            "$array": dtype_text(array.dtype),
            "shape": list(array.shape),
        }
        if _inline_ok(array, self.inline_max):
            node["data"] = _inline_data(array.tolist())
            return node
        if not self.for_write:
            node["sidecar"] = "(not written in this run)"
            return node
        contiguous = array if array.flags.c_contiguous else array.copy(order="C")
        name = f".{digest(contiguous)}.npy"
        self.sidecars[name] = contiguous
        node["sidecar"] = name
        node.update(_summary(contiguous))
        return node


def _qualname(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


class Decoder:
    """Turns JSON nodes back into values; sidecar arrays come from ``load_sidecar``.

    ``load_sidecar(name, dtype_text, shape)`` reads and verifies one sidecar
    (:func:`pytest_physpipe.snapshot.files.sidecar_loader`); without one, a value that
    refers to a sidecar is an error.
    """

    def __init__(self, load_sidecar: SidecarLoader | None = None) -> None:
        self.load_sidecar = load_sidecar or _no_sidecars

    def decode(self, node: object) -> object:
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        tag = tag_of(node)
        if tag is None:
            return {unescape_key(k): self.decode(v) for k, v in node.items()}
        if tag == "$float":
            return float(node[tag])
        if tag == "$complex":
            re_, im = node[tag]
            return complex(float(re_), float(im))
        if tag == "$bytes":
            return bytes.fromhex(node[tag])
        if tag == "$tuple":
            return tuple(self.decode(v) for v in node[tag])
        if tag == "$dict":
            return {hashable(self.decode(k)): self.decode(v) for k, v in node[tag]}
        if tag in ("$model", "$dataclass"):
            decoded = self.decode(node["fields"])
            assert isinstance(decoded, dict)
            return decoded
        if tag == "$array":
            return self.decode_array(node)
        if tag == "$masked":
            data, mask = self.decode_array(node[tag]), self.decode_array(node["mask"])
            return np.ma.MaskedArray(data, mask=mask)
        if tag == "$frame":
            columns = {hashable(self.decode(k)): self.decode_array(v) for k, v in node["columns"]}
            return Frame(str(node[tag]), self.decode_array(node["index"]), columns)
        raise GoldenFileError(
            f"unknown tag {tag!r} in a golden value: it was written by a newer pytest-physpipe"
        )

    def decode_array(self, node: Mapping[str, Any]) -> np.ndarray:
        shape = tuple(int(n) for n in node["shape"])
        if "data" in node:
            dtype = np.dtype(node["$array"])
            data = node["data"]
            if dtype.kind == "c":
                data = _map_leaves(data, lambda pair: complex(float(pair[0]), float(pair[1])), 1)
            elif dtype.kind == "f":
                data = _map_leaves(data, float, 0)
            return np.array(data, dtype=dtype).reshape(shape)
        return self.load_sidecar(str(node["sidecar"]), str(node["$array"]), shape)


def _no_sidecars(name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    raise GoldenFileError(f"a golden value refers to the array file {name!r} where none may be")


def _map_leaves(data: object, fn: Any, pair_depth: int) -> object:
    # pair_depth=1: complex values are [re, im] lists at the bottom of the nesting.
    if isinstance(data, list) and not (pair_depth and data and not isinstance(data[0], list)):
        return [_map_leaves(x, fn, pair_depth) for x in data]
    return fn(data)


def hashable(key: object) -> object:
    return tuple(hashable(k) for k in key) if isinstance(key, list) else key

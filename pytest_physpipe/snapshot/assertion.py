"""Golden snapshots of physics metrics: a syrupy extension with numeric tolerances.

``physics_snapshot`` is a syrupy :class:`~syrupy.assertion.SnapshotAssertion` whose extension
(:class:`PhysicsSnapshotExtension`) stores goldens as readable JSON and compares them with
:mod:`pytest_physpipe.tolerance` instead of syrupy's text equality. Everything syrupy users know
keeps working: ``--snapshot-update``, the unused-snapshot report, ``-n`` with xdist.

How the pieces meet syrupy's write decision (docs/snapshots.md has the long form):

* ``serialize`` returns a :class:`str` subclass (``_Received``): its text is the entry that
  would be written, and it also carries the live value, the tolerance rules and the arrays for
  the binary sidecars, so that ``matches`` can compare numbers rather than text.
* syrupy writes only when ``matches`` is false. A value within tolerance therefore never
  reaches the disk, not even under ``--snapshot-update``: no churn from rounding noise.
* When a write does happen, ``write_snapshot_collection`` merges at the leaf level: leaves still
  within tolerance keep their golden text byte for byte; only the failing leaves (and the
  provenance, which says when the values changed) are replaced.

Layout, one collection per test module::

    __snapshots__/test_orbit.physics            # JSON: values, provenance, array summaries
    __snapshots__/test_orbit.arrays/.<xxh3>.npy # arrays too large to inline, by content hash

Sidecar names start with a dot on purpose: syrupy's unused-snapshot cleanup (of *any*
extension sharing ``__snapshots__``, amber included) deletes files it does not own under
``--snapshot-update``, and skips dotfiles.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib
import json
import math
import os
import platform
import re
import secrets
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.data import (
    Snapshot,
    SnapshotCollection,
    SnapshotCollections,
    SnapshotEmptyCollection,
)
from syrupy.extensions.base import AbstractSyrupyExtension

from pytest_physpipe.errors import PhyspipeError, PhyspipeWarning
from pytest_physpipe.tolerance import (
    Comparison,
    Tolerance,
    ToleranceLike,
    ToleranceRules,
    child_path,
    compare,
    index_path,
    view,
)

if TYPE_CHECKING:
    from syrupy.location import PyTestLocation
    from syrupy.types import (
        PropertyFilter,
        PropertyMatcher,
        SerializableData,
        SerializedData,
        SnapshotIndex,
    )

__all__ = [
    "GoldenFileError",
    "PhysicsSnapshot",
    "PhysicsSnapshotExtension",
    "make_physics_snapshot",
]

#: Bump when the file layout changes incompatibly; readers refuse newer formats.
FORMAT_VERSION = 1
#: Arrays with more elements than this (or of a dtype JSON cannot hold exactly) go to a sidecar.
INLINE_MAX_ELEMENTS = 64
#: Sidecars larger than this are memory-mapped rather than read into memory.
MMAP_MIN_BYTES = 16 << 20
_ABOUT = "pytest-physpipe goldens; update with `pytest --snapshot-update`"
_LINE_WIDTH = 100
_SIDECAR = re.compile(r"\.[0-9a-f]{32}\.npy\Z")


class GoldenFileError(PhyspipeError, ValueError):
    """A golden file or one of its array sidecars is unreadable, corrupt, or too new."""


# -- encoding values as JSON nodes ------------------------------------------------------------
#
# A golden value is plain JSON. Numbers, strings, booleans, null, lists and string-keyed
# objects stand for themselves; everything else is an object tagged by one key starting with a
# single "$" ({"$tuple": [...]}, {"$array": "float64", ...}). A user's own key that starts with
# "$" is written with one more "$", so a tag can never be confused with data.


def _special(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _float_node(x: float) -> object:
    return x if math.isfinite(x) else _special(x)


def _escape(key: str) -> str:
    return "$" + key if key.startswith("$") else key


def _unescape(key: str) -> str:
    return key[1:] if key.startswith("$$") else key


def _tag(node: Mapping[str, Any]) -> str | None:
    for key in node:
        if key.startswith("$") and not key.startswith("$$"):
            return key
    return None


def _digest(array: np.ndarray) -> str:
    import xxhash

    hasher = xxhash.xxh3_128()
    descr = np.lib.format.dtype_to_descr(array.dtype)
    hasher.update(repr((descr, array.shape)).encode())
    hasher.update(array.reshape(-1).view(np.uint8).data)
    return str(hasher.hexdigest())


def _inline_ok(array: np.ndarray) -> bool:
    kind, size = array.dtype.kind, array.dtype.itemsize
    exact_in_json = kind in "biuU" or (kind == "f" and size <= 8) or (kind == "c" and size <= 16)
    return exact_in_json and array.size <= INLINE_MAX_ELEMENTS


def _inline_data(item: object) -> object:
    # ndarray.tolist() gives Python scalars that hold every inlinable dtype exactly (float32 and
    # float16 values are exact doubles), so repr() of them round-trips.
    if isinstance(item, list):
        return [_inline_data(x) for x in item]
    if isinstance(item, float):
        return _float_node(item)
    if isinstance(item, complex):
        return [_float_node(item.real), _float_node(item.imag)]
    return item


def _number(x: object) -> object:
    if isinstance(x, (np.integer, np.bool_)):
        return int(x)
    return _float_node(float(x))  # type: ignore[arg-type]


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
            out["mean"] = [_float_node(mean.real), _float_node(mean.imag)]
        else:
            numeric = values.astype(np.int64) if kind == "b" else values
            out["min"] = _number(numeric.min())
            out["max"] = _number(numeric.max())
            out["mean"] = _float_node(float(numeric.mean(dtype=np.float64)))
        out["norm"] = _float_node(
            float(np.linalg.norm(np.asarray(values, dtype=np.result_type(values, 1.0))))
        )
    if kind in "fc":
        out["nonfinite"] = nonfinite
    return out


def _dtype_text(dtype: np.dtype[Any]) -> str:
    # Names read best ("float64"); strings keep their width, which names drop; structured
    # dtypes spell out their fields (they only ever live in sidecars, which hold the dtype).
    if dtype.names is not None:
        return str(dtype)
    return str(dtype.str if dtype.kind in "USV" else dtype.name)


class _Encoder:
    """Turns a value into JSON nodes, collecting the arrays that go to sidecars."""

    def __init__(self, *, for_write: bool = True) -> None:
        # Checksums and summaries cost a few passes over a large array; a run that will not
        # write (no --snapshot-update) compares values only and skips them.
        self.for_write = for_write
        self.sidecars: dict[str, np.ndarray] = {}

    def encode(self, value: object, path: str) -> object:
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, index_path(path, i)) for i, v in enumerate(value)]}
        try:
            kind, canonical = view(value)
        except TypeError as exc:
            raise TypeError(f"at {path or '(the whole value)'}: {exc}") from None
        if kind == "none" or kind in ("bool", "int", "str"):
            return canonical
        if kind == "float":
            x = float(canonical)
            return x if math.isfinite(x) else {"$float": _special(x)}
        if kind == "complex":
            return {"$complex": [_float_node(canonical.real), _float_node(canonical.imag)]}
        if kind == "bytes":
            return {"$bytes": canonical.hex()}
        if kind == "sequence":
            return [self.encode(v, index_path(path, i)) for i, v in enumerate(canonical)]
        if kind == "array":
            return self.encode_array(canonical, path)
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
                _escape(str(k)): self.encode(mapping[k], child_path(path, k))
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
            "$array": _dtype_text(array.dtype),
            "shape": list(array.shape),
        }
        if _inline_ok(array):
            node["data"] = _inline_data(array.tolist())
            return node
        if not self.for_write:
            node["sidecar"] = "(not written in this run)"
            return node
        contiguous = array if array.flags.c_contiguous else array.copy(order="C")
        digest = _digest(contiguous)
        name = f".{digest}.npy"
        self.sidecars[name] = contiguous
        node["sidecar"] = name
        node.update(_summary(contiguous))
        return node


def _qualname(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


class _Decoder:
    """Turns JSON nodes back into values; sidecars are read from ``array_dir``."""

    def __init__(self, array_dir: Path) -> None:
        self.array_dir = array_dir

    def decode(self, node: object) -> object:
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        tag = _tag(node)
        if tag is None:
            return {_unescape(k): self.decode(v) for k, v in node.items()}
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
            return {_hashable(self.decode(k)): self.decode(v) for k, v in node[tag]}
        if tag in ("$model", "$dataclass"):
            decoded = self.decode(node["fields"])
            assert isinstance(decoded, dict)
            return decoded
        if tag == "$array":
            return self.decode_array(node)
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
        path = self.array_dir / str(node["sidecar"])
        if not _SIDECAR.match(path.name):
            raise GoldenFileError(f"golden array file name {path.name!r} is not a sidecar name")
        try:
            size = path.stat().st_size
            array = np.load(
                path, allow_pickle=False, mmap_mode="r" if size >= MMAP_MIN_BYTES else None
            )
        except FileNotFoundError:
            raise GoldenFileError(
                f"golden array file {path} is missing; restore it from version control, or "
                "regenerate the golden with `pytest --snapshot-update`"
            ) from None
        except ValueError as exc:
            raise GoldenFileError(f"golden array file {path} is unreadable: {exc}") from None
        if array.shape != shape or _dtype_text(array.dtype) != node["$array"]:
            raise GoldenFileError(
                f"golden array file {path} holds {_dtype_text(array.dtype)} {array.shape}, but "
                f"the golden says {node['$array']} {shape}"
            )
        if f".{_digest(array)}.npy" != path.name:
            raise GoldenFileError(
                f"golden array file {path} does not match its checksum (edited or corrupt); "
                "restore it from version control, or regenerate with `pytest --snapshot-update`"
            )
        result: np.ndarray = array
        return result


def _map_leaves(data: object, fn: Any, pair_depth: int) -> object:
    # pair_depth=1: complex values are [re, im] lists at the bottom of the nesting.
    if isinstance(data, list) and not (pair_depth and data and not isinstance(data[0], list)):
        return [_map_leaves(x, fn, pair_depth) for x in data]
    return fn(data)


def _hashable(key: object) -> object:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


# -- merging on update: keep the golden text of every leaf still within tolerance --------------


def _children(node: object) -> tuple[str, dict[object, object]] | None:
    """(family, {key: child}) for a container node, None for a leaf."""
    if isinstance(node, list):
        return "sequence", dict(enumerate(node))
    if not isinstance(node, dict):
        return None
    tag = _tag(node)
    if tag is None:
        return "mapping", {_unescape(k): v for k, v in node.items()}
    if tag == "$tuple":
        return "sequence", dict(enumerate(node[tag]))
    if tag == "$dict":
        decoder = _Decoder(Path())
        return "mapping", {_hashable(decoder.decode(k)): v for k, v in node[tag]}
    if tag in ("$model", "$dataclass"):
        return _children(node["fields"])
    return None


def _rebuild(node: object, children: dict[object, object]) -> object:
    """``node`` (an actual-side container) with its children replaced."""
    if isinstance(node, list):
        return [children[i] for i in range(len(node))]
    assert isinstance(node, dict)
    tag = _tag(node)
    if tag is None:
        return {_escape(str(k)): children[k] for k in (_unescape(k) for k in node)}
    if tag == "$tuple":
        return {"$tuple": [children[i] for i in range(len(node[tag]))]}
    if tag == "$dict":
        decoder = _Decoder(Path())
        return {"$dict": [[k, children[_hashable(decoder.decode(k))]] for k, _ in node[tag]]}
    return {tag: node[tag], "fields": _rebuild(node["fields"], children)}


def _merge(golden: object, actual: object, path: str, failed: frozenset[str]) -> object:
    g, a = _children(golden), _children(actual)
    if g is not None and a is not None and g[0] == a[0]:
        merged = {}
        for key, child in a[1].items():
            if a[0] == "sequence" and isinstance(key, int):
                sub = index_path(path, key)
            else:
                sub = child_path(path, key)
            merged[key] = _merge(g[1][key], child, sub, failed) if key in g[1] else child
        return _rebuild(actual, merged)
    if g is None and a is None and path not in failed:
        return golden  # compared and within tolerance: keep the bytes on disk
    return actual


def _sidecars_in(node: object) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _sidecars_in(item)
    elif isinstance(node, dict):
        if _tag(node) == "$array" and "sidecar" in node:
            yield str(node["sidecar"])
            return
        for item in node.values():
            yield from _sidecars_in(item)


# -- the readable file ---------------------------------------------------------------------------


def _scalar_text(node: object) -> str:
    if isinstance(node, float):
        return repr(node) if math.isfinite(node) else json.dumps(_special(node))
    return json.dumps(node, ensure_ascii=False)


def _is_scalar(node: object) -> bool:
    return not isinstance(node, (list, dict))


def _compact(node: object) -> bool:
    """Whether a node may go on one line: scalars, short rows, small tagged values."""
    if isinstance(node, list):
        return all(_compact(x) for x in node)
    if isinstance(node, dict):
        tag = _tag(node)
        return tag in ("$float", "$complex", "$bytes") or (
            tag == "$tuple" and all(_is_scalar(x) for x in node[tag])
        )
    return True


def _one_line(node: object) -> str:
    if isinstance(node, list):
        return "[" + ", ".join(_one_line(x) for x in node) + "]"
    if isinstance(node, dict):
        return (
            "{"
            + ", ".join(
                f"{json.dumps(k, ensure_ascii=False)}: {_one_line(v)}" for k, v in node.items()
            )
            + "}"
        )
    return _scalar_text(node)


def _emit(node: object, indent: int = 0, lead: int = 0) -> str:
    """Deterministic JSON: one leaf per line, short rows and small tagged values on one line.

    Floats are written with ``repr``, the shortest text that reads back as the same double,
    so parsing and re-emitting a file is the identity (regeneration is byte-identical).
    """
    if isinstance(node, (list, dict)) and node and _compact(node):
        one = _one_line(node)
        if 2 * indent + lead + len(one) <= _LINE_WIDTH:
            return one
    pad = "  " * (indent + 1)
    if isinstance(node, list):
        if not node:
            return "[]"
        items = ",\n".join(pad + _emit(x, indent + 1) for x in node)
        return "[\n" + items + "\n" + "  " * indent + "]"
    if isinstance(node, dict):
        if not node:
            return "{}"
        keys = [json.dumps(str(k), ensure_ascii=False) + ": " for k in node]
        items = ",\n".join(
            f"{pad}{key}{_emit(v, indent + 1, len(key))}"
            for key, v in zip(keys, node.values(), strict=True)
        )
        return "{\n" + items + "\n" + "  " * indent + "}"
    return _scalar_text(node)


def _plain(value: object) -> object:
    """Provenance as plain JSON data, compared after the same normalisation on both sides."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return _float_node(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _array_dir(location: str | Path) -> Path:
    path = Path(location)
    return path.with_name(path.name.rsplit(".", 1)[0] + ".arrays")


def _parse_document(text: str, location: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GoldenFileError(
            f"golden file {location} is not valid JSON ({exc}); if it has merge-conflict "
            "markers, resolve them (or delete the file and run `pytest --snapshot-update`)"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("snapshots"), dict):
        raise GoldenFileError(f"golden file {location} has no 'snapshots' table")
    version = doc.get("format")
    if version != FORMAT_VERSION:
        raise GoldenFileError(
            f"golden file {location} has format {version!r}; this pytest-physpipe reads format "
            f"{FORMAT_VERSION}: upgrade pytest-physpipe, or regenerate the file"
        )
    return doc


@lru_cache(maxsize=128)
def _load_cached(location: str, stamp: tuple[int, int]) -> dict[str, Any]:
    # Keyed by (mtime, size) so a file rewritten by another xdist worker is read again.
    return _parse_document(Path(location).read_text(encoding="utf-8"), location)


def _load(location: str) -> dict[str, Any] | None:
    try:
        st = os.stat(location)
    except FileNotFoundError:
        return None
    return _load_cached(location, (st.st_mtime_ns, st.st_size))


def _render_document(entries: Mapping[str, object]) -> bytes:
    doc = {"about": _ABOUT, "format": FORMAT_VERSION, "snapshots": dict(entries)}
    return (_emit(doc) + "\n").encode("utf-8")


def _write_atomic(path: Path, write: Any) -> None:
    """Write next to ``path`` and rename into place: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _lock(location: str) -> Any:
    """A lock per golden file, shared by xdist workers, kept out of the source tree."""
    from filelock import FileLock

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "user"
    lock_dir = Path(tempfile.gettempdir()) / f"pytest-physpipe-snapshot-locks-{user}"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    name = hashlib.sha256(os.path.abspath(location).encode()).hexdigest()[:32]
    return FileLock(str(lock_dir / f"{name}.lock"), timeout=300)


def _collect_garbage(array_dir: Path, referenced: set[str]) -> None:
    if not array_dir.is_dir():
        return
    for path in array_dir.iterdir():
        if _SIDECAR.match(path.name) and path.name not in referenced:
            path.unlink(missing_ok=True)
    if not any(array_dir.iterdir()):
        array_dir.rmdir()


# -- provenance ---------------------------------------------------------------------------------


def collect_provenance(item: pytest.Item | None) -> dict[str, object]:
    """The provenance of the stages ``item`` uses, as plain JSON data (empty without stages).

    Asks ``pytest_physpipe.session.stage_provenance`` when the session module provides it.
    """
    if item is None:
        return {}
    try:
        module = importlib.import_module("pytest_physpipe.session")
    except ImportError:
        return {}
    provider = getattr(module, "stage_provenance", None)
    if provider is None:
        return {}
    stages = provider(item)
    plain = _plain(dict(stages))
    assert isinstance(plain, dict)
    return plain


def platform_info() -> dict[str, str]:
    """What, besides the code and config, can change floating-point results."""
    return {
        "machine": platform.machine(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "system": platform.system(),
    }


def _config_changes(old: object, new: object) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return f"{old!r} -> {new!r}"
    changes = [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    shown = ", ".join(changes[:5])
    return shown + (f", and {len(changes) - 5} more" if len(changes) > 5 else "")


def explain_changes(golden: Mapping[str, Any], received: Mapping[str, Any]) -> list[str]:
    """Say whether the code, the config, or only the platform changed since the golden."""
    old_stages = golden.get("stages") or {}
    new_stages = received.get("stages") or {}
    changes: list[str] = []
    for name in sorted(set(old_stages) | set(new_stages)):
        if name not in old_stages:
            changes.append(f"stage {name!r} was not used when the golden was written")
            continue
        if name not in new_stages:
            changes.append(f"stage {name!r} is no longer used")
            continue
        old, new = old_stages[name], new_stages[name]
        parts = []
        if old.get("code") != new.get("code"):
            parts.append("its code changed")
        if old.get("config") != new.get("config"):
            parts.append(
                f"its config changed ({_config_changes(old.get('config'), new.get('config'))})"
            )
        if old.get("version") != new.get("version"):
            parts.append(f"its version changed ({old.get('version')} -> {new.get('version')})")
        if not parts and old.get("key") != new.get("key"):
            parts.append("its key changed (an upstream stage, a tracked package or the salt)")
        if parts:
            changes.append(f"stage {name!r}: " + ", ".join(parts))
    old_platform = golden.get("platform") or {}
    new_platform = received.get("platform") or {}
    platform_changes = [
        f"{key} {old_platform.get(key, '?')} -> {new_platform.get(key, '?')}"
        for key in sorted(set(old_platform) | set(new_platform))
        if old_platform.get(key) != new_platform.get(key)
    ]
    platform_text = ", ".join(platform_changes)
    if changes:
        line = "Since the golden was written: " + "; ".join(changes) + "."
        if platform_changes:
            line += f" The platform changed too ({platform_text})."
        return [line]
    stages_note = (
        "the code and config of its stages are unchanged"
        if old_stages or new_stages
        else "this test records no physpipe stages"
    )
    if platform_changes:
        return [
            f"Since the golden was written, {stages_note}; only the platform changed "
            f"({platform_text}). If the differences are floating-point noise from the new "
            "platform, widen the tolerance (rtol=, atol=, tolerances=) rather than regenerating."
        ]
    if old_stages or new_stages:
        return [
            "The stages' code, config and the platform are all as when the golden was written: "
            "the change comes from something provenance does not track (a helper outside the "
            "stage: add it to track=) or from nondeterminism."
        ]
    return [f"Since the golden was written, {stages_note} and the platform is unchanged."]


# -- the serialized forms syrupy passes around ---------------------------------------------------


@dataclass
class _Measured:
    """What ``PhysicsSnapshot.__eq__`` hands to syrupy: the value plus how to judge it."""

    value: object
    rules: ToleranceRules
    stages: dict[str, object]
    platform: dict[str, str]
    keep_for_write: bool
    received: _Received | None = None


class _Received(str):
    """The serialized result of one assertion: its text is the entry that would be written."""

    value: object
    rules: ToleranceRules
    entry: dict[str, object]
    sidecars: dict[str, np.ndarray]
    comparison: Comparison | None
    golden_entry: Mapping[str, Any] | None
    problem: str | None
    keep_for_write: bool

    @classmethod
    def build(cls, measured: _Measured) -> _Received:
        encoder = _Encoder(for_write=measured.keep_for_write)
        node = encoder.encode(measured.value, "")
        entry: dict[str, object] = {
            "value": node,
            "stages": measured.stages,
            "platform": measured.platform,
        }
        self = cls(_emit(entry))
        self.value = measured.value
        self.rules = measured.rules
        self.entry = entry
        self.comparison = None
        self.golden_entry = None
        self.problem = None
        self.keep_for_write = measured.keep_for_write
        if measured.keep_for_write:
            # The write happens at the end of the session: do not let a later in-place change
            # to the caller's array alter what gets written under this checksum.
            self.sidecars = {
                name: array.copy() if array.flags.writeable else array
                for name, array in encoder.sidecars.items()
            }
        else:
            self.sidecars = {}
        return self


class _Golden(str):
    """A golden entry read from disk; its value is decoded (and sidecars read) on demand."""

    entry: Mapping[str, Any]
    array_dir: Path

    @classmethod
    def build(cls, entry: Mapping[str, Any], array_dir: Path) -> _Golden:
        self = cls(_emit(entry))
        self.entry = entry
        self.array_dir = array_dir
        return self

    def decoded(self) -> object:
        return _Decoder(self.array_dir).decode(self.entry.get("value"))


def _golden_value(data: object) -> tuple[object, Mapping[str, Any]]:
    if isinstance(data, _Golden):
        return data.decoded(), data.entry
    if isinstance(data, _Received):  # recalled from this session's pending writes
        return data.value, data.entry
    raise GoldenFileError(f"unexpected golden data of type {type(data).__name__}")


# -- the extension -------------------------------------------------------------------------------


class PhysicsSnapshotExtension(AbstractSyrupyExtension):
    """syrupy extension: JSON goldens with array sidecars, compared within tolerances."""

    file_extension = "physics"

    def serialize(
        self,
        data: SerializableData,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> SerializedData:
        # exclude/include/matcher are syrupy's text-snapshot tools; per-path tolerances
        # replace them here.
        if not isinstance(data, _Measured):
            data = _Measured(data, ToleranceRules(), {}, platform_info(), keep_for_write=True)
        received = _Received.build(data)
        data.received = received
        return received

    def matches(
        self, *, serialized_data: SerializableData, snapshot_data: SerializableData
    ) -> bool:
        if not isinstance(serialized_data, _Received):
            return bool(serialized_data == snapshot_data)
        try:
            golden, entry = _golden_value(snapshot_data)
        except GoldenFileError as exc:
            serialized_data.problem = str(exc)
            return False
        serialized_data.golden_entry = entry
        serialized_data.comparison = compare(golden, serialized_data.value, serialized_data.rules)
        return serialized_data.comparison.ok

    def diff_lines(
        self, serialized_data: SerializedData, snapshot_data: SerializedData
    ) -> Iterator[str]:
        if not isinstance(serialized_data, _Received):
            yield from super().diff_lines(serialized_data, snapshot_data)
            return
        if serialized_data.problem:
            yield serialized_data.problem
            return
        comparison, golden_entry = serialized_data.comparison, serialized_data.golden_entry
        if comparison is None or golden_entry is None:
            yield "No golden for this snapshot yet: run `pytest --snapshot-update` to write it."
            return
        yield from comparison.describe()
        yield from explain_changes(golden_entry, serialized_data.entry)
        yield (
            "To accept the new values, run `pytest --snapshot-update`: only the values outside "
            "tolerance are rewritten."
        )

    # -- storage ------------------------------------------------------------------------------

    def discover_snapshots(
        self,
        *,
        test_location: PyTestLocation,
        ignore_extensions: list[str] | None = None,
    ) -> SnapshotCollections:
        # Claim our own files only. The default marks every other file in __snapshots__ as
        # an unknown collection, which syrupy deletes under --snapshot-update.
        discovered = SnapshotCollections()
        if self.file_extension in (ignore_extensions or ()):
            return discovered
        directory = Path(self.dirname(test_location=test_location))
        if not directory.is_dir():
            return discovered
        for path in sorted(directory.glob(f"*.{self.file_extension}")):
            if path.is_file() and not path.name.startswith("."):
                collection = self.read_snapshot_collection(snapshot_location=str(path))
                if not collection.has_snapshots:
                    collection = SnapshotEmptyCollection(location=str(path))
                discovered.add(collection)
        return discovered

    def read_snapshot_collection(self, *, snapshot_location: str) -> SnapshotCollection:
        collection = SnapshotCollection(location=snapshot_location)
        try:
            doc = _load(snapshot_location)
        except (GoldenFileError, OSError, UnicodeDecodeError):
            # Report an unreadable file as holding nothing; the tests that use it fail with
            # the reason when they read it, and it is never deleted while they use it.
            return collection
        array_dir = _array_dir(snapshot_location)
        for name, entry in (doc or {}).get("snapshots", {}).items():
            collection.add(Snapshot(name=name, data=_Golden.build(entry, array_dir)))
        return collection

    def read_snapshot_data_from_location(
        self, *, snapshot_location: str, snapshot_name: str, session_id: str
    ) -> SerializedData | None:
        doc = _load(snapshot_location)
        if doc is None:
            return None
        entry = doc["snapshots"].get(snapshot_name)
        if entry is None:
            return None
        return _Golden.build(entry, _array_dir(snapshot_location))

    @classmethod
    def write_snapshot_collection(
        cls,
        *,
        snapshot_collection: SnapshotCollection,
        name_order: dict[str, int] | None = None,
    ) -> None:
        location = snapshot_collection.location
        with _lock(location):
            path = Path(location)
            old_bytes = path.read_bytes() if path.exists() else None
            old = _parse_document(old_bytes.decode("utf-8"), location) if old_bytes else None
            entries: dict[str, object] = dict(old["snapshots"]) if old else {}
            array_dir = _array_dir(location)
            for snapshot in snapshot_collection:
                data = snapshot.data
                if isinstance(data, _Received):
                    entries[snapshot.name] = _entry_to_write(
                        data, entries.get(snapshot.name), array_dir
                    )
                elif isinstance(data, _Golden):
                    entries[snapshot.name] = dict(data.entry)
            order = name_order or {}
            ordered = {
                name: entries[name]
                for name in sorted(entries, key=lambda n: (order.get(n, math.inf), n))
            }
            new_bytes = _render_document(ordered)
            if new_bytes != old_bytes:
                _write_atomic(path, lambda handle: handle.write(new_bytes))
            _collect_garbage(array_dir, {s for e in ordered.values() for s in _sidecars_in(e)})

    def delete_snapshots(self, *, snapshot_location: str, snapshot_names: set[str]) -> None:
        with _lock(snapshot_location):
            path = Path(snapshot_location)
            array_dir = _array_dir(snapshot_location)
            doc = _load(snapshot_location)
            if doc is None:
                return
            entries = {k: v for k, v in doc["snapshots"].items() if k not in snapshot_names}
            if entries:
                data = _render_document(entries)
                _write_atomic(path, lambda handle: handle.write(data))
            else:
                path.unlink(missing_ok=True)
            _collect_garbage(array_dir, {s for e in entries.values() for s in _sidecars_in(e)})


def _entry_to_write(received: _Received, old_entry: object, array_dir: Path) -> dict[str, object]:
    """The entry to store: the received one, but with in-tolerance leaves kept from the golden."""
    entry = received.entry
    # A golden that does not decode (a corrupt or missing sidecar) is replaced, sidecars too.
    rewrite_sidecars = False
    if isinstance(old_entry, dict):
        try:
            golden = _Decoder(array_dir).decode(old_entry.get("value"))
            comparison = compare(golden, received.value, received.rules)
        except (GoldenFileError, TypeError, ValueError):
            rewrite_sidecars = True
        else:
            if comparison.ok:
                return old_entry
            value = _merge(old_entry.get("value"), entry["value"], "", comparison.failed_paths)
            entry = {**entry, "value": value}
    for name in sorted(set(_sidecars_in(entry["value"]))):
        target = array_dir / name
        if rewrite_sidecars or not target.exists():
            array = received.sidecars[name]
            _write_atomic(target, lambda handle, a=array: np.save(handle, a, allow_pickle=False))
    return entry


# -- the assertion object behind the fixture -------------------------------------------------------


@dataclass(eq=False, order=False, repr=False)
class PhysicsSnapshot(SnapshotAssertion):
    """The ``physics_snapshot`` fixture: a syrupy assertion that compares within tolerances.

    ``actual == physics_snapshot`` compares with the defaults (ini ``physpipe_snapshot_rtol``
    and ``physpipe_snapshot_atol``); ``actual == physics_snapshot(rtol=..., atol=...,
    tolerances={"energy": {"rtol": 1e-12}}, equal_nan=True, name="...")`` sets them for one
    assertion.
    """

    defaults: Tolerance = field(default_factory=Tolerance)
    item: pytest.Item | None = None
    _rules: ToleranceRules | None = field(init=False, default=None)

    # numpy's comparison operators return NotImplemented for objects that set this, so that
    # `array == physics_snapshot` reaches our __eq__ instead of comparing element by element.
    __array_ufunc__ = None
    # An assertion compares with side effects (it records a result), so it is not hashable;
    # syrupy's SnapshotAssertion is not either.
    __hash__ = None  # type: ignore[assignment]

    def __call__(
        self,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        tolerances: Mapping[str, ToleranceLike] | None = None,
        equal_nan: bool | None = None,
        name: SnapshotIndex | None = None,
        diff: SnapshotIndex | None = None,
        diff_data: SerializableData | None = None,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        extension_class: type[AbstractSyrupyExtension] | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> PhysicsSnapshot:
        default = Tolerance(
            rtol=self.defaults.rtol if rtol is None else rtol,
            atol=self.defaults.atol if atol is None else atol,
            equal_nan=self.defaults.equal_nan if equal_nan is None else equal_nan,
        )
        self._rules = ToleranceRules.build(default, tolerances)
        # Pass on only what was given: older syrupy releases take fewer keywords.
        given: dict[str, Any] = {
            "name": name,
            "diff": diff,
            "diff_data": diff_data,
            "exclude": exclude,
            "include": include,
            "extension_class": extension_class,
            "matcher": matcher,
        }
        super().__call__(**{key: value for key, value in given.items() if value is not None})
        return self

    def __eq__(self, other: object) -> bool:
        rules, self._rules = self._rules or ToleranceRules(self.defaults), None
        measured = _Measured(
            value=other,
            rules=rules,
            stages=collect_provenance(self.item),
            platform=platform_info(),
            keep_for_write=self.update_snapshots or self.update_new_snapshots_only,
        )
        result = super().__eq__(measured)
        received = measured.received
        if rules.rules:
            try:
                unmatched = rules.unused_patterns(other)
            except TypeError:  # an unsupported value: the assertion has already said so
                unmatched = ()
            if unmatched:
                warnings.warn(
                    PhyspipeWarning(
                        "physics_snapshot: tolerances pattern(s) "
                        + ", ".join(map(repr, unmatched))
                        + " matched no value; paths look like 'energy', 'fields.E', "
                        "'orbits[0].x', and '*' matches within one name"
                    ),
                    stacklevel=2,
                )
        if received is not None and not received.keep_for_write:
            received.value = None  # nothing will be written: release large arrays early
        return result

    def __repr__(self) -> str:
        return f"physics_snapshot({self.test_location.snapshot_name!r}, {self.defaults})"

    def with_defaults(
        self,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
        extension_class: type[AbstractSyrupyExtension] | None = None,
    ) -> PhysicsSnapshot:
        return PhysicsSnapshot(
            matcher=matcher or self.matcher,
            include=include or self.include,
            exclude=exclude or self.exclude,
            update_snapshots=self.update_snapshots,
            update_new_snapshots_only=self.update_new_snapshots_only,
            test_location=self.test_location,
            extension_class=extension_class or self.extension_class,
            session=self.session,
            defaults=self.defaults,
            item=self.item,
        )


def _ini_bound(config: pytest.Config, name: str, fallback: float) -> float:
    try:
        raw = config.getini(name)
    except ValueError:  # not registered: the plugin providing the ini is not loaded
        return fallback
    if raw in (None, "", []):
        return fallback
    try:
        return Tolerance(rtol=float(raw)).rtol
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"ini option {name} = {raw!r} is not a finite number >= 0 (e.g. 1e-9)"
        ) from None


def make_physics_snapshot(
    snapshot: SnapshotAssertion, request: pytest.FixtureRequest
) -> PhysicsSnapshot:
    """Build the ``physics_snapshot`` fixture's value from syrupy's ``snapshot`` fixture."""
    config = request.config
    defaults = Tolerance(
        rtol=_ini_bound(config, "physpipe_snapshot_rtol", Tolerance.rtol),
        atol=_ini_bound(config, "physpipe_snapshot_atol", Tolerance.atol),
    )
    return PhysicsSnapshot(
        session=snapshot.session,
        extension_class=PhysicsSnapshotExtension,
        test_location=snapshot.test_location,
        update_snapshots=snapshot.update_snapshots,
        update_new_snapshots_only=snapshot.update_new_snapshots_only,
        defaults=defaults,
        item=request.node if isinstance(request.node, pytest.Item) else None,
    )

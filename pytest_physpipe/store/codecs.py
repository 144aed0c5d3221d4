"""Value codecs: how a stage's return value becomes files in a store entry, and back.

Built-in codecs, tried in this order by ``codec="auto"``:

- ``npy``: a numpy array (no object dtype) as one ``.npy`` file;
- ``json``: JSON-safe data (dicts with string keys, lists, str, int, float, bool, None);
- ``tree``: dicts/lists/tuples holding arrays, numpy scalars, complex numbers or pydantic models:
  a JSON skeleton plus one ``.npy`` file per array;
- the scientific codecs of :mod:`pytest_physpipe.store.scientific` (``scipy-sparse``,
  ``pandas``, ``xarray``) and plugin codecs, also as leaves inside a tree;
- ``pickle``: anything else that pickles, as a last resort, signed with an HMAC.

Decoding never executes code and never imports a module named by the entry, except for a
pickle, or a tree naming pydantic model classes, whose signature (HMAC, see ``signing.py``)
verifies. Arrays come back read-only, memory-mapped when they are at least ``mmap_min`` bytes.
"""

from __future__ import annotations

import importlib
import io
import json
import mmap
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    import numpy as np

from pytest_physpipe.errors import (
    CodecError,
    CorruptEntryError,
    UnstorableValueError,
    UnverifiableEntryError,
)
from pytest_physpipe.store.fileio import JSON_PRIMITIVES, EntryWriter, is_json_safe, json_bytes
from pytest_physpipe.store.signing import Signer, load_secret

__all__ = [
    "Codec",
    "CodecRegistry",
    "JsonCodec",
    "NpyCodec",
    "PickleCodec",
    "TreeCodec",
    "is_json_safe",
    "load_secret",
    "readonly",
    "summing_encoder",
    "type_name",
]

_TAG = "__physpipe__"
#: The widest float / complex itemsize a JSON float (a double) holds exactly.
_JSON_EXACT = {"f": 8, "c": 16}


@runtime_checkable
class Codec(Protocol):
    """A way to store values. Register your own through ``pytest_physpipe_register_codecs``.

    ``encode`` writes files into the empty directory ``dest`` and returns JSON-safe metadata
    that is stored in ``meta.json`` and handed back to ``decode``. Checksums of the files are
    the store's business, not the codec's: after ``encode`` the store reads every file back to
    sum it.

    Optional: ``encode_into(value, writer) -> dict`` does what ``encode`` does through an
    :class:`~pytest_physpipe.store.fileio.EntryWriter` (``writer.write(name, data)``,
    ``writer.open(name)`` for a file written in pieces, ``writer.folder_writer(name)`` for a
    sub-folder), which sums each file from the bytes written, so the store does not read them
    back. The store calls it instead of ``encode`` when the class defining it is the class
    defining ``encode`` or a subclass of it (a subclass that overrides only ``encode`` keeps
    its ``encode``). The built-in codecs have it; a codec without it is read back as always.
    """

    name: str

    def accepts(self, value: object) -> bool: ...

    def encode(self, value: object, dest: Path) -> dict[str, Any]: ...

    def decode(self, src: Path, meta: Mapping[str, Any], *, mmap_min: int) -> object: ...


def _numpy() -> Any:
    """numpy, imported on first use: a suite whose stages return no arrays never pays for it."""
    import numpy

    return numpy


def _loaded_numpy() -> Any:
    """numpy if something imported it already, else ``None`` (then no value can be an array)."""
    return sys.modules.get("numpy")


def _read(folder: Path, name: str) -> bytes:
    # os.path, not pathlib: on a cache hit the path arithmetic costs more than the read.
    with open(os.path.join(folder, name), "rb") as handle:
        return handle.read()


def readonly(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The array, flagged read-only (no copy). Prefer memory that is read-only itself: this
    flag alone can be flipped back by whoever owns the array."""
    array.flags.writeable = False
    return array


def _save_array(array: np.ndarray[Any, Any], writer: EntryWriter, name: str) -> None:
    with writer.open(name) as handle:
        _numpy().save(handle, array, allow_pickle=False)


def _load_array(path: Path, mmap_min: int) -> np.ndarray[Any, Any]:
    numpy = _numpy()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size >= mmap_min:
            return map_array(mmap.mmap(fd, 0, access=mmap.ACCESS_READ), os.fspath(path))
    finally:
        os.close(fd)
    return _frombuffer(path, numpy)


#: The header numpy writes for a plain dtype (anything else goes through numpy's own parser,
#: which evaluates the header as a Python literal: slower, so kept for the rare cases).
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[a-zA-Z][0-9]*)', 'fortran_order': (True|False), "
    rb"'shape': \(((?:[0-9]+, )*(?:[0-9]+,?)?)\), \} *\n"
)


def _npy_layout(head: bytes, numpy: Any) -> tuple[Any, tuple[int, ...], bool, int] | None:
    """dtype, shape, Fortran order and data offset of the ``.npy`` file starting with
    ``head``, or ``None`` when the header is not one of numpy's plain ones."""
    if head[:6] != b"\x93NUMPY" or len(head) < 12:
        return None
    if head[6] == 1:
        start = 10
    elif head[6] in (2, 3):
        start = 12
    else:
        return None
    length = int.from_bytes(head[8:start], "little")
    match = _NPY_HEADER.fullmatch(head[start : start + length])
    if match is None:
        return None
    dtype = numpy.dtype(match[1].decode("ascii"))
    if dtype.hasobject:
        raise CorruptEntryError("a .npy file holds Python objects; refused (no pickles in .npy)")
    shape = tuple(int(n) for n in match[3].split(b",") if n.strip())
    return dtype, shape, match[2] == b"True", start + length


def map_array(buffer: mmap.mmap, filename: str) -> np.ndarray[Any, Any]:
    """The array of the ``.npy`` file mapped read-only in ``buffer``: a ``numpy.memmap``
    over that memory (no copy), which nobody can make writable."""
    numpy = _numpy()
    layout = _npy_layout(buffer[:4096], numpy)
    if layout is None:  # a header numpy writes rarely (structured dtypes): its own reader
        return numpy.load(filename, mmap_mode="r", allow_pickle=False)  # type: ignore[no-any-return]
    dtype, shape, fortran, offset = layout
    count = 1
    for n in shape:
        count *= n
    if offset + count * dtype.itemsize != len(buffer):
        raise CorruptEntryError(
            f"{os.path.basename(filename)} holds {len(buffer)} bytes, its header "
            f"announces {offset + count * dtype.itemsize}"
        )
    # What numpy.memmap does, without reopening the file or resolving its path again.
    array = numpy.ndarray.__new__(
        numpy.memmap,
        shape,
        dtype=dtype,
        buffer=buffer,
        offset=offset,
        order="F" if fortran else "C",
    )
    array._mmap, array.offset, array.mode = buffer, offset, "r"
    array.filename = os.path.abspath(filename)
    return array  # type: ignore[no-any-return]


def _frombuffer(path: Path, numpy: Any) -> np.ndarray[Any, Any]:
    return array_from_bytes(_read(path.parent, path.name), os.fspath(path))


def array_from_bytes(data: bytes, filename: str) -> np.ndarray[Any, Any]:
    """A small ``.npy`` file's bytes as an array over them (immutable): read-only for good.

    ``numpy.load`` gives an array owning writable memory, whose read-only flag any consumer
    could set back to writable; an array over ``bytes`` refuses that.
    """
    numpy = _numpy()
    layout = _npy_layout(data[:4096], numpy)
    if layout is None:
        layout = _npy_layout_slow(data, filename, numpy)
        if layout is None:  # a newer header (utf-8 field names): numpy reads it, we copy
            from pytest_physpipe.isolation import readonly_copy

            return readonly_copy(numpy.load(filename, allow_pickle=False))  # type: ignore[no-any-return]
    dtype, shape, fortran, offset = layout
    count = 1
    for size in shape:
        count *= size
    flat = numpy.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array: np.ndarray[Any, Any] = (
        flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)
    )
    return array


def _npy_layout_slow(
    data: bytes, filename: str, numpy: Any
) -> tuple[Any, tuple[int, ...], bool, int] | None:
    """:func:`_npy_layout` by numpy's own header reader (any header of format 1 or 2)."""
    fmt = numpy.lib.format
    with io.BytesIO(data) as handle:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(handle)
        else:
            return None
        offset = handle.tell()
    if dtype.hasobject:
        name = os.path.basename(filename)
        raise CorruptEntryError(f"{name} holds Python objects; refused (no pickles in .npy)")
    return dtype, shape, fortran, offset


def _is_plain_array(value: object) -> TypeGuard[np.ndarray[Any, Any]]:
    numpy = _loaded_numpy()
    return numpy is not None and isinstance(value, numpy.ndarray) and not value.dtype.hasobject


class NpyCodec:
    """One numpy array as ``value.npy``."""

    name = "npy"

    def accepts(self, value: object) -> bool:
        return _is_plain_array(value)

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        return self.encode_into(value, EntryWriter(dest))

    def encode_into(self, value: object, writer: EntryWriter) -> dict[str, Any]:
        if not _is_plain_array(value):
            raise CodecError(f"the npy codec stores numpy arrays, not {type(value).__name__}")
        _save_array(value, writer, "value.npy")
        return {}

    def decode(self, src: Path, meta: Mapping[str, Any], *, mmap_min: int) -> object:
        return _load_array(src / "value.npy", mmap_min)


class JsonCodec:
    """JSON-safe data as ``value.json`` (floats round-trip exactly; NaN and inf allowed)."""

    name = "json"

    def accepts(self, value: object) -> bool:
        return is_json_safe(value)

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        return self.encode_into(value, EntryWriter(dest))

    def encode_into(self, value: object, writer: EntryWriter) -> dict[str, Any]:
        if not is_json_safe(value):
            raise CodecError(
                f"the json codec stores dicts with str keys, lists, str, int, float, bool and "
                f"None, not {type(value).__name__}"
            )
        writer.write("value.json", json_bytes(value))
        return {}

    def decode(self, src: Path, meta: Mapping[str, Any], *, mmap_min: int) -> object:
        return json.loads(_read(src, "value.json"))


class _Unsupported(Exception):
    def __init__(self, value: object, path: str) -> None:
        super().__init__(f"{type(value).__module__}.{type(value).__qualname__} at {path or '.'}")


class _Leaf:
    """A value inside a tree that another codec stores, in the tree's folder ``l<i>/``."""

    def __init__(self, codec: Codec, value: object, node: dict[str, Any]) -> None:
        self.codec, self.value, self.node = codec, value, node


class _Leaves(Protocol):
    def leaf_codec(self, value: object) -> Codec | None: ...

    def get(self, name: str) -> Codec: ...


#: Codecs never used for a leaf: the tree handles JSON data and arrays itself, and a tree must
#: not hide a pickle (or another tree) inside it.
_NOT_LEAVES = ("npy", "json", "tree", "pickle")


class TreeCodec:
    """Containers of arrays and scalars: ``tree.json`` skeleton plus ``a<i>.npy`` per array.

    A skeleton that names pydantic model classes is signed: decoding imports those classes'
    modules only when the signature verifies. With a registry, a value inside the container
    that only another codec stores (a sparse matrix, a DataFrame, a plugin's type) becomes a
    *leaf*: that codec's files in ``l<i>/``.
    """

    name = "tree"

    def __init__(self, leaves: _Leaves | None = None, signer: Signer | None = None) -> None:
        self._leaves = leaves
        self.signer = signer if signer is not None else Signer()

    def _skeleton(self, value: object, arrays: list[Any], path: str) -> Any:
        if value is None or type(value) in JSON_PRIMITIVES:
            return value
        np = _loaded_numpy()
        if np is not None and isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise _Unsupported(value, path)
            arrays.append(value)
            return {_TAG: "ndarray", "file": f"a{len(arrays) - 1}.npy"}
        if np is not None and isinstance(value, np.generic):
            if value.dtype.kind in "fc" and value.dtype.itemsize > _JSON_EXACT[value.dtype.kind]:
                # long double: more precision than a JSON float holds; keep its bytes.
                arrays.append(np.asarray(value))
                return {
                    _TAG: "npscalar",
                    "dtype": value.dtype.str,
                    "file": f"a{len(arrays) - 1}.npy",
                }
            if value.dtype.kind in "biuf":
                return {_TAG: "npscalar", "dtype": value.dtype.str, "value": value.item()}
            if value.dtype.kind == "c":
                item = complex(value.item())
                return {_TAG: "npscalar", "dtype": value.dtype.str, "value": [item.real, item.imag]}
            raise _Unsupported(value, path)
        if isinstance(value, complex):
            return {_TAG: "complex", "value": [value.real, value.imag]}
        if type(value) is list:
            return [self._skeleton(v, arrays, f"{path}[{i}]") for i, v in enumerate(value)]
        if type(value) is tuple:
            items = [self._skeleton(v, arrays, f"{path}[{i}]") for i, v in enumerate(value)]
            return {_TAG: "tuple", "items": items}
        if type(value) is dict:
            if all(isinstance(k, str) for k in value) and _TAG not in value:
                return {k: self._skeleton(v, arrays, f"{path}.{k}") for k, v in value.items()}
            pairs = [
                [
                    self._skeleton(k, arrays, f"{path}<key>"),
                    self._skeleton(v, arrays, f"{path}.{k}"),
                ]
                for k, v in value.items()
            ]
            return {_TAG: "dict", "items": pairs}
        if isinstance(value, BaseModel):
            cls = type(value)
            if "<locals>" in cls.__qualname__:
                # Defined inside a function: no later process could import it back.
                raise _Unsupported(value, path)
            try:
                data = value.model_dump(mode="json")
            except Exception:
                raise _Unsupported(value, path) from None
            return {_TAG: "model", "class": f"{cls.__module__}:{cls.__qualname__}", "data": data}
        codec = self._leaves.leaf_codec(value) if self._leaves is not None and path else None
        if codec is None:
            raise _Unsupported(value, path)
        node: dict[str, Any] = {_TAG: "leaf", "codec": codec.name, "dir": f"l{len(arrays)}"}
        arrays.append(_Leaf(codec, value, node))
        return node

    def accepts(self, value: object) -> bool:
        try:
            self._skeleton(value, [], "")
        except _Unsupported:
            return False
        return True

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        return self.encode_into(value, EntryWriter(dest))

    def encode_into(self, value: object, writer: EntryWriter) -> dict[str, Any]:
        arrays: list[Any] = []  # numpy arrays and _Leaf values, numbered together
        try:
            skeleton = self._skeleton(value, arrays, "")
        except _Unsupported as exc:
            raise CodecError(f"the tree codec cannot store {exc}") from None
        for index, array in enumerate(arrays):
            if isinstance(array, _Leaf):
                folder = array.node["dir"]
                into = summing_encoder(array.codec)
                if into is not None:
                    array.node["meta"] = into(array.value, writer.folder_writer(folder))
                else:  # a codec that writes its files itself: the store reads them back
                    os.mkdir(writer.file_path(folder))
                    array.node["meta"] = array.codec.encode(array.value, writer.path / folder)
                    writer.unsummed.append(writer.prefix + folder)
            else:
                _save_array(array, writer, f"a{index}.npy")
        data = json.dumps(skeleton, allow_nan=True).encode()
        writer.write("tree.json", data)
        # Only a skeleton naming classes needs a key: plain trees stay loadable by anyone.
        return self.signer.sign(data) if _names_classes(skeleton) else {}

    def decode(self, src: Path, meta: Mapping[str, Any], *, mmap_min: int) -> object:
        data = _read(src, "tree.json")
        signed = "hmac" in meta
        if signed:
            self.signer.check(data, meta, what="tree.json (it names model classes)")
        return self._rebuild(json.loads(data), src, mmap_min, signed)

    def check_signature(self, src: Path, meta: Mapping[str, Any]) -> None:
        """For ``physpipe verify``: the signature, if the tree needs one (nothing decoded)."""
        data = _read(src, "tree.json")
        if "hmac" in meta or _names_classes(json.loads(data)):
            self.signer.check(data, meta, what="tree.json (it names model classes)")

    def _rebuild(self, node: Any, src: Path, mmap_min: int, signed: bool) -> Any:
        if isinstance(node, list):
            return [self._rebuild(v, src, mmap_min, signed) for v in node]
        if not isinstance(node, dict):
            return node
        tag = node.get(_TAG)
        if tag is None:
            return {k: self._rebuild(v, src, mmap_min, signed) for k, v in node.items()}
        if tag == "ndarray" or (tag == "npscalar" and "file" in node):
            name = node["file"]
            if "/" in name or name.startswith("."):
                raise CorruptEntryError(f"tree entry names an array file outside it: {name!r}")
            array = _load_array(src / name, mmap_min)
            return array if tag == "ndarray" else array[()]
        if tag == "npscalar":
            dtype = _numpy().dtype(node["dtype"])
            value = node["value"]
            if dtype.kind == "c":
                return dtype.type(complex(*value))
            return dtype.type(value)
        if tag == "complex":
            return complex(*node["value"])
        if tag == "tuple":
            return tuple(self._rebuild(v, src, mmap_min, signed) for v in node["items"])
        if tag == "dict":
            return {
                _hashable(self._rebuild(k, src, mmap_min, signed)): self._rebuild(
                    v, src, mmap_min, signed
                )
                for k, v in node["items"]
            }
        if tag == "model":
            if not signed:
                raise UnverifiableEntryError(
                    f"its tree.json names the class {node.get('class')!r} but is not signed "
                    "(written by an older version, or forged); its module is not imported"
                )
            return _import_model(node["class"]).model_validate(node["data"])
        if tag == "leaf":
            name, folder = node.get("codec"), node.get("dir")
            if not isinstance(folder, str) or "/" in folder or folder.startswith("."):
                raise CorruptEntryError(f"tree entry names a leaf outside it: {folder!r}")
            if self._leaves is None or not isinstance(name, str) or name in _NOT_LEAVES:
                raise CorruptEntryError(f"tree entry has a leaf of codec {name!r}")
            try:
                codec = self._leaves.get(name)
            except CodecError:
                raise CorruptEntryError(f"tree entry: no codec {name!r} for its leaf") from None
            return codec.decode(src / folder, node.get("meta") or {}, mmap_min=mmap_min)
        raise CorruptEntryError(f"tree entry has an unknown node tag {tag!r}")


def _names_classes(node: Any) -> bool:
    """Whether a skeleton holds a model node (whose decoding imports a module)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            if current.get(_TAG) == "model":
                return True
            stack.extend(current.values())
    return False


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def _import_model(path: str) -> type[BaseModel]:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise CorruptEntryError(f"{path} is not a pydantic model class")
    return obj


class PickleCodec:
    """Anything picklable, as ``value.pkl`` with an HMAC-SHA256 checked before unpickling."""

    name = "pickle"

    def __init__(self, signer: Signer | None = None) -> None:
        self.signer = signer if signer is not None else Signer()

    def accepts(self, value: object) -> bool:
        return True

    def encode(self, value: object, dest: Path) -> dict[str, Any]:
        return self.encode_into(value, EntryWriter(dest))

    def encode_into(self, value: object, writer: EntryWriter) -> dict[str, Any]:
        import pickle  # only pickled values pay for it: not a hit on a json or npy entry

        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise CodecError(f"pickling failed: {type(exc).__name__}: {exc}") from None
        signature = self.signer.sign(data)  # SecretError: no usable key, nothing written
        writer.write("value.pkl", data)
        return signature

    def decode(self, src: Path, meta: Mapping[str, Any], *, mmap_min: int) -> object:
        data = (src / "value.pkl").read_bytes()
        self.signer.check(data, meta, what="pickle")
        import pickle

        return pickle.loads(data)

    def check_signature(self, src: Path, meta: Mapping[str, Any]) -> None:
        """For ``physpipe verify``: the signature, without unpickling."""
        self.signer.check((src / "value.pkl").read_bytes(), meta, what="pickle")


class CodecRegistry:
    """Codecs by name; ``choose`` implements ``codec="auto"``."""

    AUTO_ORDER = ("npy", "json", "tree", "pickle")

    def __init__(self) -> None:
        self._codecs: dict[str, Codec] = {}
        signer = Signer()  # one key per registry, read once
        for codec in (NpyCodec(), JsonCodec(), TreeCodec(self, signer), PickleCodec(signer)):
            self.add(codec)
        #: Where the scientific codecs go, once something needs them: after the built-in
        #: codecs, before any added later (``None``: in place). A hit on a json or npy entry
        #: never imports their module.
        self._scientific_at: int | None = len(self._codecs)

    def _all(self) -> dict[str, Codec]:
        """Every codec, in registration order, the scientific ones in their place."""
        if self._scientific_at is not None:
            from pytest_physpipe.store.scientific import scientific_codecs

            at, self._scientific_at = self._scientific_at, None
            added = list(self._codecs.items())
            codecs = dict(added[:at])
            for codec in scientific_codecs():  # one registered under its name since wins
                codecs[codec.name] = self._codecs.get(codec.name, codec)
            codecs.update(added[at:])
            self._codecs = codecs
        return self._codecs

    def add(self, codec: Codec) -> None:
        """Register (or replace) a codec under ``codec.name``."""
        if not isinstance(codec, Codec) or not isinstance(getattr(codec, "name", None), str):
            raise TypeError(f"{codec!r} does not implement the Codec protocol")
        self._codecs[codec.name] = codec

    def leaf_codec(self, value: object) -> Codec | None:
        """The codec that stores ``value`` as a leaf of a tree (scientific or plugin codecs)."""
        for name, codec in self._all().items():
            if name not in _NOT_LEAVES and codec.accepts(value):
                return codec
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._codecs or name in self._all()

    def names(self) -> list[str]:
        return list(self._all())

    def get(self, name: str) -> Codec:
        codec = self._codecs.get(name)
        if codec is None:
            codec = self._all().get(name)
        if codec is None:
            raise CodecError(
                f"no codec named {name!r}; registered codecs: {', '.join(self._all())}"
            )
        return codec

    def choose(self, value: object, requested: str, *, stage: str) -> Codec:
        """The codec for ``value``: the one requested, or the first in AUTO_ORDER accepting it."""
        try:
            return self._choose(value, requested, stage=stage)
        except RecursionError:
            raise UnstorableValueError(
                f"stage {stage!r} returned a {type_name(value)} nested deeper than Python's "
                f"recursion limit ({sys.getrecursionlimit()}), which no codec can store. Return "
                "a flatter structure (arrays, a list of records), or pass cache=False to keep "
                "the value in memory only."
            ) from None

    def _choose(self, value: object, requested: str, *, stage: str) -> Codec:
        if requested != "auto":
            codec = self.get(requested)
            if not codec.accepts(value):
                raise UnstorableValueError(
                    f"stage {stage!r} returned a {type_name(value)}, which its codec "
                    f"{requested!r} cannot store. Return a type that codec takes, pass another "
                    f"codec= ({', '.join(self._all())}, or 'auto'), or cache=False to keep "
                    "the value in memory only."
                )
            return codec
        codecs = self._all()
        extra = [n for n in codecs if n not in self.AUTO_ORDER]
        for name in (*self.AUTO_ORDER[:-1], *extra, self.AUTO_ORDER[-1]):
            candidate = codecs.get(name)
            if candidate is not None and candidate.accepts(value):
                return candidate
        raise UnstorableValueError(f"stage {stage!r}: no codec accepts {type_name(value)}")


_SUMMING: dict[type, bool] = {}


def summing_encoder(codec: object) -> Callable[[object, EntryWriter], dict[str, Any]] | None:
    """``codec.encode_into`` when the store calls it instead of ``codec.encode`` (see
    :class:`Codec`), else ``None``: the codec writes its files itself and they are read back."""
    cls = type(codec)
    usable = _SUMMING.get(cls)
    if usable is None:
        into = next((c for c in cls.__mro__ if "encode_into" in c.__dict__), None)
        plain = next((c for c in cls.__mro__ if "encode" in c.__dict__), None)
        usable = _SUMMING[cls] = into is not None and (plain is None or issubclass(into, plain))
    if not usable or "encode" in getattr(codec, "__dict__", ()):
        return None
    method: Callable[[object, EntryWriter], dict[str, Any]] = codec.encode_into  # type: ignore[attr-defined]
    return method


def type_name(value: object) -> str:
    """``dict`` for builtins, ``module.Qualname`` otherwise: how error messages name a type."""
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )

"""Reading, hashing and syncing the files of a store entry, with plain file descriptors.

On a cache hit the path arithmetic and buffered file objects of ``pathlib`` and ``open`` cost
more than the I/O of a small file, so everything here works on ``os`` calls. The sampled hash
reads :data:`SAMPLE_COUNT` blocks of :data:`SAMPLE_BLOCK` bytes spread over the file, header
and tail included; the same blocks whoever computes it.

:class:`EntryWriter` creates the payload files of an entry being committed and sums each one
from the very bytes it writes, so a commit need not read its own files back: a file it names
holds exactly the bytes that were summed (every byte written, or an ``OSError``), and it
never names a file written some other way.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash

__all__ = [
    "JSON_PRIMITIVES",
    "SAMPLE_BLOCK",
    "SAMPLE_COUNT",
    "EntryWriter",
    "fsync_dir",
    "fsync_tree",
    "hash_file",
    "is_json_safe",
    "json_bytes",
    "read_all",
    "sample_fd",
    "sample_hash",
    "write_all",
    "write_new",
]

SAMPLE_BLOCK = 4096
SAMPLE_COUNT = 16


#: Exact types only: subclasses (``numpy.float64``, ``numpy.str_``, ``IntEnum`` members) would
#: come back as their base type, and a consumer must get what a fresh run gives it.
JSON_PRIMITIVES = (str, bool, int, float)


def is_json_safe(value: object) -> bool:
    """Plain JSON data only: dicts with string keys, lists, str, int, float, bool, None (the
    exact types: a subclass, a tuple or a numpy scalar is not), which :func:`json_bytes` may
    write with ``plain=True`` and ``json`` reads back equal."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if not isinstance(key, str):
                return False
            if item is not None and type(item) not in JSON_PRIMITIVES and not is_json_safe(item):
                return False
        return True
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            if item is not None and type(item) not in JSON_PRIMITIVES and not is_json_safe(item):
                return False
        return True
    return value is None or kind in JSON_PRIMITIVES


@functools.cache
def _to_json() -> Callable[..., bytes]:
    from pydantic_core import to_json  # not imported by `physpipe ls`, which never writes

    return to_json


def json_bytes(value: Any, *, plain: bool = True) -> bytes:
    """JSON-safe data as ``json.dumps(value).encode()`` would write it (up to spacing and
    the spelling of floats: the same values, NaN and infinities included), by pydantic-core's
    serializer: a fifth of the time for a ``meta.json``. What it refuses (a lone surrogate,
    an unknown type) goes through ``json``, which raises as it always did. For what a commit
    writes: a record as pydantic dumps it, codec metadata, a checked ``json`` value.

    Pass ``plain=False`` when ``value`` may hold what is not plain JSON data: pydantic-core
    writes bytes as text and a set as a list, where ``json`` raises (or writes a tuple as a
    list, as pydantic-core does)."""
    if not plain:
        return json.dumps(value, allow_nan=True).encode()
    try:
        return _to_json()(value, inf_nan_mode="constants")
    except ValueError:
        return json.dumps(value, allow_nan=True).encode()


def hash_file(path: str | Path, size: int = -1) -> str:
    with open(path, "rb") as handle:
        if 0 <= size <= 1 << 20:  # small: one read, one hash call
            return str(xxhash.xxh3_128_hexdigest(handle.read()))
        digest = xxhash.xxh3_128()
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
        return str(digest.hexdigest())


def sample_offsets(size: int) -> list[int]:
    last = max(size - SAMPLE_BLOCK, 0)
    return sorted({last * i // (SAMPLE_COUNT - 1) for i in range(SAMPLE_COUNT)})


def sample_hash(path: str | Path, size: int) -> str:
    """xxh3 of the header, the tail and evenly spaced blocks: a cheap check for big files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return sample_fd(fd, size)
    finally:
        os.close(fd)


def sample_fd(fd: int, size: int) -> str:
    digest = xxhash.xxh3_128()
    for offset in sample_offsets(size):
        digest.update(os.pread(fd, SAMPLE_BLOCK, offset))
    return digest.hexdigest()


def read_all(fd: int, size: int) -> bytes:
    """The file open at ``fd``, whose size is ``size``."""
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data
    chunks = [data]  # a short read (a signal, a network filesystem), or the file grew
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def fsync_tree(path: str | Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (a short write is continued, not lost)."""
    written = os.write(fd, data)
    if written != len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def write_new(path: str, data: bytes) -> int:
    """Create ``path`` (it must not exist) holding ``data``; its inode number."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        write_all(fd, data)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


class _SummingFile:
    """A new file of an entry, summed as it is written (``write`` takes any bytes-like)."""

    def __init__(self, writer: EntryWriter, name: str) -> None:
        self._writer, self._name = writer, name
        self._fd = os.open(writer.file_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self._digest = xxhash.xxh3_128()
        self._size = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        write_all(self._fd, view)
        self._digest.update(view)
        self._size += len(view)
        return len(view)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> _SummingFile:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.close()
        if kind is None:  # only a file written whole is summed
            self._writer.sums[self._writer.prefix + self._name] = (
                self._size,
                self._digest.hexdigest(),
            )


class EntryWriter:
    """Writes the files of an entry being committed into its empty folder, summing each.

    ``sums`` maps each file's path in the entry to its size and xxh3, computed from the bytes
    written; ``unsummed`` lists sub-folders whose files were written some other way (a codec
    without ``encode_into`` storing a leaf of a tree): the store reads those back to sum them.
    Names are plain file names made by the codec, never paths from outside.
    """

    def __init__(self, folder: str | os.PathLike[str], *, prefix: str = "") -> None:
        self.folder = os.fspath(folder)
        self.prefix = prefix
        self.sums: dict[str, tuple[int, str]] = {}
        self.unsummed: list[str] = []

    @property
    def path(self) -> Path:
        """The folder, for code that wants a :class:`~pathlib.Path`."""
        return Path(self.folder)

    def file_path(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def write(self, name: str, data: bytes) -> None:
        """Create the file ``name`` holding ``data``."""
        write_new(self.file_path(name), data)
        self.sums[self.prefix + name] = (len(data), xxhash.xxh3_128_hexdigest(data))

    def open(self, name: str) -> _SummingFile:
        """A new file ``name`` to ``write`` to (``numpy.save`` takes it); use it in a
        ``with`` block: it is summed when the block ends without an error."""
        return _SummingFile(self, name)

    def folder_writer(self, name: str) -> EntryWriter:
        """A new sub-folder ``name``, written through a writer that shares these sums."""
        os.mkdir(self.file_path(name))
        child = EntryWriter(self.file_path(name), prefix=f"{self.prefix}{name}/")
        child.sums, child.unsummed = self.sums, self.unsummed
        return child


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

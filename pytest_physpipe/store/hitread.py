"""The reads of a hit: ``meta.json`` with its stat, and the one payload file of a ``json`` or
``npy`` entry, read and checked in one pass.

What it guarantees: the bytes that are hashed are the bytes decoded (a small file is read once,
into memory), a mapped array is hashed through the very mapping it is served from, and every
payload file's size is the size that was committed. Everything comes from one open file, so
a file of a replacing entry fails the sums of the entry whose ``meta.json`` was read.

A small file costs three system calls (open, read, close): it is read one byte past its
committed size, and the bytes read are its size, so no ``fstat`` is needed to check it. Only
when they differ (a file of another size, or a short read on a network filesystem) does the
file's own size decide which, and the error names it as before.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import xxhash

from pytest_physpipe.errors import CorruptEntryError
from pytest_physpipe.store.codecs import JsonCodec, NpyCodec, array_from_bytes, map_array
from pytest_physpipe.store.fileio import read_all, sample_fd
from pytest_physpipe.store.meta import parse_json

__all__ = ["GENERIC", "NOT_SMALL", "decode_one_file", "read_stat"]

#: What :func:`decode_one_file` returns for an entry its codec must decode, and for one over
#: the size limit of :meth:`Store.load_small <pytest_physpipe.store.entries.Store.load_small>`.
GENERIC, NOT_SMALL = object(), object()


def read_stat(path: str) -> tuple[bytes, os.stat_result] | None:
    """The file at ``path`` and its stat (``None`` if there is none), from one descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        info = os.fstat(fd)
        size = info.st_size
        data = os.read(fd, size + 1)
        # Read whole, or a short read (a signal, a network filesystem) or a grown file.
        return (data if len(data) == size else data + read_all(fd, 0)), info
    finally:
        os.close(fd)


def decode_one_file(
    base: str,
    meta: dict[str, Any],
    codec: object,
    *,
    full: bool,
    limit: int | None,
    verify_max: int,
    mmap_min: int,
) -> object:
    """The value of a built-in ``json`` or ``npy`` entry at ``base``, read and checked in one
    pass. :data:`GENERIC` for any other entry (its codec decodes it after the store's
    ``verify``); with a ``limit``, :data:`NOT_SMALL` for any entry but one of these whose file
    is at most ``limit`` bytes. ``full``: hash every byte even above ``verify_max``.
    """
    files = meta.get("files")
    if type(codec) is JsonCodec:
        name = "value.json"
    elif type(codec) is NpyCodec:
        name = "value.npy"
    else:
        return GENERIC if limit is None else NOT_SMALL
    if not isinstance(files, dict) or len(files) != 1 or name not in files:
        return GENERIC if limit is None else NOT_SMALL
    expected = files[name]
    if limit is not None and not (type(expected) is dict and expected.get("size", 0) <= limit):
        return NOT_SMALL
    key, committed = meta["key"], expected["size"]
    fd = os.open(f"{base}/{name}", os.O_RDONLY)
    try:
        small = type(committed) is int and committed <= verify_max
        if small and not (name == "value.npy" and committed >= mmap_min):
            data: Any = os.read(fd, committed + 1)
            if len(data) != committed:
                data = _read_rest(fd, data, committed, key, name)
            sampled = False
        else:
            size = os.fstat(fd).st_size
            _check_size(key, name, size, committed)
            sampled = not full and size > verify_max and "sample" in expected
            if sampled:  # pread: cheaper than faulting the blocks into a mapping
                actual, wanted = sample_fd(fd, size), expected["sample"]
            if name == "value.npy" and size >= mmap_min:
                data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            else:
                data = read_all(fd, size)
    finally:
        os.close(fd)
    if not sampled:
        # A mapped file is hashed through the mapping it is served from: read once.
        actual, wanted = xxhash.xxh3_128_hexdigest(data), expected["xxh3"]
    if actual != wanted:
        raise CorruptEntryError(f"entry {key}: checksum mismatch in {name}")
    if name == "value.json":
        return parse_json(data)
    path = f"{base}/{name}"
    return map_array(data, path) if isinstance(data, mmap.mmap) else array_from_bytes(data, path)


def _read_rest(fd: int, data: bytes, committed: int, key: str, name: str) -> bytes:
    """The file open at ``fd``, of which ``data`` was read and which must hold ``committed``
    bytes (:class:`CorruptEntryError` naming its size if it does not)."""
    # Another size, or a short read (a signal, a network filesystem): the file's size decides.
    size = os.fstat(fd).st_size
    _check_size(key, name, size, committed)
    data += read_all(fd, size - len(data))
    _check_size(key, name, len(data), committed)  # it changed while we read it
    return data


def _check_size(key: str, name: str, size: int, committed: object) -> None:
    if size != committed:
        raise CorruptEntryError(f"entry {key}: {name} has {size} bytes, {committed} were committed")

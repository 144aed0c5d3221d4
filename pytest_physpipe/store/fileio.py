"""Reading, hashing and syncing the files of a store entry, with plain file descriptors.

On a cache hit the path arithmetic and buffered file objects of ``pathlib`` and ``open`` cost
more than the I/O of a small file, so everything here works on ``os`` calls. The sampled hash
reads :data:`SAMPLE_COUNT` blocks of :data:`SAMPLE_BLOCK` bytes spread over the file, header
and tail included; the same blocks whoever computes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

__all__ = [
    "SAMPLE_BLOCK",
    "SAMPLE_COUNT",
    "fsync_dir",
    "fsync_tree",
    "hash_file",
    "read_all",
    "sample_fd",
    "sample_hash",
    "write_new",
]

SAMPLE_BLOCK = 4096
SAMPLE_COUNT = 16


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


def fsync_tree(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def write_new(path: str, data: bytes) -> None:
    """Create ``path`` (it must not exist) holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

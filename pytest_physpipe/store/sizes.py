"""The store's size in the terminal summary: the total ``physpipe ls`` prints, kept per shard.

``index/entry-sizes.json`` records each shard's bytes (``entries/<k[:2]>/``) with the
modification time its directory had when they were counted. Every change to a shard's entries
renames a directory in or out of it, which sets that time; a shard whose time still matches is
taken as recorded, any other is counted again as ``ls`` counts it (one ``stat`` per entry, the
listing index's size for an entry it vouches for, a walk of any other) and recorded.

A shard changed within the last two seconds (:data:`_RACY_NS`) may change again within the same
tick of the filesystem's clock, leaving its time as recorded. Its record also carries a
fingerprint of the entries counted (their names and the inode numbers of their directories, as
the count listed them): the next run lists that shard and uses the record only if the same
entries are there, so a rerun right after a run that committed lists a few shards, not the
index. The listing module is imported only to count a shard that changed.

What it guarantees: the figure is the bytes of the entries ``ls`` lists; nothing here writes
anything but the record, which needs no lock (each row is valid only for the time and entries
it carries); an unwritable store is counted all the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import xxhash

from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.layout import StoreLayout, entry_names, tree_size

__all__ = ["store_size"]

#: A shard whose directory changed less than this long ago may change again within the same
#: mtime (timestamps are coarse: a kernel tick, a second on some filesystems).
_RACY_NS = 2_000_000_000
_SIZES_FORMAT = 1

#: A shard's record: the mtime (ns) of its directory, its bytes, and the fingerprint of its
#: entries when it was counted within the racy window (else ``None``).
_Record = tuple[int, int, str | None]


def store_size(layout: StoreLayout) -> int:
    """The bytes of every entry: the total ``physpipe ls`` prints (see the module docstring)."""
    path = layout.entry_sizes
    recorded = _read_sizes(path)
    try:
        shards = os.scandir(layout.entries)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    now = time.time_ns()
    current: dict[str, _Record] = {}
    changed: dict[str, int] = {}  # shard: mtime_ns before it is listed
    with shards:
        for item in shards:
            if not item.is_dir(follow_symlinks=False):
                continue
            try:
                mtime = item.stat(follow_symlinks=False).st_mtime_ns
            except FileNotFoundError:
                continue
            known = recorded.get(item.name)
            if known is None or known[0] != mtime:
                changed[item.name] = mtime
            elif known[2] is None:
                current[item.name] = known
            elif known[2] == _fingerprint(layout, item.name):  # the entries counted: still
                current[item.name] = (mtime, known[1], _racy(now, mtime, known[2]))
            else:
                changed[item.name] = mtime
    if changed:
        counted = _count_shards(layout, list(changed))
        for shard, mtime in changed.items():
            size, fingerprint = counted[shard]
            current[shard] = (mtime, size, _racy(now, mtime, fingerprint))
    if current != recorded:
        rows = {shard: list(_row(value)) for shard, value in sorted(current.items())}
        with contextlib.suppress(OSError):  # a read-only store: counted, not recorded
            write_text_atomic(path, json.dumps({"format": _SIZES_FORMAT, "shards": rows}))
    return sum(value[1] for value in current.values())


def _racy(now: int, mtime: int, fingerprint: str) -> str | None:
    """``fingerprint`` while a change within ``mtime``'s tick is still possible, else ``None``."""
    return fingerprint if now - mtime <= _RACY_NS else None


def _row(record: _Record) -> tuple[int, int] | _Record:
    return record[:2] if record[2] is None else record


def _read_sizes(path: os.PathLike[str]) -> dict[str, _Record]:
    """The record of each shard (none from a missing or garbage file). Rows of an earlier
    version counted within the racy window (an mtime of ``-1``) are skipped: counted again."""
    try:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != _SIZES_FORMAT:
        return {}
    shards = doc.get("shards")
    if not isinstance(shards, dict):
        return {}
    return {
        shard: (value[0], value[1], value[2] if len(value) == 3 else None)
        for shard, value in shards.items()
        if type(value) is list
        and len(value) in (2, 3)
        and type(value[0]) is int
        and type(value[1]) is int
        and value[0] >= 0
        and (len(value) == 2 or type(value[2]) is str)
    }


def _entries(fd: int, shard: str) -> tuple[list[str], list[int]]:
    """The entries of the shard open as ``fd`` and the inode numbers of their directories (from
    the listing itself: no ``stat``)."""
    with os.scandir(fd) as found:
        inodes = {item.name: item.inode() for item in found}
    names = entry_names(shard, list(inodes))
    return names, list(map(inodes.__getitem__, names))


def _fingerprint(layout: StoreLayout, shard: str) -> str:
    """The fingerprint of the entries in ``shard`` now (``""``: it cannot be listed)."""
    try:
        fd = os.open(layout.entries / shard, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return ""
    try:
        return _digest(*_entries(fd, shard))
    finally:
        os.close(fd)


def _digest(names: list[str], inodes: list[int]) -> str:
    """Which entries a shard holds: a directory renamed in, out or over one changes it."""
    return xxhash.xxh3_128_hexdigest("\0".join(sorted(map("{}:{}".format, names, inodes))).encode())


def _count_shards(layout: StoreLayout, shards: list[str]) -> dict[str, tuple[int, str]]:
    """The bytes of the entries in ``shards`` and the fingerprint of those counted: the
    listing index's size of an entry it vouches for (same ``meta.json`` inode), a walk of any
    other (damaged, or not in the index)."""
    from pytest_physpipe.store.listing import indexed_size  # the index: only when one changed

    size_of = indexed_size(layout)
    counted = dict.fromkeys(shards, (0, ""))
    for shard in shards:
        folder = os.fspath(layout.entries / shard)
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # removed since, or a symlink
        total = 0
        try:
            names, inodes = _entries(fd, shard)
            for name in names:
                try:
                    inode = os.stat(f"{name}/meta.json", dir_fd=fd).st_ino
                except (FileNotFoundError, NotADirectoryError):
                    inode = -1  # damaged: ls shows it with its files' size
                size = size_of(name, inode)
                total += tree_size(f"{folder}/{name}") if size is None else size
        finally:
            os.close(fd)
        counted[shard] = (total, _digest(names, inodes))
    return counted

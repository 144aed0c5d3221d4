"""Which filesystem holds the store, and the lock mode that follows from it.

``physpipe_lock`` takes one of :data:`LOCK_MODES`. ``auto`` picks soft locks on a network
filesystem (:data:`NETWORK_FILESYSTEMS`), where ``flock`` does not exclude across clients, and
``flock`` elsewhere, including where the type cannot be found out (no ``/proc``). The type is
read from ``/proc/self/mountinfo`` (else ``/proc/mounts``): the longest mount point covering
the path wins.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

__all__ = [
    "LOCK_MODES",
    "NETWORK_FILESYSTEMS",
    "LockMode",
    "filesystem_type",
    "is_network_filesystem",
    "resolve_lock_mode",
]

#: The values of ini ``physpipe_lock`` and ``physpipe --lock``.
LOCK_MODES = ("auto", "flock", "soft")
LockMode = Literal["auto", "flock", "soft"]

#: Filesystem types (as ``/proc/self/mountinfo`` spells them) where ``flock`` does not exclude
#: across clients, or is not known to: ``auto`` uses soft locks there. Any ``nfs*`` matches too.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "fuse.ceph",
        "fuse.ceph-fuse",
        "fuse.sshfs",
        "fuse.glusterfs",
        "glusterfs",
        "fuse.s3fs",
        "fuse.juicefs",
        "fuse.gcsfuse",
        "9p",
        "afs",
        "ncpfs",
        "orangefs",
        "pvfs2",
        "panfs",
        "wekafs",
        "davfs",
        "fuse.davfs",
    }
)


def _unescape_mount(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _parse_mounts(mountinfo: str | None, mounts: str | None) -> list[tuple[str, str]]:
    """(mount point, fs type) pairs from ``/proc/self/mountinfo`` or else ``/proc/mounts``."""
    pairs: list[tuple[str, str]] = []
    if mountinfo:
        for line in mountinfo.splitlines():
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            if len(fields) <= sep + 1 or len(fields) < 5:
                continue
            pairs.append((_unescape_mount(fields[4]), fields[sep + 1]))
    elif mounts:
        for line in mounts.splitlines():
            fields = line.split()
            if len(fields) >= 3:
                pairs.append((_unescape_mount(fields[1]), fields[2]))
    return pairs


def _fs_type_from_tables(path: Path, mountinfo: str | None, mounts: str | None) -> str | None:
    """The type of the filesystem holding ``path``: its longest mount-point prefix wins."""
    best: tuple[int, str] | None = None
    text = str(path)
    for mount_point, fs_type in _parse_mounts(mountinfo, mounts):
        prefix = mount_point.rstrip("/")
        covers = text == prefix or text.startswith(prefix + "/") or mount_point == "/"
        # Later lines win ties: a mount stacked on the same point hides the earlier one.
        if covers and (best is None or len(prefix) >= best[0]):
            best = (len(prefix), fs_type)
    return None if best is None else best[1]


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except OSError:
        return None  # no /proc (macOS, BSD): the type is unknown and the caller falls back


def filesystem_type(path: Path) -> str | None:
    """The filesystem type of ``path`` (which need not exist yet), or ``None`` if unknown."""
    resolved = Path(os.path.abspath(path))
    with contextlib.suppress(OSError, RuntimeError):
        resolved = path.resolve()  # follow symlinks that exist; a missing tail is kept as is
    mountinfo = _read_text("/proc/self/mountinfo")
    mounts = None if mountinfo else _read_text("/proc/mounts")
    return _fs_type_from_tables(resolved, mountinfo, mounts)


def is_network_filesystem(fs_type: str | None) -> bool:
    """Whether ``flock`` cannot be trusted to exclude across clients on ``fs_type``."""
    if fs_type is None:
        return False
    return fs_type in NETWORK_FILESYSTEMS or fs_type.startswith("nfs")


def resolve_lock_mode(mode: str, path: Path) -> Literal["flock", "soft"]:
    """The lock kind to use for the store at ``path``, from ini ``physpipe_lock``.

    ``auto`` picks ``soft`` on a network filesystem (see :data:`NETWORK_FILESYSTEMS`) and
    ``flock`` otherwise, including where the type cannot be found out (no ``/proc``).
    """
    if mode == "flock":
        return "flock"
    if mode == "soft":
        return "soft"
    if mode == "auto":
        return "soft" if is_network_filesystem(filesystem_type(path)) else "flock"
    raise ValueError(
        f"physpipe_lock = {mode!r} is not a lock mode. Set the ini option physpipe_lock to "
        "'auto' (the default: soft locks on network filesystems, flock elsewhere), 'flock' "
        "(kernel locks; only where every process runs on one host or the filesystem honours "
        "flock across clients) or 'soft' (lock files with a heartbeat; works on NFS)."
    )

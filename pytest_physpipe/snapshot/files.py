"""Golden files and their array sidecars on disk.

Layout, one collection per test module::

    __snapshots__/test_orbit.physics            # JSON: values, provenance, array summaries
    __snapshots__/test_orbit.arrays/.<xxh3>.npy # arrays too large to inline, by content hash

Guarantees: every file is written beside its final path and renamed into place (no reader
sees half a file); writers of one golden file, xdist workers included, hold one lock per file,
kept out of the source tree; a sidecar is read only if its name is a sidecar name, its dtype and
shape are what the golden says and its content matches the checksum in its name; sidecars no
entry refers to are removed when their golden file is rewritten, except those written since the
session started (an entry not yet written may refer to them: :mod:`.writes`).

Sidecar names start with a dot on purpose: syrupy's unused-snapshot cleanup (of *any*
extension sharing ``__snapshots__``, amber included) deletes files it does not own under
``--snapshot-update``, and skips dotfiles.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pytest_physpipe.snapshot.document import parse_document
from pytest_physpipe.snapshot.encoding import GoldenFileError, SidecarLoader, digest, dtype_text

__all__ = [
    "collect_garbage",
    "golden_lock",
    "load_document",
    "sidecar_dir",
    "sidecar_loader",
    "write_atomic",
]

#: Sidecars larger than this are memory-mapped rather than read into memory.
MMAP_MIN_BYTES = 16 << 20
_SIDECAR = re.compile(r"\.[0-9a-f]{32}\.npy\Z")


def sidecar_dir(location: str | Path) -> Path:
    """The folder of a golden file's sidecars: ``test_x.physics`` -> ``test_x.arrays``."""
    path = Path(location)
    return path.with_name(path.name.rsplit(".", 1)[0] + ".arrays")


@lru_cache(maxsize=128)
def _load_cached(location: str, stamp: tuple[int, int]) -> dict[str, Any]:
    # Keyed by (mtime, size) so a file rewritten by another xdist worker is read again.
    return parse_document(Path(location).read_text(encoding="utf-8"), location)


def load_document(location: str) -> dict[str, Any] | None:
    """The parsed golden file at ``location``, None if there is none (cached while unchanged)."""
    try:
        st = os.stat(location)
    except FileNotFoundError:
        return None
    return _load_cached(location, (st.st_mtime_ns, st.st_size))


def write_atomic(path: Path, write: Any) -> None:
    """Write next to ``path`` and rename into place: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def golden_lock(location: str) -> Any:
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


def collect_garbage(
    array_dir: Path, referenced: set[str], *, keep_since_ns: int | None = None
) -> None:
    """Remove the sidecars in ``array_dir`` not in ``referenced`` (and the folder if empty).

    Sidecars modified at or after ``keep_since_ns`` (the session's start) are kept: an entry
    of this session, in this or another xdist worker, may refer to one before it is written.
    """
    if not array_dir.is_dir():
        return
    for path in array_dir.iterdir():
        if not _SIDECAR.match(path.name) or path.name in referenced:
            continue
        try:
            if keep_since_ns is not None and path.stat().st_mtime_ns >= keep_since_ns:
                continue
        except FileNotFoundError:
            continue
        path.unlink(missing_ok=True)
    if not any(array_dir.iterdir()):
        array_dir.rmdir()


def sidecar_loader(directory: Path) -> SidecarLoader:
    """How a decoder reads the sidecars of one golden file, verifying each."""

    def load(name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        path = directory / name
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
        if array.shape != shape or dtype_text(array.dtype) != dtype:
            raise GoldenFileError(
                f"golden array file {path} holds {dtype_text(array.dtype)} {array.shape}, but "
                f"the golden says {dtype} {shape}"
            )
        if f".{digest(array)}.npy" != path.name:
            raise GoldenFileError(
                f"golden array file {path} does not match its checksum (edited or corrupt); "
                "restore it from version control, or regenerate with `pytest --snapshot-update`"
            )
        result: np.ndarray = array
        return result

    return load

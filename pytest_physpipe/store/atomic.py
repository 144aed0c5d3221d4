"""Small files written whole: built beside the final path, then renamed into place.

The one writer of small files in the package. A reader sees the old file or the new one, never
half of one; on any failure the temporary file is removed and nothing changes. With
``exclusive=True`` an existing file is never replaced (``link`` instead of ``rename``): the
first writer wins and the others get :class:`FileExistsError`. For store entries, which are
directories, see :meth:`pytest_physpipe.store.entries.Store.commit`.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

__all__ = ["in_flight_target", "write_bytes_atomic", "write_text_atomic"]

# The temporary name of a file being written: ``.<name>.<pid>.<8 hex digits>.tmp``.
_IN_FLIGHT = re.compile(r"\.(?P<name>.+)\.\d+\.[0-9a-f]{8}\.tmp")


def in_flight_target(name: str) -> str | None:
    """The final name a temporary file of this writer is for, or None if it is not one.

    Another process may be in the middle of writing beside the final path; whoever lists the
    folder at that moment sees this name.
    """
    match = _IN_FLIGHT.fullmatch(name)
    return match["name"] if match else None


def write_bytes_atomic(
    path: Path,
    data: bytes,
    *,
    make_parents: bool = False,
    mode: int = 0o666,
    exclusive: bool = False,
    fsync: bool = False,
) -> None:
    """Put ``data`` at ``path`` atomically; the file gets ``mode`` (less the umask).

    ``exclusive``: fail with :class:`FileExistsError` if ``path`` exists (then or by the time
    the data is written); the file appears with all its bytes or not at all.
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if it exists: never replaces a file another wrote
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(
    path: Path, text: str, *, make_parents: bool = False, mode: int = 0o666
) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes_atomic(path, text.encode("utf-8"), make_parents=make_parents, mode=mode)

"""Small files written whole: built beside the final path, then renamed into place.

A reader sees the old file or the new one, never half of one (pytest's cache provider does the
same). For store entries, which are directories, see
:meth:`pytest_physpipe.store.entries.Store.commit`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["write_text_atomic"]


def write_text_atomic(path: Path, text: str, *, make_parents: bool = False) -> None:
    """Replace ``path`` with ``text`` atomically (the temporary file is removed on failure)."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

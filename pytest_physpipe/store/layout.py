"""Every path under a store root, in one place.

::

    CACHEDIR.TAG, .gitignore         markers (only in a directory the store created)
    entries/<k[:2]>/<key>/           committed entries (meta.json + payload + artifacts/)
    tmp/<what>.<host>.<pid>.<rand>   scratch: entries being built, stage work dirs, artifacts
    owners/<host>.<pid>.json         owner record of a process with scratch here (heartbeat)
    trash/<name>.<rand>              entries on their way out
    locks/<key>.lock                 per-key locks; locks/<key>.submit.lock for batch submission
    slots/<run_id>/                  one run's CPU/GPU slot files
    runs/<run_id>/manifest-<w>.json one run's scheduling manifests; runs/durations.json (costs)
    jobs/<key>/                      batch job spec, outcome and log
    index/<stage>.json               the latest key and key manifest of a stage, per param id
    index/<stage>/<param>.json       the same, one file per param (written by older versions)
    index/entry-listing.json         the listing index (store/listing.py); .entry-listing.lock
    index/entry-listing/*.jsonl      its journals, one per committing process
    index/entry-sizes.json           each shard's bytes (the terminal summary's store size)

The files of the listing and of the store's size hold a ``-`` in their names and no stage name
(an identifier) does, so they never meet a stage's ``index/<stage>.json``, ``.<stage>.lock``
or ``<stage>/``. Earlier releases kept the listing in ``index/entries.json``, ``.entries.lock``
and ``entries/*.jsonl``, the very names of a stage called ``entries``: a listing found there
seeds the new one once and is then removed (see ``store/listing.py``).

No other module builds a path under the root: each asks a :class:`StoreLayout`. Scratch names
carry their owner (host and pid) so that housekeeping can tell a live owner from a dead one
without reading anything else (see ``store/scratch.py``).
"""

from __future__ import annotations

import binascii
import os
import re
from pathlib import Path
from typing import NamedTuple

import xxhash

from pytest_physpipe.keys import KEY_PATTERN
from pytest_physpipe.store.hosts import hostname

__all__ = ["LAYOUT_NAMES", "ScratchOwner", "StoreLayout", "entry_names", "tree_size"]

#: What a store root may hold; anything else means the directory is not (only) a store.
LAYOUT_NAMES = frozenset(
    {
        "CACHEDIR.TAG",
        ".gitignore",
        "entries",
        "index",
        "tmp",
        "trash",
        "locks",
        "owners",
        "slots",
        "runs",
        "jobs",
    }
)
#: The names that are keys in the listing of a shard joined by NULs (which no file name holds),
#: found by one search instead of a match per name.
_KEYS_IN = re.compile(r"(?<![^\0])[0-9a-f]{32}(?![^\0])").findall
#: Sub-directories made when a store is created.
CREATED_DIRS = ("entries", "tmp", "trash", "locks")


class ScratchOwner(NamedTuple):
    """The owner a scratch name carries."""

    host: str
    pid: int


class StoreLayout:
    """Paths of the store rooted at ``root`` (nothing is created here)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.entries = self.root / "entries"
        self.tmp = self.root / "tmp"
        self.trash = self.root / "trash"
        self.locks = self.root / "locks"
        self.slots = self.root / "slots"
        self.runs = self.root / "runs"
        self.jobs = self.root / "jobs"
        self.owners = self.root / "owners"
        self.index = self.root / "index"
        #: The listing index (see ``store/listing.py``): snapshot, journals, lock, shard sizes.
        self.listing = self.index / "entry-listing.json"
        self.listing_journals = self.index / "entry-listing"
        self.listing_lock = self.index / ".entry-listing.lock"
        #: Where earlier releases kept the snapshot and journals of the listing.
        self.old_listing = self.index / "entries.json"
        self.old_listing_journals = self.index / "entries"
        self.entry_sizes = self.index / "entry-sizes.json"
        self.cachedir_tag = self.root / "CACHEDIR.TAG"
        self.gitignore = self.root / ".gitignore"
        self._entries = os.fspath(self.entries)
        #: ``tmp/`` and ``locks/`` as plain strings: a commit builds its paths from them.
        self.tmp_path = os.fspath(self.tmp)
        self.locks_path = os.fspath(self.locks)

    # -- entries and their locks -------------------------------------------------------------

    def entry_path(self, key: str) -> str:
        """Where the entry for ``key`` lives (a plain string: the hit path is hot)."""
        return f"{self._entries}/{key[:2]}/{key}"

    def index_path(self, stage: str, param_id: str | None) -> Path:
        """The latest manifest of ``stage`` for ``param_id`` (``None``: the stage's latest of
        any param). Stage names are identifiers; a param id may hold anything, so it is hashed."""
        if param_id is None:
            return self.index / stage / "latest.json"
        return self.index / stage / f"p-{xxhash.xxh3_64_hexdigest(param_id.encode())}.json"

    def stage_index_path(self, stage: str) -> Path:
        """The latest key and manifest of ``stage`` per param id (stage names are identifiers)."""
        return self.index / f"{stage}.json"

    def stage_index_lock(self, stage: str) -> Path:
        """Taken (``flock``) while a process merges its notes into :meth:`stage_index_path`."""
        return self.index / f".{stage}.lock"

    def lock_path(self, key: str) -> Path:
        return self.locks / f"{key}.lock"

    def lock_file(self, key: str) -> str:
        """:meth:`lock_path` as a plain string (a miss takes it: no path arithmetic)."""
        return f"{self.locks_path}/{key}.lock"

    def submit_lock_path(self, key: str) -> Path:
        return self.locks / f"{key}.submit.lock"

    @staticmethod
    def key_of_lock(path: Path) -> str | None:
        """The key a per-key lock file belongs to, or ``None`` for any other file."""
        key = path.name.removesuffix(".lock")
        return key if path.name.endswith(".lock") and KEY_PATTERN.match(key) else None

    # -- runs, slots, jobs -------------------------------------------------------------------

    def slots_dir(self, run_id: str) -> Path:
        return self.slots / run_id

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    @staticmethod
    def manifest_name(worker: object) -> str:
        """The name of an xdist worker's scheduling manifest in its run's :meth:`run_dir`."""
        return f"manifest-{worker}.json"

    @property
    def durations(self) -> Path:
        return self.runs / "durations.json"

    def job_dir(self, key: str) -> Path:
        return self.jobs / key

    # -- scratch and trash -------------------------------------------------------------------

    @staticmethod
    def scratch_prefix(what: str) -> str:
        """``<what>.<host>.<pid>.``: a scratch name of this process, before its random tail."""
        return f"{what}.{hostname()}.{os.getpid()}."

    @staticmethod
    def scratch_owner(name: str) -> ScratchOwner | None:
        """The owner a scratch name carries (the host may hold dots), or ``None``."""
        parts = name.split(".")
        if len(parts) < 4 or not parts[-2].isdigit():
            return None
        return ScratchOwner(".".join(parts[1:-2]), int(parts[-2]))

    def owner_record(self, host: str, pid: int) -> Path:
        return self.owners / f"{host}.{pid}.json"

    def trash_path(self, name: str, tail: str) -> Path:
        return self.trash / f"{name}.{tail}"


def tree_size(path: Path | str) -> int:
    """Bytes in the files under ``path`` (symlinks count as themselves, never followed)."""
    total = 0
    stack = [os.fspath(path)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for item in it:
                    if item.is_dir(follow_symlinks=False):
                        stack.append(item.path)
                    else:
                        total += item.stat(follow_symlinks=False).st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


def entry_names(shard: str, names: list[str]) -> list[str]:
    """The entries among ``names``, the listing of the shard ``entries/<shard>/``: the keys it
    holds that start with ``shard``. A key's folder in another shard (misplaced by hand) is no
    entry: nothing looks for it there, and listing it would show that key twice. A shard holds
    nothing else, which a few C calls over its whole listing confirm (32 lowercase hex digits
    each, the first two the shard's); else they are found by one search."""
    joined = "\0".join(names)
    count = len(names)
    if (
        len(shard) == 2
        and len(joined) == 33 * count - 1
        and joined[32::33] == "\0" * (count - 1)
        and joined[0::33] == shard[0] * count
        and joined[1::33] == shard[1] * count
        and joined == joined.lower()
    ):
        try:  # not hex (binascii.Error is a ValueError)
            binascii.a2b_hex(joined.replace("\0", ""))
        except ValueError:
            pass
        else:
            return names
    return [name for name in _KEYS_IN(joined) if name[:2] == shard]

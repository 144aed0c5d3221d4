"""The store: one immutable directory per provenance key, committed by an atomic rename.

Paths under the root come from :class:`~pytest_physpipe.store.layout.StoreLayout`: entries
are built in ``tmp/``, replaced ones go through ``trash/``, misses take ``locks/<key>.lock``.

A reader never sees a partial entry: it is built in ``tmp/`` and renamed into place whole. A
hit takes no lock, so :meth:`Store.load` must survive the entry being replaced under it: a file
that vanishes mid-load is a miss, a checksum mismatch raises :class:`CorruptEntryError` and the
caller retries under the lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_physpipe.errors import (
    CodecError,
    CorruptEntryError,
    StoreError,
    UnstorableValueError,
)
from pytest_physpipe.frozen import FrozenValue
from pytest_physpipe.keys import KEY_PATTERN
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.atomic import in_flight_target, write_text_atomic
from pytest_physpipe.store.codecs import (
    Codec,
    CodecRegistry,
    is_json_safe,
    summing_encoder,
    type_name,
)
from pytest_physpipe.store.fileio import (
    EntryWriter,
    fsync_dir,
    fsync_tree,
    hash_file,
    json_bytes,
    sample_hash,
    write_new,
)
from pytest_physpipe.store.filesystem import resolve_lock_mode
from pytest_physpipe.store.hitread import GENERIC, NOT_SMALL, decode_one_file, read_stat
from pytest_physpipe.store.journal import Summary, close_journal, journal
from pytest_physpipe.store.layout import (
    CREATED_DIRS,
    LAYOUT_NAMES,
    StoreLayout,
    entry_names,
    tree_size,
)
from pytest_physpipe.store.meta import parse_meta, parse_meta_fields
from pytest_physpipe.store.pending import LATEST, pending, read_note, read_stage_index
from pytest_physpipe.store.scratch import cleanup, make_scratch, real_dir, scratch_dir

if TYPE_CHECKING:
    from pytest_physpipe.store.locks import KeyLock

__all__ = ["Entry", "Loaded", "Store"]

ENTRY_FORMAT = 1
_TOUCH_EVERY_S = 3600.0
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This directory is a pytest-physpipe store (https://bford.info/cachedir/).\n"
)


class Loaded:
    """A value loaded from an entry, with the record it was committed with."""

    __slots__ = ("_where", "meta", "record", "value")

    def __init__(
        self, value: Any, record: StageRecord, meta: dict[str, Any], path: str | Path
    ) -> None:
        self.value = value
        self.record = record
        self.meta = meta
        self._where = path

    @property
    def path(self) -> Path:
        """The entry's directory (a :class:`~pathlib.Path` only for who asks: a hit does not)."""
        return Path(self._where)


@dataclass(init=False, repr=False, eq=False)
class Entry(FrozenValue):
    """What ``physpipe ls`` shows about one entry (immutable, equal by value)."""

    key: str
    path: Path
    record: StageRecord
    size: int
    last_used: float

    def __init__(
        self, key: str, path: Path, record: StageRecord, size: int, last_used: float
    ) -> None:
        # Written out rather than generated: see pytest_physpipe.frozen.
        self.__dict__.update(key=key, path=path, record=record, size=size, last_used=last_used)


class Store:
    """A store rooted at ``root``; see the module docstring for the layout and guarantees."""

    def __init__(
        self,
        root: Path,
        *,
        codecs: CodecRegistry | None = None,
        lock_mode: str = "auto",
        verify_max: int = 64 << 20,
        mmap_min: int = 1 << 20,
        lock_timeout: float | None = None,
        fsync: Literal["entry", "session", "none"] = "session",
    ) -> None:
        self.root = Path(root)
        #: When commits reach the disk: see ``docs/store.md`` (durability).
        self.fsync = fsync
        self._index_cache: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
        self.layout = StoreLayout(self.root)
        self.codecs = codecs if codecs is not None else CodecRegistry()
        self.verify_max = verify_max
        self.mmap_min = mmap_min
        self.lock_timeout = lock_timeout
        self._lock_mode_option = lock_mode
        self._lock_mode: Literal["flock", "soft"] | None = None
        self._ready = False
        #: Called with a sentence while a lock wait goes on (default: a logged warning).
        self.on_wait: Callable[[str], None] | None = None

    # -- layout ---------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store if needed; :class:`StoreError` if that is impossible or unsafe.

        A directory the store creates gets owner-only permissions and the marker files
        (``CACHEDIR.TAG``, ``.gitignore``). An existing directory is used as is: a store (it
        holds only store paths) or an empty directory (adopted: markers written, permissions
        left alone). One that holds anything else (a project, a home directory) is refused.
        """
        if self._ready:
            return
        layout = self.layout
        try:
            created = False
            try:
                self.root.mkdir(parents=True, mode=0o700)
                created = True
            except FileExistsError:
                if not self.root.is_dir():
                    raise StoreError(
                        f"the physpipe store {self.root} is a file, not a directory. Point "
                        "--physpipe-dir (or PHYSPIPE_DIR, or ini physpipe_dir) at a directory."
                    ) from None
                self._refuse_foreign()
                # A store whose root our own slot files made (no markers yet) is ours too.
                created = not layout.cachedir_tag.exists() and any(
                    (self.root / name).exists() for name in LAYOUT_NAMES
                )
            for sub in CREATED_DIRS:
                (self.root / sub).mkdir(exist_ok=True, mode=0o700)
            if created:
                with contextlib.suppress(PermissionError):  # a group store keeps its mode
                    if stat.S_IMODE(self.root.stat().st_mode) & 0o077:
                        self.root.chmod(0o700)
            self._write_once(layout.cachedir_tag, _CACHEDIR_TAG)
            self._write_once(layout.gitignore, "# created by pytest-physpipe\n*\n")
            probe = layout.tmp / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"cannot create or write the physpipe store at {self.root} ({exc.strerror or exc})"
                ". Point --physpipe-dir (or PHYSPIPE_DIR, or ini physpipe_dir) at a writable "
                "directory, or run with --physpipe-no-cache."
            ) from None
        self._ready = True

    def _refuse_foreign(self) -> None:
        """Raise :class:`StoreError` if the existing root holds anything but store paths."""
        if self.layout.cachedir_tag.is_file():
            return  # a store (perhaps one with files of its user's beside it): keep using it
        # Another process creating the same store may be writing its markers right now.
        foreign = sorted(
            n
            for n in os.listdir(self.root)
            if n not in LAYOUT_NAMES and in_flight_target(n) not in LAYOUT_NAMES
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise StoreError(
                f"the physpipe store directory {self.root} already holds files that are not "
                f"part of a store ({shown}). The store marks its directory as a cache "
                "(backup tools and git skip it), so it only uses a new or empty directory: "
                f"point --physpipe-dir (or PHYSPIPE_DIR, or ini physpipe_dir) at one, such as "
                f"{self.root / '.physpipe'}."
            )

    def _write_once(self, path: Path, text: str) -> None:
        if not path.exists():
            write_text_atomic(path, text)

    def entry_dir(self, key: str) -> Path:
        """Where the entry for ``key`` lives; refuses anything but a 32-hex-digit key."""
        return Path(self._entry_path(key))

    def _entry_path(self, key: str) -> str:
        # Plain strings on the hit path: pathlib costs more than the I/O for small entries.
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise StoreError(f"{key!r} is not a physpipe key (32 lowercase hex digits)")
        return self.layout.entry_path(key)

    @property
    def lock_mode(self) -> Literal["flock", "soft"]:
        if self._lock_mode is None:
            self._lock_mode = resolve_lock_mode(self._lock_mode_option, self.root)
        return self._lock_mode

    def lock(self, key: str, *, describe: str = "") -> KeyLock:
        """The per-key lock (a context manager). Only misses take it (and import it)."""
        from pytest_physpipe.store.locks import KeyLock

        self._entry_path(key)  # validates the key
        return KeyLock(
            self.layout.lock_file(key),
            mode=self.lock_mode,
            timeout=self.lock_timeout,
            describe=describe or key,
            on_wait=self.on_wait,
        )

    # -- reading --------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return os.path.isfile(f"{self._entry_path(key)}/meta.json")

    def read_meta(self, key: str) -> dict[str, Any] | None:
        """The entry's ``meta.json`` as plain data (``None`` if there is none)."""
        found = read_stat(f"{self._entry_path(key)}/meta.json")
        return None if found is None else parse_meta_fields(found[0], key)

    def verify(self, key: str, meta: dict[str, Any], *, full: bool = False) -> None:
        """Check every payload file's size and checksum (sampled above ``verify_max``)."""
        base = self._entry_path(key)
        files = meta.get("files")
        if not isinstance(files, dict) or not files:
            raise CorruptEntryError(f"entry {key}: meta.json lists no payload files")
        for rel, info in files.items():
            if rel.startswith("/") or ".." in rel.split("/"):
                raise CorruptEntryError(f"entry {key}: payload path {rel!r} escapes the entry")
            path = f"{base}/{rel}"
            size = os.stat(path).st_size  # FileNotFoundError: vanished, the caller's miss
            if size != info["size"]:
                raise CorruptEntryError(
                    f"entry {key}: {rel} has {size} bytes, {info['size']} were committed"
                )
            # No sample: committed under a larger physpipe_verify_max; check it in full.
            if full or size <= self.verify_max or "sample" not in info:
                actual, expected = hash_file(path, size), info["xxh3"]
            else:
                actual, expected = sample_hash(path, size), info["sample"]
            if actual != expected:
                raise CorruptEntryError(f"entry {key}: checksum mismatch in {rel}")

    def check_signature(self, key: str, meta: dict[str, Any]) -> None:
        """Check the signature of a signed entry without decoding it (``physpipe verify``).

        Raises :class:`~pytest_physpipe.errors.SignatureError` (or its subclass for a foreign
        signature) or :class:`~pytest_physpipe.errors.UnverifiableEntryError`.
        """
        codec = self.codecs.get(str(meta["codec"]))
        check = getattr(codec, "check_signature", None)
        if check is not None:
            check(self.entry_dir(key), meta.get("codec_meta", {}))

    def load(self, key: str, *, full_verify: bool = False) -> Loaded | None:
        """The entry's value, or ``None`` if there is none (or it vanished while loading).

        Raises :class:`CorruptEntryError` when the entry exists but fails verification.
        """
        return self._load(key, full_verify, None)

    def load_small(self, key: str, max_bytes: int, *, full_verify: bool = False) -> Loaded | None:
        """What :meth:`load` returns for an entry whose payload is one built-in ``json`` or
        ``npy`` file of at most ``max_bytes`` (read, not mapped), read and checked the same way;
        ``None`` for any other entry, as for none. Read-ahead loads through this: it never
        holds a large value, nor runs a codec's own decoder for an entry nobody asked for yet.
        """
        return self._load(key, full_verify, min(max_bytes, self.mmap_min - 1))

    def _load(self, key: str, full_verify: bool, limit: int | None) -> Loaded | None:
        base = self._entry_path(key)
        meta: dict[str, Any] | None = None
        inode, touched = -1, 0.0
        try:
            found = read_stat(f"{base}/meta.json")
            if found is None:
                return None
            data, info = found
            inode, touched = info.st_ino, info.st_mtime
            meta, record = parse_meta(data, key)
            codec = self.codecs.get(str(meta["codec"]))
            value = decode_one_file(
                base,
                meta,
                codec,
                full=full_verify,
                limit=limit,
                verify_max=self.verify_max,
                mmap_min=self.mmap_min,
            )
            if value is NOT_SMALL:
                return None
            if value is GENERIC:
                self.verify(key, meta, full=full_verify)
                value = codec.decode(Path(base), meta.get("codec_meta", {}), mmap_min=self.mmap_min)
                if not self._unchanged(key, inode):
                    return None  # replaced while we decoded: what we read may be the new files
        except (FileNotFoundError, NotADirectoryError) as exc:
            if meta is not None and self._unchanged(key, inode):
                # The entry is still the one we started on, so a file is missing from it.
                raise CorruptEntryError(
                    f"entry {key}: payload file {Path(exc.filename or '?').name} is missing"
                ) from None
            return None  # replaced or removed under us: a miss, retried under the lock
        except CorruptEntryError:
            if meta is not None and not self._unchanged(key, inode):
                return None  # replaced while we read it: the new files are not the old sums
            raise
        except Exception as exc:
            # Whatever else stops a load (a pickled class renamed or moved, a model class that
            # no longer imports, mistyped metadata, a codec's own error) makes the entry
            # unusable: the caller warns once, naming the cause, and recomputes it.
            raise CorruptEntryError(f"entry {key}: cannot be loaded ({_cause(exc)})") from None
        artifacts = meta.get("artifacts")
        if artifacts:  # the record is this load's own: no copy
            record.artifacts = {n: f"{base}/{rel}" for n, rel in artifacts.items()}
        if time.time() - touched > _TOUCH_EVERY_S:
            # `physpipe prune` removes the least recently used first; an hour is precise
            # enough for that, and spares a metadata write on nearly every hit.
            with contextlib.suppress(OSError):  # a read-only store is fine: bookkeeping only
                os.utime(f"{base}/meta.json")
        return Loaded(value, record, meta, base)

    def _unchanged(self, key: str, inode: int) -> bool:
        """Whether the entry is still the version whose ``meta.json`` had ``inode``.

        Entries are immutable and replaced whole (a new directory renamed into place), so a
        replaced entry has a new ``meta.json`` inode.
        """
        try:
            return os.stat(f"{self._entry_path(key)}/meta.json").st_ino == inode
        except (FileNotFoundError, NotADirectoryError):
            return False

    # -- writing --------------------------------------------------------------------------------

    def commit(
        self,
        key: str,
        *,
        value: object,
        record: StageRecord,
        run_id: str,
        codec: str = "auto",
        stage: str | None = None,
        artifacts: dict[str, Path] | None = None,
        extra_meta: dict[str, Any] | None = None,
        replace: bool = False,
    ) -> Path:
        """Write an entry atomically. Call under the key's lock.

        ``codec`` is a codec name or ``"auto"``: the codec is chosen here, once, from this
        store's registry (``stage`` names the stage in errors). ``artifacts`` are moved into
        the entry (renamed: they are in a scratch folder of this store, so nothing is copied).
        On any failure nothing is left behind and the error propagates (an ``OSError`` for a
        full disk or an unwritable store; :class:`~pytest_physpipe.errors.UnstorableValueError`
        when no codec takes the value or the codec refuses it). With ``replace``, an existing
        entry is swapped out.
        """
        final = self._entry_path(key)
        label = stage or key[:12]
        chosen = self.codecs.choose(value, codec, stage=label)
        staging = scratch_dir(self.layout, key)  # plain strings: pathlib costs a small commit
        try:
            codec_meta, files = self._encode(chosen, value, staging, label)
            artifact_map: dict[str, str] = {}
            if artifacts:
                os.mkdir(f"{staging}/artifacts")
                for name, source in artifacts.items():
                    rel = f"artifacts/{name}"
                    shutil.move(source, f"{staging}/{rel}")
                    artifact_map[name] = rel
            meta = {
                "format": ENTRY_FORMAT,
                "key": key,
                "codec": chosen.name,
                "codec_meta": codec_meta,
                "files": files,
                "artifacts": artifact_map,
                "run_id": run_id,
                # The record's fields as they are (validated when it was made), serialized
                # as ``record.model_dump(mode="json")`` would give them, in one pass.
                "record": {**record.__dict__, "codec": chosen.name},
                **(extra_meta or {}),
            }
            # Codec metadata that is not plain JSON (bytes, a set) raises in `json`, as before.
            data = json_bytes(meta, plain=not codec_meta or is_json_safe(codec_meta))
            # The listing's check: a rename of the directory keeps the inode of its meta.json.
            inode = write_new(f"{staging}/meta.json", data)
            size = len(data) + sum(info["size"] for info in files.values())
            if artifact_map:
                size += tree_size(f"{staging}/artifacts")
            durable = self.fsync == "entry"
            if durable:
                fsync_tree(staging)
            if self._place(final, staging, replace=replace):
                summary = Summary(
                    key, inode, record.name, record.param_id, record.status, chosen.name,
                    size, record.created_at,
                )  # fmt: skip
                journal(self.layout, summary)
            if durable:
                fsync_dir(os.path.dirname(final))
            elif self.fsync == "session":
                later = pending(self.root)
                later.unsynced = True
                later.arm(self.layout)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._note_latest(key, record)
        return Path(final)

    def _encode(
        self, codec: Codec, value: object, staging: str, label: str
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Write ``value``'s files into ``staging``: the codec's metadata and every payload
        file's size and xxh3 (plus a sample above ``verify_max``), sorted by name.

        A codec with ``encode_into`` (the built-in ones) writes through an
        :class:`EntryWriter`, which sums the bytes as they are written; the files of any other
        codec are read back to be summed."""
        into = summing_encoder(codec)
        writer = EntryWriter(staging)
        try:
            if into is None:
                codec_meta = codec.encode(value, Path(staging))
                writer.unsummed.append("")
            else:
                codec_meta = into(value, writer)
        except CodecError as exc:
            if isinstance(exc, UnstorableValueError):
                raise
            raise UnstorableValueError(
                f"stage {label!r} returned a {type_name(value)}, which codec "
                f"{codec.name!r} cannot store ({exc}). "
                "Pass codec= naming a codec that stores it (plugins add codecs through "
                "pytest_physpipe_register_codecs), or cache=False to keep the value in "
                "memory only. Nothing was written to the store."
            ) from None
        files: dict[str, dict[str, Any]] = {}
        for rel, (size, digest) in writer.sums.items():
            info: dict[str, Any] = {"size": size, "xxh3": digest}
            if size > self.verify_max:
                info["sample"] = sample_hash(f"{staging}/{rel}", size)
            files[rel] = info
        for folder in writer.unsummed:
            files.update(self._checksums(staging, folder))
        return codec_meta, dict(sorted(files.items()))

    def _place(self, final: str, staging: str, *, replace: bool) -> bool:
        """Rename ``staging`` to ``final`` (making its shard on first use), settling a race:
        whether ``staging`` is the entry now."""
        if replace and os.path.exists(final):
            self._swap(final, staging)
            return True
        for attempt in (1, 2):
            try:
                os.rename(staging, final)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)  # a new shard
            except OSError:
                if not os.path.exists(final):
                    raise
                break
            else:
                return True
        if os.path.isfile(f"{final}/meta.json"):
            # Lost a race with another committer of the same key: theirs is as good.
            shutil.rmtree(staging, ignore_errors=True)
            return False
        # A damaged entry without meta.json: nobody can use it, replace it.
        self._swap(final, staging)
        return True

    def _checksums(self, staging: str, under: str = "") -> dict[str, dict[str, Any]]:
        """Size and xxh3 (plus a sample above ``verify_max``) of every payload file in the
        folder ``under`` of ``staging``, read back from the disk."""
        files: dict[str, dict[str, Any]] = {}
        top = f"{under}/" if under else ""
        stack = [(top, f"{staging}/{under}" if under else staging)]
        while stack:
            rel, folder = stack.pop()
            with os.scandir(folder) as found:
                for item in found:
                    name = f"{rel}{item.name}"
                    if item.is_dir(follow_symlinks=False):
                        if name != "artifacts":  # moved in whole, not checksummed
                            stack.append((f"{name}/", item.path))
                    elif item.is_file():
                        size = item.stat().st_size
                        info: dict[str, Any] = {"size": size, "xxh3": hash_file(item.path, size)}
                        if size > self.verify_max:
                            info["sample"] = sample_hash(item.path, size)
                        files[name] = info
        return files

    # -- the index of latest manifests (why an instance recomputes) ---------------------------

    def _note_latest(self, key: str, record: StageRecord) -> None:
        """Remember ``record``'s manifest as its stage's latest, in memory until :meth:`flush`
        (bookkeeping: never fails, and costs a commit no file write)."""
        if not record.manifest or not record.name.isidentifier():
            return
        notes = pending(self.root)
        notes.note(record.name, record.param_id or "", key, record.manifest)
        notes.arm(self.layout)

    def flush(self) -> None:
        """Write this process's pending index notes and, under ``fsync="session"``, make every
        entry it committed durable (one ``syncfs``). Called at the end of a session and at
        exit; safe to call again. Bookkeeping: never raises."""
        pending(self.root).flush(self.layout)
        close_journal(self.layout)  # no descriptor kept open past a session

    def latest(self, stage: str, param_id: str | None) -> tuple[str, dict[str, Any]] | None:
        """The key and manifest last committed for ``stage`` and ``param_id`` (``None``: any
        param). ``None`` when there is none or it cannot be read: it explains, never decides.
        """
        if not stage.isidentifier():
            return None
        found = pending(self.root).latest(stage, param_id)
        if found is None:
            if stage not in self._index_cache:
                self._index_cache[stage] = read_stage_index(self.layout, stage)
            found = self._index_cache[stage].get(LATEST if param_id is None else param_id)
        if found is None:  # a store written by an older version: one file per param
            found = read_note(self.layout.index_path(stage, param_id))
        return found

    def _swap(self, final: str, staging: str) -> None:
        trash = self.layout.trash_path(os.path.basename(final), uuid.uuid4().hex[:8])
        os.rename(final, trash)  # readers now miss and wait on the lock we hold
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)

    def remove(self, key: str) -> bool:
        """Delete an entry (moved to trash first, so readers see it whole or not at all)."""
        final = self.entry_dir(key)
        if not final.exists():
            return False
        if not self._inside(final):
            raise StoreError(
                f"entry {key}: {final} or a folder above it (up to {self.root}) is a symlink; "
                "physpipe never deletes through symlinks. Remove the link by hand."
            )
        trash = self.layout.trash_path(key, uuid.uuid4().hex[:8])
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def scratch(self, what: str) -> Path:
        """A new scratch directory of this process: in ``tmp/`` once the store exists."""
        if real_dir(self.layout.tmp):
            return make_scratch(self.layout, what)
        return Path(tempfile.mkdtemp(prefix=self.layout.scratch_prefix(what)))

    def _inside(self, path: Path) -> bool:
        """Whether every folder from the root's ``entries/`` down to ``path`` is a real one."""
        current = self.layout.entries
        if not real_dir(current):
            return False
        for part in path.relative_to(current).parts:
            current = current / part
            if not real_dir(current):
                return False
        return True

    def cleanup(self, *, local_only: bool = False) -> int:
        """Remove leftovers of killed writers: see :func:`pytest_physpipe.store.scratch.cleanup`."""
        return cleanup(self.layout, local_only=local_only)

    # -- listing --------------------------------------------------------------------------------

    def keys(self) -> Iterator[str]:
        entries = self.layout.entries
        if not real_dir(entries):
            return
        for shard in sorted(entries.iterdir()):
            if real_dir(shard):
                yield from sorted(entry_names(shard.name, os.listdir(shard)))

    def entries(self) -> Iterator[Entry]:
        for key in self.keys():
            base = self.entry_dir(key)
            try:
                meta = self.read_meta(key)
                if meta is None:
                    continue
                record = StageRecord.model_validate(meta["record"])
                last_used = (base / "meta.json").stat().st_mtime
            except (CorruptEntryError, KeyError, TypeError, ValueError, FileNotFoundError):
                continue
            yield Entry(
                key=key, path=base, record=record, size=tree_size(base), last_used=last_used
            )


def _cause(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if len(text) > 300:
        text = text[:300] + "…"
    if isinstance(exc, ImportError | AttributeError):
        return f"a class it names cannot be imported: {type(exc).__name__}: {text}"
    return f"{type(exc).__name__}: {text}"

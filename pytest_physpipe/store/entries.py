"""The store: one immutable directory per provenance key, committed by an atomic rename.

Layout under the root::

    CACHEDIR.TAG, .gitignore
    entries/<k[:2]>/<key>/   meta.json + payload files (+ artifacts/)
    tmp/                     entries being built; never read
    trash/                   replaced entries on their way out
    locks/<key>.lock         per-key locks (taken on a miss only)

A reader never sees a partial entry: it is built in ``tmp/`` and renamed into place whole. A
hit takes no lock, so :meth:`Store.load` must survive the entry being replaced under it: a file
that vanishes mid-load is a miss, a checksum mismatch raises :class:`CorruptEntryError` and the
caller retries under the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import xxhash

from pytest_physpipe.errors import CorruptEntryError, StoreError
from pytest_physpipe.keys import KEY_PATTERN
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.atomic import write_text_atomic
from pytest_physpipe.store.codecs import Codec, CodecRegistry
from pytest_physpipe.store.locks import KeyLock, resolve_lock_mode
from pytest_physpipe.units import parse_size

__all__ = ["Entry", "Loaded", "Store", "parse_size"]

ENTRY_FORMAT = 1
_SAMPLE_BLOCK = 4096
_TOUCH_EVERY_S = 3600.0
_SAMPLE_COUNT = 16
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This directory is a pytest-physpipe store (https://bford.info/cachedir/).\n"
)


def _hash_file(path: str | Path, size: int = -1) -> str:
    with open(path, "rb") as handle:
        if 0 <= size <= 1 << 20:  # small: one read, one hash call
            return str(xxhash.xxh3_128_hexdigest(handle.read()))
        digest = xxhash.xxh3_128()
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
        return str(digest.hexdigest())


def _sample_hash(path: str | Path, size: int) -> str:
    """xxh3 of the header, the tail and evenly spaced blocks: a cheap check for big files."""
    digest = xxhash.xxh3_128()
    last = max(size - _SAMPLE_BLOCK, 0)
    offsets = sorted({last * i // (_SAMPLE_COUNT - 1) for i in range(_SAMPLE_COUNT)})
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            digest.update(os.pread(fd, _SAMPLE_BLOCK, offset))
    finally:
        os.close(fd)
    return digest.hexdigest()


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Loaded:
    """A value loaded from an entry, with the record it was committed with."""

    value: Any
    record: StageRecord
    meta: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class Entry:
    """What ``physpipe ls`` shows about one entry."""

    key: str
    path: Path
    record: StageRecord
    size: int
    last_used: float


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
    ) -> None:
        self.root = Path(root)
        self.codecs = codecs if codecs is not None else CodecRegistry()
        self.verify_max = verify_max
        self.mmap_min = mmap_min
        self.lock_timeout = lock_timeout
        self._lock_mode_option = lock_mode
        self._lock_mode: Literal["flock", "soft"] | None = None
        self._ready = False
        self._entries = os.fspath(self.root / "entries")

    # -- layout ---------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store (owner-only) if needed; :class:`StoreError` if that is impossible."""
        if self._ready:
            return
        try:
            for sub in ("entries", "tmp", "trash", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(PermissionError):  # a shared store may belong to a group
                if stat.S_IMODE(self.root.stat().st_mode) & 0o077 and self._created_by_us():
                    self.root.chmod(0o700)
            self._write_once(self.root / "CACHEDIR.TAG", _CACHEDIR_TAG)
            self._write_once(self.root / ".gitignore", "# created by pytest-physpipe\n*\n")
            probe = self.root / "tmp" / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"cannot create or write the physpipe store at {self.root} ({exc.strerror or exc})"
                ". Point --physpipe-dir (or PHYSPIPE_DIR, or ini physpipe_dir) at a writable "
                "directory, or run with --physpipe-no-cache."
            ) from None
        self._ready = True

    def _created_by_us(self) -> bool:
        return not (self.root / "CACHEDIR.TAG").exists()

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
        return f"{self._entries}/{key[:2]}/{key}"

    @property
    def lock_mode(self) -> Literal["flock", "soft"]:
        if self._lock_mode is None:
            self._lock_mode = resolve_lock_mode(self._lock_mode_option, self.root)
        return self._lock_mode

    def lock(self, key: str, *, describe: str = "") -> KeyLock:
        """The per-key lock (a context manager). Only misses take it."""
        self.entry_dir(key)  # validates the key
        return KeyLock(
            self.root / "locks" / f"{key}.lock",
            mode=self.lock_mode,
            timeout=self.lock_timeout,
            describe=describe or key,
        )

    # -- reading --------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return os.path.isfile(f"{self._entry_path(key)}/meta.json")

    def read_meta(self, key: str) -> dict[str, Any] | None:
        found = self._read_meta(key)
        return None if found is None else found[0]

    def _read_meta(self, key: str) -> tuple[dict[str, Any], os.stat_result] | None:
        """``meta.json`` and its stat; the inode identifies this version of the entry."""
        try:
            handle = open(f"{self._entry_path(key)}/meta.json", "rb")  # noqa: SIM115
        except (FileNotFoundError, NotADirectoryError):
            return None
        with handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
        try:
            meta = json.loads(data)
        except (ValueError, RecursionError):  # nested deeper than the parser's stack
            raise CorruptEntryError(f"entry {key}: meta.json is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("key") != key:
            raise CorruptEntryError(f"entry {key}: meta.json belongs to another key")
        return meta, info

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
                actual, expected = _hash_file(path, size), info["xxh3"]
            else:
                actual, expected = _sample_hash(path, size), info["sample"]
            if actual != expected:
                raise CorruptEntryError(f"entry {key}: checksum mismatch in {rel}")

    def load(self, key: str, *, full_verify: bool = False) -> Loaded | None:
        """The entry's value, or ``None`` if there is none (or it vanished while loading).

        Raises :class:`CorruptEntryError` when the entry exists but fails verification.
        """
        meta: dict[str, Any] | None = None
        inode, touched = -1, 0.0
        try:
            found = self._read_meta(key)
            if found is None:
                return None
            meta, info = found
            inode, touched = info.st_ino, info.st_mtime
            self.verify(key, meta, full=full_verify)
            codec = self.codecs.get(str(meta["codec"]))
            base = self.entry_dir(key)
            value = codec.decode(base, meta.get("codec_meta", {}), mmap_min=self.mmap_min)
            record = StageRecord.model_validate(meta["record"])
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
            raise
        except Exception as exc:
            # Whatever else stops a load (a pickled class renamed or moved, a model class that
            # no longer imports, mistyped metadata, a codec's own error) makes the entry
            # unusable: the caller warns once, naming the cause, and recomputes it.
            raise CorruptEntryError(f"entry {key}: cannot be loaded ({_cause(exc)})") from None
        artifacts = meta.get("artifacts", {})
        if artifacts:
            record = record.model_copy(
                update={"artifacts": {n: str(base / rel) for n, rel in artifacts.items()}}
            )
        if time.time() - touched > _TOUCH_EVERY_S:
            # `physpipe prune` removes the least recently used first; an hour is precise
            # enough for that, and spares a metadata write on nearly every hit.
            with contextlib.suppress(OSError):  # a read-only store is fine: bookkeeping only
                os.utime(f"{self._entry_path(key)}/meta.json")
        return Loaded(value=value, record=record, meta=meta, path=base)

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
        codec: Codec,
        record: StageRecord,
        run_id: str,
        artifacts: dict[str, Path] | None = None,
        extra_meta: dict[str, Any] | None = None,
        replace: bool = False,
    ) -> Path:
        """Write an entry atomically. Call under the key's lock.

        On any failure nothing is left behind and the error propagates (an ``OSError`` for a
        full disk or an unwritable store; :class:`~pytest_physpipe.errors.CodecError` when the
        codec refuses). With ``replace``, an existing entry is swapped out.
        """
        final = self.entry_dir(key)
        staging = (
            self.root / "tmp" / f"{key}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        )
        staging.mkdir(parents=True, mode=0o700)
        try:
            codec_meta = codec.encode(value, staging)
            artifact_map: dict[str, str] = {}
            if artifacts:
                (staging / "artifacts").mkdir()
                for name, source in artifacts.items():
                    rel = f"artifacts/{name}"
                    shutil.copyfile(source, staging / rel)
                    artifact_map[name] = rel
            files: dict[str, dict[str, Any]] = {}
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                rel = path.relative_to(staging).as_posix()
                if rel.startswith("artifacts/"):
                    continue
                size = path.stat().st_size
                info: dict[str, Any] = {"size": size, "xxh3": _hash_file(path, size)}
                if size > self.verify_max:
                    info["sample"] = _sample_hash(path, size)
                files[rel] = info
            meta = {
                "format": ENTRY_FORMAT,
                "key": key,
                "codec": codec.name,
                "codec_meta": codec_meta,
                "files": files,
                "artifacts": artifact_map,
                "run_id": run_id,
                "record": record.model_dump(mode="json"),
                **(extra_meta or {}),
            }
            (staging / "meta.json").write_text(json.dumps(meta, indent=1, allow_nan=True))
            _fsync_tree(staging)
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if replace and final.exists():
                self._swap(final, staging)
            else:
                try:
                    os.rename(staging, final)
                except OSError:
                    if not final.exists():
                        raise
                    if (final / "meta.json").is_file():
                        # Lost a race with another committer of the same key: theirs is as good.
                        shutil.rmtree(staging, ignore_errors=True)
                    else:  # a damaged entry without meta.json: nobody can use it, replace it
                        self._swap(final, staging)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def _swap(self, final: Path, staging: Path) -> None:
        trash = self.root / "trash" / f"{final.name}.{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)  # readers now miss and wait on the lock we hold
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)

    def remove(self, key: str) -> bool:
        """Delete an entry (moved to trash first, so readers see it whole or not at all)."""
        final = self.entry_dir(key)
        if not final.exists():
            return False
        trash = self.root / "trash" / f"{key}.{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def cleanup(self, *, older_than_s: float = 3600.0) -> int:
        """Remove leftovers of killed writers: staging dirs of dead local pids, old trash.

        Names in ``tmp/`` read ``<what>.<host>.<pid>.<random>`` (the host may hold dots). One
        of this host is removed as soon as its pid is dead and never while it lives (a stage
        may compute for hours); one of another host, or unnamed, once older than
        ``older_than_s``. Trash goes after a minute.
        """
        removed = 0
        host = socket.gethostname()
        now = time.time()
        for sub in ("tmp", "trash"):
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.startswith(".probe-"):
                    continue
                parts = path.name.split(".")
                local = sub == "tmp" and len(parts) >= 4 and ".".join(parts[1:-2]) == host
                try:
                    age = now - path.lstat().st_mtime
                except FileNotFoundError:
                    continue
                if local:
                    gone = not _pid_alive(parts[-2])
                else:
                    gone = age > (60.0 if sub == "trash" else older_than_s)
                if gone:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- listing --------------------------------------------------------------------------------

    def keys(self) -> Iterator[str]:
        entries = self.root / "entries"
        if not entries.is_dir():
            return
        for shard in sorted(entries.iterdir()):
            if shard.is_dir():
                for path in sorted(shard.iterdir()):
                    if KEY_PATTERN.match(path.name):
                        yield path.name

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
            yield Entry(key=key, path=base, record=record, size=_du(base), last_used=last_used)

    def size_bytes(self) -> int:
        entries = self.root / "entries"
        return _du(entries) if entries.is_dir() else 0

    def find(self, key_or_name: str) -> list[str]:
        """Keys matching a full key, a key prefix (at least 6 digits), or a stage name."""
        if KEY_PATTERN.match(key_or_name):
            return [key_or_name] if self.exists(key_or_name) else []
        matches = []
        for entry in self.entries():
            if entry.record.name == key_or_name or (
                len(key_or_name) >= 6 and entry.key.startswith(key_or_name)
            ):
                matches.append(entry.key)
        return matches


def _cause(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if len(text) > 300:
        text = text[:300] + "…"
    if isinstance(exc, ImportError | AttributeError):
        return f"a class it names cannot be imported: {type(exc).__name__}: {text}"
    return f"{type(exc).__name__}: {text}"


def _du(path: Path) -> int:
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for item in it:
                    if item.is_dir(follow_symlinks=False):
                        stack.append(Path(item.path))
                    else:
                        total += item.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except ValueError:
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""``physpipe``: look after a store from the shell: ``ls``, ``show``, ``verify``, ``prune``, ``rm``.

The store is the one ``--dir PATH`` names, else ``$PHYSPIPE_DIR``, else ``./.physpipe`` (the
default of a pytest run started in this directory). Nothing here imports pytest or decodes a
value: the commands read ``meta.json`` files and checksums only, so they are safe on any store.

Exit status: 0 when all went well, 1 when something was found wrong (a corrupt entry, nothing
matching, an ambiguous prefix, an entry in use), 2 for a usage error or when there is no store.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pytest_physpipe.errors import (
    CorruptEntryError,
    ForeignSignatureError,
    SecretError,
    StoreError,
)
from pytest_physpipe.keys import KEY_PATTERN
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.entries import Store
from pytest_physpipe.store.filesystem import LOCK_MODES
from pytest_physpipe.store.layout import StoreLayout, tree_size
from pytest_physpipe.store.listing import Summary, summaries, summary_of_meta
from pytest_physpipe.store.locks import KeyLock, try_lock
from pytest_physpipe.store.scratch import real_dir
from pytest_physpipe.store.signing import load_secret
from pytest_physpipe.units import human_size, parse_size

__all__ = ["main", "parse_duration"]

_PREFIX_MIN = 6
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}


class CliError(Exception):
    """A problem to report in one paragraph, with an exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def parse_duration(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` as seconds; a bare number is days."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as '30d', '12h', '90m', '45s' or '2w'"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- reading the store ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    """One entry as the commands see it; ``problem`` is set when its meta.json is unreadable.

    A row of the whole-store listing comes from the index (``summary``, no ``meta``); a row
    of named entries reads their ``meta.json`` (``meta`` and ``record``).
    """

    key: str
    path: Path | str
    size: int
    last_used: float
    meta: dict[str, Any] | None
    record: StageRecord | None
    problem: str | None = None
    summary: Summary | None = None

    @property
    def label(self) -> str:
        return (self.summary or self.record).label if not self.damaged else "?"  # type: ignore[union-attr]

    @property
    def name(self) -> str | None:
        return (self.summary or self.record).name if not self.damaged else None  # type: ignore[union-attr]

    @property
    def status(self) -> str:
        return (self.summary or self.record).status if not self.damaged else "corrupt"  # type: ignore[union-attr]

    @property
    def codec(self) -> str | None:
        return self.summary.codec if self.summary else (self.meta or {}).get("codec")

    @property
    def created_at(self) -> str | None:
        return None if self.damaged else (self.summary or self.record).created_at  # type: ignore[union-attr]

    @property
    def damaged(self) -> bool:
        return self.summary is None and self.record is None

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stage": self.name,
            "label": self.label,
            "status": self.status,
            "codec": self.codec,
            "size": self.size,
            "created_at": self.created_at,
            "last_used": _iso(self.last_used),
            "path": str(self.path),
            "problem": self.problem,
            "meta": self.meta,
        }


def _row(store: Store, key: str) -> _Row | None:
    """The entry ``key`` or ``None`` if it vanished; a damaged meta.json gives a problem row."""
    path = store.entry_dir(key)
    try:
        last_used = (path / "meta.json").stat().st_mtime
    except FileNotFoundError:
        try:
            last_used = path.stat().st_mtime
        except FileNotFoundError:
            return None
    try:
        meta = store.read_meta(key)
        if meta is None:
            return _Row(key, path, tree_size(path), last_used, None, None, "meta.json is missing")
        record = StageRecord.model_validate(meta["record"])
    except CorruptEntryError as exc:
        return _Row(key, path, tree_size(path), last_used, None, None, str(exc))
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"meta.json has no valid record ({type(exc).__name__})"
        return _Row(key, path, tree_size(path), last_used, meta, None, problem)
    return _Row(key, path, tree_size(path), last_used, meta, record)


def _rows(store: Store, keys: Iterable[str] | None = None) -> list[_Row]:
    """Rows of the named entries (their ``meta.json`` read), or of every entry (the index)."""
    if keys is None:
        return _listed_rows(store)
    rows = (_row(store, key) for key in keys)
    return [row for row in rows if row is not None]


def _listed_rows(store: Store) -> list[_Row]:
    """Every entry, from the listing index; ``meta.json`` is read only for entries it cannot
    vouch for (see ``store/listing.py``). One ``stat`` per entry: when it was last used."""

    def describe(key: str, inode: int) -> Summary | None:
        try:
            meta = store.read_meta(key)
        except CorruptEntryError:
            return None
        if meta is None:
            return None
        return summary_of_meta(key, inode, meta, tree_size(store.entry_dir(key)))

    found, damaged = summaries(store.layout, describe)
    rows: list[_Row] = []
    entries, stat = os.fspath(store.layout.entries), os.stat
    for key, summary in found.items():
        base = f"{entries}/{key[:2]}/{key}"
        try:
            last_used = stat(f"{base}/meta.json").st_mtime
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed since it was listed
        rows.append(_Row(key, base, summary.size, last_used, None, None, None, summary))
    for key in damaged:
        row = _row(store, key)
        if row is not None:
            rows.append(row)
    return rows


def _resolve(store: Store, patterns: Sequence[str]) -> list[str]:
    """Keys named by full keys, key prefixes (unambiguous) or stage names, in order."""
    rows = _rows(store)
    keys: list[str] = []
    for pattern in patterns:
        by_name = [row.key for row in rows if row.name == pattern]
        if KEY_PATTERN.match(pattern):
            found = [pattern] if any(row.key == pattern for row in rows) else []
        elif by_name:
            found = by_name
        else:
            if len(pattern) < _PREFIX_MIN or not re.fullmatch(r"[0-9a-f]+", pattern):
                raise CliError(
                    f"no stage is named {pattern!r} in the store at {store.root}, and it is "
                    f"not a key prefix (at least {_PREFIX_MIN} lowercase hex digits). "
                    "`physpipe ls` lists the entries.",
                    status=1,
                )
            found = [row.key for row in rows if row.key.startswith(pattern)]
            if len(found) > 1:
                listing = ", ".join(k[:12] for k in found[:10])
                raise CliError(
                    f"the key prefix {pattern!r} is ambiguous: it matches {len(found)} entries "
                    f"({listing}{', ...' if len(found) > 10 else ''}). Give more digits.",
                    status=1,
                )
        if not found:
            raise CliError(
                f"no entry matches {pattern!r} in the store at {store.root}. "
                "`physpipe ls` lists the entries.",
                status=1,
            )
        keys.extend(k for k in found if k not in keys)
    return keys


def _open_store(args: argparse.Namespace) -> Store:
    if args.dir is not None:
        root, origin = Path(args.dir), "--dir"
    elif os.environ.get("PHYSPIPE_DIR"):
        root, origin = Path(os.environ["PHYSPIPE_DIR"]), "$PHYSPIPE_DIR"
    else:
        root, origin = Path(".physpipe"), "the default ./.physpipe"
    layout = StoreLayout(root)
    if not layout.entries.is_dir() and not layout.cachedir_tag.is_file():
        what = "does not exist" if not root.exists() else "is not a physpipe store"
        raise CliError(
            f"{root} ({origin}) {what}. Point physpipe at a store with `--dir PATH` or the "
            "PHYSPIPE_DIR environment variable (the store of a pytest run is its "
            "--physpipe-dir, else <rootdir>/.physpipe)."
        )
    return Store(root, lock_mode=args.lock)


# -- output helpers ------------------------------------------------------------------------------


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


_size = functools.lru_cache(maxsize=4096)(human_size)


@functools.lru_cache(maxsize=4096)
def _minute(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60).strftime("%Y-%m-%d %H:%M")


def _short_time(timestamp: float) -> str:
    return _minute(int(timestamp // 60))  # a listing of 100,000 rows shares its minutes


@functools.lru_cache(maxsize=4096)
def _short_created(text: str) -> str:
    try:
        return datetime.fromisoformat(text).astimezone().strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(text or "?")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    columns = zip(headers, *rows, strict=True) if rows else ([h] for h in headers)
    widths = [max(map(len, column)) for column in columns]
    pattern = "  ".join(f"{{:<{w}}}" for w in widths)
    out.write("".join(pattern.format(*line).rstrip() + "\n" for line in (headers, *rows)))


class _Progress:
    """Progress on stderr: a rewritten line on a terminal, a line every few seconds otherwise."""

    def __init__(self, what: str, total: int, *, quiet: bool) -> None:
        self.what = what
        self.total = total
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.started = self.last = time.monotonic()

    def step(self, done: int, nbytes: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty and now - self.last < 5.0:
            return
        self.last = now
        text = f"{self.what}: {done}/{self.total} entries, {human_size(nbytes)}"
        sys.stderr.write(f"\r{text}\033[K" if self.tty else text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# -- commands ------------------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace, store: Store, out: TextIO) -> int:
    rows = _rows(store, _resolve(store, args.patterns) if args.patterns else None)
    rows.sort(key=lambda r: (r.label, r.last_used))
    if args.json:
        json.dump([row.as_json() | {"meta": None} for row in rows], out, indent=1)
        out.write("\n")
        return 0
    if not rows:
        out.write(f"no entries in {store.root}\n")
        return 0
    table = []
    for row in rows:
        seen = row.summary or row.record
        status = "corrupt" if seen is None else f"{seen.status}/{row.codec or '?'}"
        created = "?" if seen is None else _short_created(seen.created_at)
        label = "?" if seen is None else seen.label
        size = _size(row.size)
        table.append([row.key[:12], label, status, size, created, _short_time(row.last_used)])
    _table(["KEY", "STAGE", "STATUS/CODEC", "SIZE", "CREATED", "LAST USED"], table, out)
    total = sum(row.size for row in rows)
    out.write(f"{len(rows)} entries, {human_size(total)} in {store.root}\n")
    return 0


def _cmd_show(args: argparse.Namespace, store: Store, out: TextIO) -> int:
    rows = _rows(store, _resolve(store, [args.target]))
    if args.json:
        payload = [row.as_json() for row in rows]
        json.dump(payload[0] if len(payload) == 1 else payload, out, indent=1)
        out.write("\n")
        return 0
    for index, row in enumerate(rows):
        if index:
            out.write("\n")
        _show_one(row, out)
    return 1 if any(row.problem for row in rows) else 0


def _show_one(row: _Row, out: TextIO) -> None:
    meta = row.meta or {}
    fields: list[tuple[str, Any]] = [("key", row.key), ("path", row.path)]
    if row.problem:
        fields.append(("problem", row.problem))
    record = row.record
    if record is not None:
        fields += [
            ("stage", record.label),
            ("status", record.status),
            ("codec", meta.get("codec", "?")),
            ("size", f"{human_size(row.size)} ({row.size} bytes)"),
            ("created", record.created_at),
            ("last used", _iso(row.last_used)),
            ("host", record.host),
            ("duration", f"{record.duration_s:.3f} s"),
            ("run", meta.get("run_id", "?")),
            ("code", record.code),
            ("backend", record.backend + (f" (job {record.job_id})" if record.job_id else "")),
        ]
    for name, value in fields:
        out.write(f"{name + ':':<11}{value}\n")
    if record is None:
        return
    sections: list[tuple[str, dict[str, Any]]] = [
        ("config", record.config),
        ("upstream", record.upstream),
        ("metrics", record.metrics),
        ("artifacts", dict(meta.get("artifacts") or {})),
        ("versions", record.versions),
        # What the key's code fingerprint covered: the stage and every piece of project code
        # it reaches (and track=), each with its own hash.
        ("covers", _code_parts(record.manifest)),
    ]
    for title, mapping in sections:
        if not mapping:
            continue
        out.write(f"{title}:\n")
        for name, value in sorted(mapping.items()):
            shown = value if isinstance(value, str) else json.dumps(value)
            out.write(f"  {name} = {shown}\n")
    files = meta.get("files") or {}
    if isinstance(files, dict) and files:
        out.write("files:\n")
        for rel, info in sorted(files.items()):
            size = info.get("size", 0) if isinstance(info, dict) else 0
            digest = info.get("xxh3", "?") if isinstance(info, dict) else "?"
            out.write(f"  {rel}  {human_size(size)}  xxh3 {digest}\n")


@dataclass
class _Checked:
    """What ``physpipe verify`` found about one entry."""

    label: str = "?"
    nbytes: int = 0
    problem: str | None = None
    foreign: str | None = None


def _check_entry(store: Store, key: str, *, signatures: bool) -> _Checked | None:
    """Checksums (in full) and signature of one entry; ``None`` if it was removed meanwhile."""
    found = _Checked()
    try:
        meta = store.read_meta(key)
        if meta is None:
            if not store.entry_dir(key).exists():
                return None
            found.problem = "meta.json is missing"
            return found
        found.label = _label_of(meta)
        if signatures:
            # Checksums, the signature (a foreign one is told apart before anything is
            # decoded), then a real load: a pickled class that moved or a model class that no
            # longer imports fails here, as it would in a run.
            store.verify(key, meta, full=True)
            store.check_signature(key, meta)
            if store.load(key, full_verify=True) is None:
                return None  # replaced or removed since we listed it
        else:
            store.verify(key, meta, full=True)  # no key: what needs one cannot be loaded
        found.nbytes = sum(int(i.get("size", 0)) for i in meta["files"].values())
    except ForeignSignatureError as exc:
        # Intact for whoever signed it: reported, never counted as corrupt nor removed.
        found.foreign = str(exc).removeprefix("it is ")
    except CorruptEntryError as exc:
        found.problem = str(exc).removeprefix(f"entry {key}: ")
    except FileNotFoundError as exc:
        found.problem = f"payload file {Path(exc.filename or '?').name} is missing"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        found.problem = f"meta.json is malformed ({type(exc).__name__}: {exc})"
    return found


def _code_parts(manifest: dict[str, Any]) -> dict[str, Any]:
    parts = manifest.get("code_parts")
    if not isinstance(parts, dict):
        return {}
    return {str(name): str(digest)[:16] for name, digest in parts.items()}


def _cmd_verify(args: argparse.Namespace, store: Store, out: TextIO) -> int:
    keys = _resolve(store, args.keys) if args.keys else list(store.keys())
    progress = _Progress("verify", len(keys), quiet=args.quiet)
    bad = foreign = checked = nbytes = 0
    signatures = True
    try:
        load_secret()
    except SecretError as exc:
        signatures = False
        out.write(f"signatures are not checked: {exc}\n")
    for done, key in enumerate(keys, 1):
        found = _check_entry(store, key, signatures=signatures)
        if found is None:
            continue  # removed since we listed it
        checked += 1
        nbytes += found.nbytes
        if found.foreign is not None:
            foreign += 1
            out.write(f"FOREIGN  {key}  {found.label}: {found.foreign}\n")
        elif found.problem is not None:
            bad += 1
            out.write(f"CORRUPT  {key}  {found.label}: {found.problem}\n")
            out.flush()
            if args.remove:
                _remove_locked(store, key, out, dry_run=False)
        progress.step(done, nbytes)
    progress.done()
    others = f" {foreign} signed with another secret (another user's; kept)." if foreign else ""
    if bad:
        action = "removed" if args.remove else "run `physpipe verify --remove` to delete them"
        out.write(f"{bad} of {checked} entries are corrupt ({action}).{others}\n")
        return 1
    out.write(
        f"verified {checked} entries ({human_size(nbytes)}): all intact and loadable.{others}\n"
    )
    return 0


def _label_of(meta: dict[str, Any]) -> str:
    try:
        return StageRecord.model_validate(meta["record"]).label
    except (KeyError, TypeError, ValueError):
        return "?"


def _lock_of(store: Store, key: str) -> KeyLock | None:
    """The key's lock, taken without waiting, or ``None`` when someone holds it."""
    return try_lock(store.layout.lock_path(key), store.lock_mode, describe=key)


def _remove_locked(store: Store, key: str, out: TextIO, *, dry_run: bool) -> bool:
    """Remove one entry while holding its lock; ``False`` (and say so) if it is in use."""
    lock = _lock_of(store, key)
    if lock is None:
        out.write(f"skipped  {key}: its lock is held (a run is computing or replacing it)\n")
        return False
    try:
        if not dry_run:
            store.remove(key)
    finally:
        lock.release(remove=not dry_run)
    return True


def _cmd_rm(args: argparse.Namespace, store: Store, out: TextIO) -> int:
    keys = _resolve(store, args.targets)
    rows = {row.key: row for row in _rows(store, keys)}
    status = 0
    freed = 0
    for key in keys:
        row = rows.get(key)
        if not _remove_locked(store, key, out, dry_run=args.dry_run):
            status = 1
            continue
        size = row.size if row is not None else 0
        freed += size
        verb = "would remove" if args.dry_run else "removed"
        label = row.label if row is not None else "?"
        out.write(f"{verb}  {key}  {label}  {human_size(size)}\n")
    if len(keys) > 1:
        out.write(f"{'would free' if args.dry_run else 'freed'} {human_size(freed)}.\n")
    return status


def _cmd_prune(args: argparse.Namespace, store: Store, out: TextIO) -> int:
    rows = sorted(_rows(store), key=lambda r: r.last_used)  # least recently used first
    now = time.time()
    total = sum(row.size for row in rows)
    victims: list[tuple[_Row, str]] = []
    remaining = total
    for row in rows:
        if args.older_than is not None and now - row.last_used > args.older_than:
            reason = "unused for " + _age(now - row.last_used)
        elif args.max_size is not None and remaining > args.max_size:
            reason = f"store over {human_size(args.max_size)}"
        else:
            continue
        victims.append((row, reason))
        remaining -= row.size
    verb = "would remove" if args.dry_run else "removed"
    progress = _Progress("prune", len(victims), quiet=args.quiet)
    freed = skipped = 0
    for done, (row, reason) in enumerate(victims, 1):
        if not _remove_locked(store, row.key, out, dry_run=args.dry_run):
            skipped += 1
            continue
        freed += row.size
        out.write(f"{verb}  {row.key}  {row.label}  {human_size(row.size)}  ({reason})\n")
        out.flush()
        progress.step(done, freed)
    progress.done()
    leftovers = 0 if args.dry_run else store.cleanup()
    if not args.dry_run:
        _tidy_locks(store)
    summary = (
        f"{verb} {len(victims) - skipped} entries, {human_size(freed)}; "
        f"store now {human_size(total - freed)}"
    )
    if skipped:
        summary += f"; skipped {skipped} in use"
    if leftovers:
        summary += f"; cleaned {leftovers} leftovers of interrupted runs"
    if args.older_than is None and args.max_size is None:
        summary += " (give --older-than and/or --max-size to remove entries)"
    out.write(summary + ".\n")
    return 0


def _tidy_locks(store: Store) -> None:
    """Delete lock files of keys without an entry, each while holding it (see KeyLock)."""
    folder = store.layout.locks
    if not real_dir(folder):
        return  # missing, or a symlink: never act through it
    for path in folder.glob("*.lock"):
        key = store.layout.key_of_lock(path)
        if key is None or store.exists(key) or path.is_symlink():
            continue
        lock = try_lock(path, store.lock_mode, describe=key)
        if lock is not None:
            lock.release(remove=True)


def _age(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.1f} days" if days >= 1 else f"{seconds / 3600:.1f} hours"


# -- entry point ---------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--dir",
        metavar="PATH",
        default=default,
        help="the store (default: $PHYSPIPE_DIR, else ./.physpipe)",
    )
    parser.add_argument(
        "--lock",
        choices=LOCK_MODES,
        default="auto" if default is None else default,
        help="lock kind, as ini physpipe_lock of the runs using the store (default: auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    # --dir and --lock go before or after the command; a subcommand's copy must not reset
    # what the main parser read, hence SUPPRESS there (and no shared action objects).
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="physpipe",
        description="Manage a pytest-physpipe store: list, inspect, verify, prune, remove.",
        epilog="The store is --dir PATH, else $PHYSPIPE_DIR, else ./.physpipe.",
    )
    _add_common(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ls = sub.add_parser("ls", parents=[common], help="list entries")
    ls.add_argument("patterns", nargs="*", metavar="KEY|NAME", help="only these entries")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(run=_cmd_ls)

    show = sub.add_parser("show", parents=[common], help="show one entry's record in full")
    show.add_argument("target", metavar="KEY|NAME|KEYPREFIX")
    show.add_argument("--json", action="store_true", help="the full meta.json as JSON")
    show.set_defaults(run=_cmd_show)

    verify = sub.add_parser("verify", parents=[common], help="check every payload's full checksum")
    verify.add_argument("keys", nargs="*", metavar="KEY|NAME", help="default: every entry")
    verify.add_argument("--remove", action="store_true", help="delete the corrupt entries")
    verify.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    verify.set_defaults(run=_cmd_verify)

    prune = sub.add_parser(
        "prune",
        parents=[common],
        help="remove least recently used entries; clean leftovers of killed runs",
    )
    prune.add_argument(
        "--older-than",
        type=parse_duration,
        metavar="AGE",
        help="remove entries unused for longer than AGE (30d, 12h, 90m; a bare number is days)",
    )
    prune.add_argument(
        "--max-size",
        type=_size_arg,
        metavar="SIZE",
        help="then remove least recently used entries until the store fits SIZE (20G, 500M)",
    )
    prune.add_argument("-n", "--dry-run", action="store_true", help="only say what would go")
    prune.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    prune.set_defaults(run=_cmd_prune)

    rm = sub.add_parser("rm", parents=[common], help="remove entries by key, prefix or name")
    rm.add_argument("targets", nargs="+", metavar="KEY|NAME")
    rm.add_argument("-n", "--dry-run", action="store_true", help="only say what would go")
    rm.set_defaults(run=_cmd_rm)

    from pytest_physpipe.cluster.jobs import add_jobs_command  # `physpipe jobs` lives there

    add_jobs_command(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``physpipe`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout
    run: Callable[[argparse.Namespace, Store, TextIO], int] = args.run
    try:
        store = _open_store(args)
        return run(args, store, out)
    except CliError as exc:
        sys.stderr.write(f"physpipe: {exc}\n")
        return exc.status
    except StoreError as exc:
        sys.stderr.write(f"physpipe: {exc}\n")
        return 2
    except BrokenPipeError:  # `physpipe ls | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1

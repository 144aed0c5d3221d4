"""``physpipe``: look after a store from the shell: ``ls``, ``show``, ``verify``, ``prune``, ``rm``.

The store is the one ``--dir PATH`` names, else ``$PHYSPIPE_DIR``, else ``./.physpipe`` (the
default of a pytest run started in this directory). Nothing here imports pytest or decodes a
value: the commands read ``meta.json`` files and checksums only, so they are safe on any store.
Each command imports what it uses: a whole-store ``ls`` reads the listing index only, and
imports neither pydantic nor the store's codecs (``_Target`` opens the store on first need).

Exit status: 0 when all went well, 1 when something was found wrong (a corrupt entry, nothing
matching, an ambiguous prefix, an entry in use), 2 for a usage error or when there is no store.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from pytest_physpipe.errors import (
    CorruptEntryError,
    ForeignSignatureError,
    SecretError,
    StoreError,
)
from pytest_physpipe.keys import KEY_PATTERN
from pytest_physpipe.store.clitable import (
    LsColumns,
    LsLine,
    Progress,
    StatusCells,
    age_text,
    gc_paused,
    iso_time,
    json_rows,
    ls_table,
)
from pytest_physpipe.store.filesystem import LOCK_MODES
from pytest_physpipe.store.journal import Summary
from pytest_physpipe.store.layout import StoreLayout, tree_size
from pytest_physpipe.store.listing import Listing, describe_entry, listing
from pytest_physpipe.units import human_size, parse_size

if TYPE_CHECKING:
    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.store.entries import Store
    from pytest_physpipe.store.locks import KeyLock

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


class _Row(NamedTuple):
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
            "last_used": iso_time(self.last_used),
            "path": str(self.path),
            "problem": self.problem,
            "meta": self.meta,
        }


class _Target:
    """The store a command works on: its layout at once, the :class:`Store` on first need."""

    def __init__(self, root: Path, lock_mode: str) -> None:
        self.root = root
        self.layout = StoreLayout(root)
        self._lock_mode = lock_mode

    @cached_property
    def store(self) -> Store:
        from pytest_physpipe.store.entries import Store

        return Store(self.root, lock_mode=self._lock_mode)


def _row(store: Store, key: str) -> _Row | None:
    """The entry ``key`` or ``None`` if it vanished; a damaged meta.json gives a problem row."""
    from pytest_physpipe.records import StageRecord

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


def _rows(target: _Target, keys: Iterable[str] | None = None) -> list[_Row]:
    """Rows of the named entries (their ``meta.json`` read), or of every entry (the index)."""
    if keys is None:
        return _listed_rows(target)
    rows = (_row(target.store, key) for key in keys)
    return [row for row in rows if row is not None]


def _listed_rows(target: _Target) -> list[_Row]:
    """Every entry, from the listing index; ``meta.json`` is read only for entries it cannot
    vouch for (see ``store/listing.py``)."""
    found = _listing(target.layout)
    entries = os.fspath(target.layout.entries)
    rows = [
        _Row(key, f"{entries}/{key[:2]}/{key}", summary.size, last_used, None, None, None, summary)
        for key, (summary, last_used) in found.found().items()
    ]
    for key in found.damaged:
        row = _row(target.store, key)
        if row is not None:
            rows.append(row)
    return rows


def _listing(layout: StoreLayout) -> Listing:
    """Every entry, from the listing index, its ``meta.json`` read where the index cannot
    vouch for it; stat'd from inside each shard, since the command is a process of its own
    (see :func:`~pytest_physpipe.store.listing.listing`)."""
    return listing(layout, partial(describe_entry, layout), from_inside=True)


def _resolve(target: _Target, patterns: Sequence[str]) -> list[str]:
    """Keys named by full keys, key prefixes (unambiguous) or stage names, in order."""
    root = target.root
    rows = _rows(target)
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
                    f"no stage is named {pattern!r} in the store at {root}, and it is "
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
                f"no entry matches {pattern!r} in the store at {root}. "
                "`physpipe ls` lists the entries.",
                status=1,
            )
        keys.extend(k for k in found if k not in keys)
    return keys


def _open_store(args: argparse.Namespace) -> _Target:
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
    return _Target(root, args.lock)


# -- commands ------------------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace, store: _Target, out: TextIO) -> int:
    with gc_paused():  # 100,000 rows, no cycles: see clitable
        if args.json:
            rows = _rows(store, _resolve(store, args.patterns) if args.patterns else None)
            rows.sort(key=lambda r: (r.label, r.last_used))
            out.write(json_rows([row.as_json() | {"meta": None} for row in rows]))
            out.write("\n")
            return 0
        if args.patterns:
            lines = [_ls_line(row) for row in _rows(store, _resolve(store, args.patterns))]
            columns = LsColumns.of_lines(lines) if lines else None
        else:
            columns = _ls_all(store)
        if columns is None or not columns.rows:
            out.write(f"no entries in {store.root}\n")
            return 0
        total = ls_table(columns, out)
    out.write(f"{len(columns.rows)} entries, {human_size(total)} in {store.root}\n")
    return 0


def _ls_all(target: _Target) -> LsColumns:
    """The ``ls`` cells of every entry, from the listing's columns: no object per entry but
    its cells, and a status cell built once per distinct status and codec."""
    found = _listing(target.layout)
    keys, _, _, _, statuses, codecs, sizes, created = found.columns
    labels = found.labels()
    # One pass: each distinct pair is formatted when first met (no list of pairs: zip reuses
    # its tuple when the lookup does not keep it), and rows alike share one string.
    states = list(map(StatusCells().__getitem__, zip(statuses, codecs, strict=True)))
    columns = LsColumns(labels, keys, states, sizes, created, found.rows, found.used)
    for key in found.damaged:
        row = _row(target.store, key)
        if row is not None:
            columns.add(_ls_line(row))
    return columns


def _ls_line(row: _Row) -> LsLine:
    seen = row.summary or row.record
    if seen is None:
        return ("?", row.last_used, row.key, "corrupt", row.size, "?")
    status = f"{seen.status}/{row.codec or '?'}"
    return (seen.label, row.last_used, row.key, status, row.size, seen.created_at)


def _cmd_show(args: argparse.Namespace, store: _Target, out: TextIO) -> int:
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
            ("last used", iso_time(row.last_used)),
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


class _Checked:
    """What ``physpipe verify`` found about one entry."""

    def __init__(self) -> None:
        self.label = "?"
        self.nbytes = 0
        self.problem: str | None = None
        self.foreign: str | None = None


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


def _cmd_verify(args: argparse.Namespace, target: _Target, out: TextIO) -> int:
    from pytest_physpipe.store.signing import load_secret

    store = target.store
    keys = _resolve(target, args.keys) if args.keys else list(store.keys())
    progress = Progress("verify", len(keys), quiet=args.quiet)
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
    from pytest_physpipe.records import StageRecord

    try:
        return StageRecord.model_validate(meta["record"]).label
    except (KeyError, TypeError, ValueError):
        return "?"


def _lock_of(store: Store, key: str) -> KeyLock | None:
    """The key's lock, taken without waiting, or ``None`` when someone holds it."""
    from pytest_physpipe.store.locks import try_lock

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


def _cmd_rm(args: argparse.Namespace, target: _Target, out: TextIO) -> int:
    store = target.store
    keys = _resolve(target, args.targets)
    rows = {row.key: row for row in _rows(target, keys)}
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


def _cmd_prune(args: argparse.Namespace, target: _Target, out: TextIO) -> int:
    store = target.store
    rows = sorted(_rows(target), key=lambda r: r.last_used)  # least recently used first
    now = time.time()
    total = sum(row.size for row in rows)
    victims: list[tuple[_Row, str]] = []
    remaining = total
    for row in rows:
        if args.older_than is not None and now - row.last_used > args.older_than:
            reason = "unused for " + age_text(now - row.last_used)
        elif args.max_size is not None and remaining > args.max_size:
            reason = f"store over {human_size(args.max_size)}"
        else:
            continue
        victims.append((row, reason))
        remaining -= row.size
    verb = "would remove" if args.dry_run else "removed"
    progress = Progress("prune", len(victims), quiet=args.quiet)
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
    from pytest_physpipe.store.locks import try_lock
    from pytest_physpipe.store.scratch import real_dir

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

    jobs = sub.add_parser(
        "jobs", parents=[common], help="list the store's batch jobs in flight, or cancel a run's"
    )
    jobs.add_argument(
        "--cancel", metavar="RUN", help="cancel every pending or running job of this run id"
    )
    jobs.add_argument("--json", action="store_true", help="machine-readable output")
    jobs.set_defaults(run=_cmd_jobs)
    return parser


def _cmd_jobs(args: argparse.Namespace, target: _Target, out: TextIO) -> int:
    from pytest_physpipe.cluster.jobs import cmd_jobs  # the cluster's: imported for `jobs` only

    return cmd_jobs(args, target, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``physpipe`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout
    run: Callable[[argparse.Namespace, _Target, TextIO], int] = args.run
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

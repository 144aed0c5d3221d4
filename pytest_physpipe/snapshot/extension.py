"""The syrupy extension: JSON goldens with array sidecars, compared within tolerances.

How the pieces meet syrupy's write decision (docs/snapshots.md has the long form):

* ``serialize`` returns a :class:`str` subclass (:class:`Received`): its text is the entry that
  would be written, and it also carries the live value, the tolerance rules and the arrays for
  the binary sidecars, so that ``matches`` can compare numbers rather than text.
* syrupy writes only when ``matches`` is false. A value within tolerance therefore never
  reaches the disk, not even under ``--snapshot-update``: no churn from rounding noise.
* When a write does happen, ``write_snapshot_collection`` merges at the leaf level: leaves still
  within tolerance keep their golden text byte for byte, and so does every element of a failing
  array that is within tolerance; only what failed (and the provenance, which says when the
  values changed) is replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from syrupy.data import (
    Snapshot,
    SnapshotCollection,
    SnapshotCollections,
    SnapshotEmptyCollection,
)
from syrupy.extensions.base import AbstractSyrupyExtension

from pytest_physpipe.snapshot.document import emit, render_document
from pytest_physpipe.snapshot.encoding import (
    INLINE_MAX_ELEMENTS,
    Decoder,
    Encoder,
    GoldenFileError,
)
from pytest_physpipe.snapshot.files import (
    collect_garbage,
    golden_lock,
    load_document,
    sidecar_dir,
    sidecar_loader,
    write_atomic,
)
from pytest_physpipe.snapshot.guard import GUARD, guard_for, module_key_of_golden
from pytest_physpipe.snapshot.merge import ArrayMerge, merge_values, sidecars_in
from pytest_physpipe.snapshot.provenance import explain_changes, platform_info
from pytest_physpipe.snapshot.writes import PENDING, write_entries
from pytest_physpipe.tolerance import Comparison, ToleranceRules, compare

if TYPE_CHECKING:
    from syrupy.location import PyTestLocation
    from syrupy.types import (
        PropertyFilter,
        PropertyMatcher,
        SerializableData,
        SerializedData,
    )

__all__ = ["WRITES_IMMEDIATELY", "Measured", "PhysicsSnapshotExtension", "Received"]

#: Whether the installed syrupy honours ``write_immediately`` (7.x does; 4.6 writes at the end).
WRITES_IMMEDIATELY = hasattr(AbstractSyrupyExtension, "write_immediately")


@dataclass
class Measured:
    """What ``PhysicsSnapshot.__eq__`` hands to syrupy: the value plus how to judge it."""

    value: object
    rules: ToleranceRules
    stages: dict[str, object]
    platform: dict[str, str]
    keep_for_write: bool
    received: Received | None = None
    inline_max: int = INLINE_MAX_ELEMENTS


class Received(str):
    """The serialized result of one assertion: its text is the entry that would be written."""

    value: object
    rules: ToleranceRules
    entry: dict[str, object]
    sidecars: dict[str, np.ndarray]
    comparison: Comparison | None
    golden_entry: Mapping[str, Any] | None
    problem: str | None
    keep_for_write: bool

    @classmethod
    def build(cls, measured: Measured) -> Received:
        encoder = Encoder(for_write=measured.keep_for_write, inline_max=measured.inline_max)
        node = encoder.encode(measured.value, "")
        entry: dict[str, object] = {
            "value": node,
            "stages": measured.stages,
            "platform": measured.platform,
        }
        self = cls(emit(entry))
        self.value = measured.value
        self.rules = measured.rules
        self.entry = entry
        self.comparison = None
        self.golden_entry = None
        self.problem = None
        self.keep_for_write = measured.keep_for_write
        if not measured.keep_for_write:
            self.sidecars = {}
        elif WRITES_IMMEDIATELY:
            # syrupy writes within the assertion, before the caller can change the arrays.
            self.sidecars = dict(encoder.sidecars)
        else:
            # An older syrupy writes at the end of the session: do not let a later in-place
            # change to the caller's array alter what gets written under this checksum.
            self.sidecars = {
                name: array.copy() if array.flags.writeable else array
                for name, array in encoder.sidecars.items()
            }
        return self

    def release(self) -> None:
        """Drop the value and its arrays once nothing will be written from them."""
        self.value = None
        self.sidecars = {}


class Golden(str):
    """A golden entry read from disk; its value is decoded (and sidecars read) on demand."""

    entry: Mapping[str, Any]
    array_dir: Path

    @classmethod
    def build(cls, entry: Mapping[str, Any], array_dir: Path) -> Golden:
        self = cls(emit(entry))
        self.entry = entry
        self.array_dir = array_dir
        return self

    def decoded(self) -> object:
        return Decoder(sidecar_loader(self.array_dir)).decode(self.entry.get("value"))


def _golden_value(data: object) -> tuple[object, Mapping[str, Any]]:
    if isinstance(data, Golden):
        return data.decoded(), data.entry
    if isinstance(data, Received):  # recalled from this session's pending writes
        return data.value, data.entry
    raise GoldenFileError(f"unexpected golden data of type {type(data).__name__}")


class PhysicsSnapshotExtension(AbstractSyrupyExtension):
    """syrupy extension: JSON goldens with array sidecars, compared within tolerances."""

    file_extension = "physics"
    # Write a new or failing golden during its assertion rather than at the end of the
    # session, so that the compared arrays are not all held in memory until then.
    write_immediately = True

    def serialize(
        self,
        data: SerializableData,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> SerializedData:
        # exclude/include/matcher are syrupy's text-snapshot tools; per-path tolerances
        # replace them here.
        if not isinstance(data, Measured):
            data = Measured(data, ToleranceRules(), {}, platform_info(), keep_for_write=True)
        received = Received.build(data)
        data.received = received
        return received

    def matches(
        self, *, serialized_data: SerializableData, snapshot_data: SerializableData
    ) -> bool:
        if not isinstance(serialized_data, Received):
            return bool(serialized_data == snapshot_data)
        try:
            golden, entry = _golden_value(snapshot_data)
        except GoldenFileError as exc:
            serialized_data.problem = str(exc)
            return False
        serialized_data.golden_entry = entry
        serialized_data.comparison = compare(golden, serialized_data.value, serialized_data.rules)
        return serialized_data.comparison.ok

    def diff_lines(
        self, serialized_data: SerializedData, snapshot_data: SerializedData
    ) -> Iterator[str]:
        if not isinstance(serialized_data, Received):
            yield from super().diff_lines(serialized_data, snapshot_data)
            return
        if serialized_data.problem:
            yield serialized_data.problem
            return
        comparison, golden_entry = serialized_data.comparison, serialized_data.golden_entry
        if comparison is None or golden_entry is None:
            yield "No golden for this snapshot yet: run `pytest --snapshot-update` to write it."
            return
        # What changed since the golden comes first: pytest truncates long explanations from
        # the end, and this line says how to read everything below it.
        yield from explain_changes(golden_entry, serialized_data.entry)
        yield from comparison.describe()
        yield (
            "To accept the new values, run `pytest --snapshot-update`: only the values outside "
            "tolerance are rewritten."
        )

    # -- storage ------------------------------------------------------------------------------

    def discover_snapshots(
        self,
        *,
        test_location: PyTestLocation,
        ignore_extensions: list[str] | None = None,
    ) -> SnapshotCollections:
        # Claim our own files only. The default marks every other file in __snapshots__ as
        # an unknown collection, which syrupy deletes under --snapshot-update.
        discovered = SnapshotCollections()
        item = getattr(test_location, "item", None)
        config = getattr(item, "config", None)
        guard = guard_for(config)
        ignored = self.file_extension in (ignore_extensions or ())
        if ignored and (config is None or config.stash.get(GUARD, None) is None):
            return discovered
        if guard is not None and guard.user_ignores_goldens:
            return discovered
        directory = Path(self.dirname(test_location=test_location))
        if not directory.is_dir():
            return discovered
        for path in sorted(directory.glob(f"*.{self.file_extension}")):
            if not path.is_file() or path.name.startswith("."):
                continue
            location = str(path)
            try:
                doc = load_document(location)
            except (GoldenFileError, OSError, UnicodeDecodeError):
                # Unreadable (a merge conflict, say): never offered for deletion. The tests
                # that use it fail with the reason when they read it.
                continue
            names = list((doc or {}).get("snapshots", {}))
            if not names:
                discovered.add(SnapshotEmptyCollection(location=location))
                continue
            if guard is not None:
                module = module_key_of_golden(location)
                names = [n for n in names if guard.may_count_as_unused(module, n)]
                if not names:
                    continue  # every golden here is protected: the file is not offered at all
            collection = self.read_snapshot_collection(snapshot_location=location)
            kept = SnapshotCollection(location=location)
            for name in names:
                snapshot = collection.get(name)
                if snapshot is not None:
                    kept.add(snapshot)
            discovered.add(kept)
        return discovered

    def read_snapshot_collection(self, *, snapshot_location: str) -> SnapshotCollection:
        collection = SnapshotCollection(location=snapshot_location)
        try:
            doc = load_document(snapshot_location)
        except (GoldenFileError, OSError, UnicodeDecodeError):
            # Report an unreadable file as holding nothing; the tests that use it fail with
            # the reason when they read it, and it is never deleted while they use it.
            return collection
        array_dir = sidecar_dir(snapshot_location)
        for name, entry in (doc or {}).get("snapshots", {}).items():
            collection.add(Snapshot(name=name, data=Golden.build(entry, array_dir)))
        return collection

    def read_snapshot_data_from_location(
        self, *, snapshot_location: str, snapshot_name: str, session_id: str
    ) -> SerializedData | None:
        entry = _current_entry(snapshot_location, snapshot_name)
        if not isinstance(entry, dict):
            return None
        return Golden.build(entry, sidecar_dir(snapshot_location))

    @classmethod
    def write_snapshot_collection(
        cls,
        *,
        snapshot_collection: SnapshotCollection,
        name_order: dict[str, int] | None = None,
    ) -> None:
        # In a pytest session the entries wait in PENDING and each golden file is written once
        # per module (see .writes); the sidecars are written now, so no array is held.
        location = snapshot_collection.location
        array_dir = sidecar_dir(location)
        entries: dict[str, object] = {}
        for snapshot in snapshot_collection:
            data = snapshot.data
            if isinstance(data, Received):
                old = _current_entry(location, str(snapshot.name))
                entries[str(snapshot.name)] = _entry_to_write(data, old, array_dir)
                data.release()
            elif isinstance(data, Golden):
                entries[str(snapshot.name)] = dict(data.entry)
        if PENDING.active:
            for name, entry in entries.items():
                PENDING.put(location, name, entry, name_order)
        else:
            write_entries(location, entries, name_order, PENDING.started_ns)

    def delete_snapshots(self, *, snapshot_location: str, snapshot_names: set[str]) -> None:
        with golden_lock(snapshot_location):
            path = Path(snapshot_location)
            array_dir = sidecar_dir(snapshot_location)
            doc = load_document(snapshot_location)
            if doc is None:
                return
            entries = {k: v for k, v in doc["snapshots"].items() if k not in snapshot_names}
            if entries:
                data = render_document(entries)
                write_atomic(path, lambda handle: handle.write(data))
            else:
                path.unlink(missing_ok=True)
            collect_garbage(
                array_dir,
                {s for e in entries.values() for s in sidecars_in(e)},
                keep_since_ns=PENDING.started_ns,
            )


def _current_entry(location: str, name: str) -> object | None:
    """The golden entry as this session sees it: pending to be written, or on disk."""
    pending = PENDING.get(location, name)
    if pending is not None:
        return pending
    doc = load_document(location)
    return None if doc is None else doc["snapshots"].get(name)


def _entry_to_write(received: Received, old_entry: object, array_dir: Path) -> dict[str, object]:
    """The entry to store: the received one, but with in-tolerance values kept from the golden.

    Leaves within tolerance keep their node; a failing array keeps the golden value of each
    element within tolerance (:class:`~pytest_physpipe.snapshot.merge.ArrayMerge`).
    """
    entry = received.entry
    sidecars: Mapping[str, np.ndarray] = received.sidecars
    # A golden that does not decode (a corrupt or missing sidecar) is replaced, sidecars too.
    rewrite_sidecars = False
    if isinstance(old_entry, dict):
        loader = sidecar_loader(array_dir)
        try:
            golden = Decoder(loader).decode(old_entry.get("value"))
            comparison = compare(golden, received.value, received.rules)
        except (GoldenFileError, TypeError, ValueError):
            rewrite_sidecars = True
        else:
            if comparison.ok:
                return old_entry
            merge = ArrayMerge(
                {m.path: m.tolerance for m in comparison.mismatches}, loader, received.sidecars
            )
            value = merge_values(
                old_entry.get("value"), entry["value"], "", comparison.failed_paths, merge
            )
            entry = {**entry, "value": value}
            sidecars = {**received.sidecars, **merge.sidecars}
    for name in sorted(set(sidecars_in(entry["value"]))):
        target = array_dir / name
        if rewrite_sidecars or not target.exists():
            array = sidecars[name]
            write_atomic(target, lambda handle, a=array: np.save(handle, a, allow_pickle=False))
        else:
            # Referred to by an entry that may still be pending: mark it as of this session,
            # so that no flush collects it meanwhile (files.collect_garbage).
            os.utime(target)
    return entry

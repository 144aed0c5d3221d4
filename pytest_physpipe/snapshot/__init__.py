"""Golden snapshots of physics metrics, compared within tolerances.

What this subsystem promises:

* ``physics_snapshot`` is a syrupy ``SnapshotAssertion`` with this package's extension:
  ``--snapshot-update``, the unused-golden report and xdist work as syrupy users know.
* Numbers are compared within tolerances by the pure :mod:`pytest_physpipe.tolerance`, never as
  text; a value within tolerance is never rewritten, and a failing golden is rewritten only in
  the leaves that fail.
* Goldens are readable JSON with full-precision floats; large arrays live in binary sidecars
  named by the checksum of their content, verified on every read.
* A failure says which values moved, by how much, and what changed since the golden was written
  (a stage's code or config, or only the platform).

Modules, in the order data flows through them: :mod:`.encoding` (values to JSON nodes and
back), :mod:`.document` (the readable file), :mod:`.merge` (keeping in-tolerance leaves on
update), :mod:`.files` (golden files and sidecars on disk), :mod:`.writes` (each golden file
written once per module), :mod:`.provenance` (what produced a golden), :mod:`.extension` (the
syrupy extension), :mod:`.assertion` (the fixture), :mod:`.guard` (goldens never lost by
accident).
Importing this package imports none of them: pytest loads the plugin on every run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_physpipe.snapshot.assertion import PhysicsSnapshot, make_physics_snapshot
    from pytest_physpipe.snapshot.encoding import GoldenFileError
    from pytest_physpipe.snapshot.extension import PhysicsSnapshotExtension

__all__ = [
    "GoldenFileError",
    "PhysicsSnapshot",
    "PhysicsSnapshotExtension",
    "make_physics_snapshot",
]

_WHERE = {
    "GoldenFileError": "encoding",
    "PhysicsSnapshot": "assertion",
    "PhysicsSnapshotExtension": "extension",
    "make_physics_snapshot": "assertion",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)

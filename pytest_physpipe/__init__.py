"""pytest-physpipe: simulation pipelines as reproducible, cached pytest fixtures.

Public API only; see the README and docs/ for how to use it. The extension contracts that
plugins implement (:class:`Codec`, :class:`CodecRegistry`, :class:`Backend`,
:class:`JobRequest`, :class:`JobInfo`, :class:`JobState`) and :class:`Workflow` (stages outside
pytest) are exported here too.

Every name is imported on first use (``from pytest_physpipe import stage`` as much as
``pytest_physpipe.stage``): importing the package itself imports nothing, so the ``physpipe``
command, which lives in a submodule, pays for neither pytest nor pydantic. ``stage`` is both
the decorator and the submodule that defines it; the package's attribute is always the
decorator, as it was when this module imported it eagerly (see ``_Package``).

The package's submodules are found by Python's own path finder, placed first on
``sys.meta_path`` when the package is imported (see ``_OwnModules``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_physpipe.cluster.backends.base import Backend, JobInfo, JobRequest, JobState
    from pytest_physpipe.context import StageContext
    from pytest_physpipe.errors import (
        CorruptEntryWarning,
        PhyspipeError,
        PhyspipeWarning,
        StoreWriteWarning,
    )
    from pytest_physpipe.fanin import Gathered, gather
    from pytest_physpipe.models import ClusterOptions, InputFile, Resources, Retry, StageConfig
    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.stage import stage, sweep
    from pytest_physpipe.store.codecs import Codec, CodecRegistry
    from pytest_physpipe.workflow import Workflow

__all__ = [
    "Backend",
    "ClusterOptions",
    "Codec",
    "CodecRegistry",
    "CorruptEntryWarning",
    "Gathered",
    "InputFile",
    "JobInfo",
    "JobRequest",
    "JobState",
    "PhyspipeError",
    "PhyspipeWarning",
    "Resources",
    "Retry",
    "StageConfig",
    "StageContext",
    "StageRecord",
    "StoreWriteWarning",
    "Workflow",
    "gather",
    "stage",
    "sweep",
]

# Each public name -> the module that defines it (imported on first access).
_WHERE = {
    "Backend": "pytest_physpipe.cluster.backends.base",
    "JobInfo": "pytest_physpipe.cluster.backends.base",
    "JobRequest": "pytest_physpipe.cluster.backends.base",
    "JobState": "pytest_physpipe.cluster.backends.base",
    "Codec": "pytest_physpipe.store.codecs",
    "CodecRegistry": "pytest_physpipe.store.codecs",
    "Workflow": "pytest_physpipe.workflow",
    "StageContext": "pytest_physpipe.context",
    "CorruptEntryWarning": "pytest_physpipe.errors",
    "PhyspipeError": "pytest_physpipe.errors",
    "PhyspipeWarning": "pytest_physpipe.errors",
    "StoreWriteWarning": "pytest_physpipe.errors",
    "Gathered": "pytest_physpipe.fanin",
    "gather": "pytest_physpipe.fanin",
    "ClusterOptions": "pytest_physpipe.models",
    "InputFile": "pytest_physpipe.models",
    "Resources": "pytest_physpipe.models",
    "Retry": "pytest_physpipe.models",
    "StageConfig": "pytest_physpipe.models",
    "StageRecord": "pytest_physpipe.records",
    "stage": "pytest_physpipe.stage",
    "sweep": "pytest_physpipe.stage",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_physpipe' has no attribute {name!r}")
    # Not cached in the package's namespace: the defining module is the one source, so a
    # module unloaded and imported again (pytester's in-process runs do) is never shadowed
    # by a stale class here. A second access costs one sys.modules lookup.
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package's module type: importing the submodule ``stage`` binds the package's
    ``stage`` to the submodule (the import system does so once the submodule has run), and
    here it binds the decorator instead, the public name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "stage" and isinstance(value, types.ModuleType):
            value = value.stage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


class _OwnModules:
    """Finds ``pytest_physpipe.*`` with Python's own path finder, ahead of any other finder.

    pytest loads every module of a plugin's distribution through its assertion-rewriting
    loader, which reads cached bytecode with ``marshal.load`` on a file object: about ten
    times Python's own loader, ~0.1 s on every run for this package's modules. Rewriting
    them buys nothing, since the package's checks raise ``PhyspipeError`` rather than assert,
    so they load the plain way, from the standard ``__pycache__``. Only this package's
    submodules are answered for: every other module, the user's tests and conftests among
    them, is found (and rewritten) exactly as before.
    """

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None or not name.startswith("pytest_physpipe."):
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)


if not any(type(finder).__name__ == "_OwnModules" for finder in sys.meta_path):
    sys.meta_path.insert(0, _OwnModules())

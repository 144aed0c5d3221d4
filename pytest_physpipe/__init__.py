"""pytest-physpipe: simulation pipelines as reproducible, cached pytest fixtures.

Public API only; see the README and docs/ for how to use it. The extension contracts that
plugins implement (:class:`Codec`, :class:`CodecRegistry`, :class:`Backend`,
:class:`JobRequest`, :class:`JobInfo`, :class:`JobState`) and :class:`Workflow` (stages outside
pytest) are exported here too, imported on first use so that loading the plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from pytest_physpipe.cluster.backends.base import Backend, JobInfo, JobRequest, JobState
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

# Extension contracts by name -> the module that defines them (imported on first access).
_LAZY = {
    "Backend": "pytest_physpipe.cluster.backends.base",
    "JobInfo": "pytest_physpipe.cluster.backends.base",
    "JobRequest": "pytest_physpipe.cluster.backends.base",
    "JobState": "pytest_physpipe.cluster.backends.base",
    "Codec": "pytest_physpipe.store.codecs",
    "CodecRegistry": "pytest_physpipe.store.codecs",
    "Workflow": "pytest_physpipe.workflow",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_physpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

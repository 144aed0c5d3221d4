"""pytest-physpipe: simulation pipelines as reproducible, cached pytest fixtures.

Public API only; see the README and docs/ for how to use it.
"""

from __future__ import annotations

from pytest_physpipe.context import StageContext
from pytest_physpipe.errors import (
    CorruptEntryWarning,
    PhyspipeError,
    PhyspipeWarning,
    StoreWriteWarning,
)
from pytest_physpipe.models import ClusterOptions, InputFile, Resources, Retry, StageConfig
from pytest_physpipe.records import StageRecord
from pytest_physpipe.stage import stage, sweep

__all__ = [
    "ClusterOptions",
    "CorruptEntryWarning",
    "InputFile",
    "PhyspipeError",
    "PhyspipeWarning",
    "Resources",
    "Retry",
    "StageConfig",
    "StageContext",
    "StageRecord",
    "StoreWriteWarning",
    "stage",
    "sweep",
]

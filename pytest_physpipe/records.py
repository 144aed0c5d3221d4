"""``StageRecord``: the provenance of one stage instance, stored in ``meta.json`` and reported."""

from __future__ import annotations

import functools
import platform
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "StageRecord",
    "Status",
    "base_versions",
    "distribution_versions",
    "now_iso",
]

#: ``hit``: served from the store; ``computed``: computed by this run; ``loaded-from-job``:
#: computed by a batch job this run submitted or waited for; ``failed``: raised;
#: ``skipped``: missing under ``--physpipe-cached-only``.
Status = Literal["hit", "computed", "loaded-from-job", "failed", "skipped"]


class StageRecord(BaseModel):
    """What is known about one stage instance; ``physpipe.record(name)`` returns it."""

    model_config = ConfigDict(extra="ignore")

    key: str
    name: str
    config: dict[str, Any] = Field(default_factory=dict)
    upstream: dict[str, str] = Field(default_factory=dict)
    status: Status = "computed"
    duration_s: float = 0.0
    metrics: dict[str, float] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    created_at: str = ""
    host: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    code: str = ""
    param_id: str | None = None
    worker: str | None = None
    backend: str = "local"
    job_id: str | None = None
    queued_s: float | None = None
    error: str | None = None
    #: The parts of the key (code fingerprint and what it covered, config, upstream keys,
    #: packages, inputs): what ``physpipe show`` lists and a later run compares against.
    manifest: dict[str, Any] = Field(default_factory=dict)
    #: Why this run computed the instance (``new``, ``config steps 200 → 150``, ...).
    reason: str | None = None
    #: The codec the value is stored with (``pickle`` is worth knowing about).
    codec: str | None = None

    @property
    def label(self) -> str:
        """``name[param-id]``, as the test ids read."""
        return f"{self.name}[{self.param_id}]" if self.param_id else self.name


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def base_versions() -> dict[str, str]:
    """Versions every record carries: Python, numpy, this plugin, the platform."""
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": sys.platform}
    for package in ("numpy", "pytest-physpipe"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    versions["machine"] = platform.machine()
    return versions


def distribution_versions(modules: Iterable[str]) -> dict[str, str]:
    """Versions of the installed distributions that provide the top-level ``modules``."""
    from importlib import metadata

    names = _distributions()
    versions: dict[str, str] = {}
    for module in modules:
        for dist in names.get(module, ()):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    return versions


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, tuple[str, ...]]:
    from importlib import metadata

    return {k: tuple(v) for k, v in metadata.packages_distributions().items()}


def hostname() -> str:
    from pytest_physpipe.store.hosts import hostname as this_hostname

    return this_hostname()

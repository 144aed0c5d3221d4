"""Batch backends: submit stage jobs to Slurm or PBS and follow them.

The contract is :class:`Backend` in :mod:`.base`; :func:`batch_backend` builds one by the
name ``--physpipe-backend`` takes. Importing this package imports no scheduler module
beyond these small files and runs no command.
"""

from __future__ import annotations

from pytest_physpipe.cluster.backends.base import (
    DEFAULT_TIMEOUT_S,
    Backend,
    JobInfo,
    JobRequest,
    JobState,
    log_tail,
    render_script,
    script_path,
    write_script,
)
from pytest_physpipe.cluster.backends.pbs import PbsBackend
from pytest_physpipe.cluster.backends.slurm import SlurmBackend
from pytest_physpipe.errors import BackendError

__all__ = [
    "BATCH_BACKENDS",
    "DEFAULT_TIMEOUT_S",
    "Backend",
    "JobInfo",
    "JobRequest",
    "JobState",
    "PbsBackend",
    "SlurmBackend",
    "batch_backend",
    "log_tail",
    "render_script",
    "script_path",
    "write_script",
]

#: The batch schedulers by ``--physpipe-backend`` name.
BATCH_BACKENDS: dict[str, type[SlurmBackend] | type[PbsBackend]] = {
    "slurm": SlurmBackend,
    "pbs": PbsBackend,
}


def batch_backend(name: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Backend:
    """The batch backend called ``name`` (``"slurm"`` or ``"pbs"``), not yet checked."""
    try:
        cls = BATCH_BACKENDS[name]
    except KeyError:
        raise BackendError(
            f"unknown batch backend {name!r}: choose one of {', '.join(sorted(BATCH_BACKENDS))}"
        ) from None
    return cls(timeout_s=timeout_s)

"""``StageContext``: what a running stage can ask for through its ``ctx`` parameter."""

from __future__ import annotations

import logging
import shutil
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_physpipe.keys import seed_from_key
from pytest_physpipe.models import StageConfig

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Sequence

    import numpy as np

    from pytest_physpipe.resources import Grant

__all__ = ["InstanceLog", "StageContext"]


class InstanceLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``ctx.log``: the stage's logger; a swept instance's messages start with its label
    (``point[i=3]: converged``) and every record carries ``physpipe_instance``."""

    def __init__(self, logger: logging.Logger, label: str) -> None:
        super().__init__(logger, {"physpipe_instance": label})
        stage = logger.name.removeprefix("physpipe.")
        self._prefix = "" if label == stage else f"{label}: "

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self._prefix:
            # A label may hold a `%`; escaped only where the message is %-formatted.
            prefix = self._prefix.replace("%", "%%") if args else self._prefix
            msg = f"{prefix}{msg}"
        # The caller's line, not this one, in the record.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        super().log(level, msg, *args, **kwargs)


class StageContext:
    """Per-instance services for a running stage.

    ``key`` (hex), ``seed`` (int from the key), ``rng`` (a ``numpy.random.Generator`` seeded with
    it), ``config``, ``workdir`` (scratch directory for this instance), ``resources`` (what was
    granted: ``cpus``, ``gpu_ids``), ``metric(name, value)``, ``artifact(name, path_or_bytes)``
    and ``log`` (the logger ``physpipe.<stage>``, through an adapter naming the instance).

    One logger per stage, not per instance: pytest visits every logger on each test phase, so
    a logger per swept instance would make a long session quadratic.
    """

    def __init__(
        self,
        *,
        name: str,
        key: str,
        config: StageConfig | None,
        workdir: Path | Callable[[], Path],
        resources: Grant,
        mpi: int = 0,
        stage: str | None = None,
    ) -> None:
        #: The instance's label (``point[i=3]``); ``stage`` is the stage's name (``point``).
        self.name = name
        #: MPI ranks the stage declared (``Resources(mpi=N)``); ``mpiexec`` starts them.
        self.mpi = mpi
        self.key = key
        self.seed = seed_from_key(key)
        self.config = config
        self._workdir = workdir
        self.resources = resources
        self.log = InstanceLog(logging.getLogger(f"physpipe.{stage or name}"), name)
        self.metrics: dict[str, float] = {}
        self.artifacts: dict[str, Path] = {}

    @property
    def workdir(self) -> Path:
        """This instance's scratch directory, made on first use (most stages never ask)."""
        if not isinstance(self._workdir, Path):
            self._workdir = self._workdir()
        return self._workdir

    @cached_property
    def rng(self) -> np.random.Generator:
        """A generator seeded from the key: the same instance always draws the same numbers."""
        import numpy as np  # not at module level: `import pytest_physpipe` stays cheap

        return np.random.default_rng(self.seed)

    def metric(self, name: str, value: float) -> None:
        """Record a scalar in the provenance record and the reports."""
        if not name or not isinstance(name, str):
            raise ValueError(f"stage {self.name!r}: ctx.metric() needs a non-empty name")
        try:
            self.metrics[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"stage {self.name!r}: metric {name!r} must be a number, got {value!r}"
            ) from None

    def artifact(self, name: str, path_or_bytes: str | Path | bytes) -> Path:
        """Keep a file beside the entry (a copy is made now); returns the copy's scratch path."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(
                f"stage {self.name!r}: artifact name {name!r} must be a plain file name"
            )
        folder = self.workdir / ".artifacts"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if isinstance(path_or_bytes, bytes | bytearray | memoryview):
            target.write_bytes(bytes(path_or_bytes))
        else:
            source = Path(path_or_bytes)
            if not source.is_file():
                raise FileNotFoundError(
                    f"stage {self.name!r}: ctx.artifact({name!r}, ...) names no file: {source}"
                )
            shutil.copyfile(source, target)
        self.artifacts[name] = target
        return target

    def mpiexec(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` as the stage's MPI ranks: ``mpiexec -n N`` here, ``srun`` in a Slurm
        job, the site's ``mpiexec`` in a PBS job (see ``pytest_physpipe/mpi.py``).

        Keyword arguments go to :func:`subprocess.run` (``check=True`` unless given).
        """
        from pytest_physpipe.mpi import run_ranks

        return run_ranks(self.name, self.mpi, self.resources.cpus, argv, **kwargs)

    def __repr__(self) -> str:
        return f"StageContext(name={self.name!r}, key={self.key[:12]}…)"

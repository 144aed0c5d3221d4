"""The exception and warning hierarchy.

Every error is rooted at :class:`PhyspipeError` and is also the built-in error that fits, so
callers can catch either. Errors travel back from xdist workers and batch jobs, so each class
pickles with its message intact (the default ``BaseException.__reduce__`` replays ``args``; we
keep every constructor's signature ``(message: str)`` so that holds).
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CodecError",
    "ConfigError",
    "CorruptEntryError",
    "CorruptEntryWarning",
    "ForeignSignatureError",
    "GraphError",
    "JobFailedError",
    "LockTimeoutError",
    "NotInStoreError",
    "PhyspipeError",
    "PhyspipeWarning",
    "ProjectError",
    "ResourceError",
    "SecretError",
    "SelectionError",
    "SignatureError",
    "StageError",
    "StoreError",
    "StoreWriteWarning",
    "UnstorableValueError",
    "UnverifiableEntryError",
]


class PhyspipeError(Exception):
    """Base class of every pytest-physpipe error."""


class StageError(PhyspipeError, TypeError):
    """A stage declaration is invalid (bad signature, bad option)."""


class GraphError(PhyspipeError, ValueError):
    """The stage graph is invalid: a cycle, or a parameter that names no stage."""


class ConfigError(PhyspipeError, ValueError):
    """A stage config (or a ``--physpipe-set`` override) does not validate."""


class SelectionError(ConfigError, LookupError):
    """A :class:`~pytest_physpipe.Workflow` call names no stage instance: an unknown stage or
    field, or a selection matching none or several of a swept stage's ``params`` entries."""


class ProjectError(PhyspipeError, ImportError):
    """A :class:`~pytest_physpipe.Workflow` cannot load its project: the pytest
    configuration, or a module of stages (missing, failing, or declaring no stage)."""


class CodecError(PhyspipeError, ValueError):
    """A value could not be encoded or decoded by the codec asked for."""


class UnstorableValueError(CodecError):
    """No codec can store the value a stage returned."""


class StoreError(PhyspipeError, OSError):
    """The store cannot be created, read or written."""


class NotInStoreError(StoreError, FileNotFoundError):
    """A read-only call found no store where it looked, or no entry for the instance it asked
    about (a :class:`~pytest_physpipe.Workflow`'s ``status``, ``record``, ``plan``)."""


class CorruptEntryError(StoreError):
    """A store entry failed verification (missing file, size or checksum mismatch)."""


class SignatureError(CorruptEntryError):
    """An entry's signature (HMAC) does not verify with this user's secret: tampered with."""


class ForeignSignatureError(SignatureError):
    """An entry was signed with another secret (another user, or another ``PHYSPIPE_SECRET``).

    It is intact for whoever signed it: it is refused here, never replaced.
    """


class UnverifiableEntryError(CorruptEntryError):
    """An entry that needs a signature has none, or no usable secret is there to check it."""


class SecretError(PhyspipeError, ValueError):
    """No usable secret to sign entries with (empty, short, unreadable or exposed)."""


class LockTimeoutError(PhyspipeError, TimeoutError):
    """A lock could not be acquired in time."""


class ResourceError(PhyspipeError, ValueError):
    """A stage asks for more CPUs/GPUs than the budget, or the budget is invalid."""


class BackendError(PhyspipeError, RuntimeError):
    """A batch backend is unusable (missing command, rejected submission)."""


class JobFailedError(PhyspipeError, RuntimeError):
    """A batch job that computes a stage failed, was cancelled, or vanished."""


class PhyspipeWarning(UserWarning):
    """Base class of every pytest-physpipe warning."""


class CorruptEntryWarning(PhyspipeWarning):
    """A store entry was corrupt or partial; it is being recomputed."""


class StoreWriteWarning(PhyspipeWarning):
    """A computed value could not be written to the store (full disk, permissions)."""

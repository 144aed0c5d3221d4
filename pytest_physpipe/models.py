"""The declarative types users build stages with: configs, input files, resources, retries.

Nothing here does I/O except :class:`InputFile` hashing, which :mod:`pytest_physpipe.keys`
asks for; everything is immutable so that a declaration can be hashed into a provenance key.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pytest_physpipe.frozen import FrozenValue

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

__all__ = ["ClusterOptions", "InputFile", "Resources", "Retry", "StageConfig"]


class StageConfig(BaseModel):
    """Base class of stage configs: a frozen pydantic model that forbids unknown fields.

    Subclass it and annotate a stage's ``config`` parameter with the subclass::

        class GridConfig(StageConfig):
            n: int = 128
            length: float = 1.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __eq__(self, other: object) -> bool:
        # pydantic compares field values with ==, so configs holding 1, 1.0 and True (or a
        # tuple and a list) are "equal", and pytest, which reuses a parametrized fixture's
        # value while the param compares equal, would serve one config the other's result.
        # Equal means equal provenance: the type-faithful encoding keys use.
        if other is self:
            return True  # what the comparison below ends in, without two encodings
        cls = type(self)
        if type(other) is cls:
            # pytest compares each test's param with the one its fixture holds: two configs
            # of one sweep, whose fields differ. Different field values make pydantic answer
            # False, so that is answered here without pydantic's checks before it.
            values = _FIELD_VALUES.get(cls) or _field_values(cls)
            try:
                differ = not values(self.__dict__) == values(other.__dict__)
            except Exception:  # a missing field, a value that cannot say: pydantic decides
                differ = False
            if differ:
                return False
        equal = super().__eq__(other)
        if equal is not True or type(self) is not type(other):
            return equal
        from pytest_physpipe.keys import UnencodableField, canonical, config_identity

        try:
            return canonical(config_identity(self)) == canonical(config_identity(other))
        except UnencodableField:
            return True

    __hash__ = BaseModel.__hash__


#: Per config class, the values of its fields from an instance's ``__dict__`` (what pydantic's
#: ``__eq__`` compares them by).
_FIELD_VALUES: dict[type[StageConfig], Callable[[dict[str, Any]], Any]] = {}


def _field_values(cls: type[StageConfig]) -> Callable[[dict[str, Any]], Any]:
    names = tuple(cls.__pydantic_fields__)
    values = operator.itemgetter(*names) if names else _no_fields
    _FIELD_VALUES[cls] = values
    return values


def _no_fields(data: dict[str, Any]) -> tuple[()]:
    return ()


def _path_str(path: Path) -> str:
    return str(path)


class _PathAsText:
    """An ``InputFile`` dumps as the text of its path, in Python and JSON alike.

    The serialization schema ``PlainSerializer(_path_str, return_type=str)`` builds, set here
    without importing ``pydantic.functional_serializers`` (about 4 ms of every run, for a
    module nothing else a run uses needs; see ``docs/decisions.md#fixed-cost``).
    """

    __slots__ = ()

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        schema = cast("dict[str, Any]", handler(source))  # a dict, whichever kind of schema
        schema["serialization"] = core_schema.plain_serializer_function_ser_schema(
            _path_str, info_arg=False, return_schema=core_schema.str_schema()
        )
        return schema

    def __repr__(self) -> str:
        return "PathAsText()"


#: A config field holding the path of an input data file. The file's *content* is hashed into
#: the provenance key, so editing the data invalidates exactly the stages that read it.
InputFile = Annotated[Path, _PathAsText(), "physpipe:InputFile"]

_MEM = re.compile(r"^\d+(\.\d+)?[KMGT]?B?$", re.IGNORECASE)
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class Resources(BaseModel):
    """What one stage instance needs while it runs.

    ``cpu`` and ``gpu`` are slots taken from the run's budget (``--physpipe-cpus``,
    ``--physpipe-gpus``); ``mem`` and ``walltime`` go to the batch scheduler when a stage is
    dispatched to a cluster (Slurm syntax: ``"4G"``, ``"1:00:00"`` or ``"2-00:00:00"``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: int = Field(default=1, ge=1)
    gpu: int = Field(default=0, ge=0)
    mem: str = "4G"
    walltime: str = "1:00:00"
    #: MPI ranks (0: not an MPI stage). The stage starts them with ``ctx.mpiexec(argv)``;
    #: ``cpu`` is then the CPUs of each rank, and the stage holds ``mpi x cpu`` CPU slots.
    mpi: int = Field(default=0, ge=0)

    @property
    def cpu_slots(self) -> int:
        """CPU slots the stage holds while it runs: ``cpu``, times the ranks of an MPI stage."""
        return self.cpu * max(1, self.mpi)

    @field_validator("mem")
    @classmethod
    def _check_mem(cls, value: str) -> str:
        if not _MEM.match(value):
            raise ValueError(f"mem={value!r} is not a size such as '512M', '4G' or '1T'")
        return value.upper().removesuffix("B")

    @field_validator("walltime")
    @classmethod
    def _check_walltime(cls, value: str) -> str:
        if not _WALLTIME.match(value):
            raise ValueError(
                f"walltime={value!r} is not a duration such as '30', '1:00:00' or '2-00:00:00'"
            )
        return value

    @property
    def mem_bytes(self) -> int:
        """``mem`` in bytes."""
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        text = self.mem
        factor = units.get(text[-1], 1 << 20)  # Slurm reads a bare number as megabytes
        number = text[:-1] if text[-1] in units else text
        return int(float(number) * factor)

    @property
    def walltime_s(self) -> int:
        """``walltime`` in seconds (Slurm's forms: ``M``, ``M:S``, ``H:M:S``, ``D-H[:M[:S]]``)."""
        days = 0
        text = self.walltime
        if "-" in text:
            day_text, text = text.split("-", 1)
            days = int(day_text)
            parts = [int(p) for p in text.split(":")]
            parts += [0] * (3 - len(parts))
            hours, minutes, seconds = parts
        else:
            parts = [int(p) for p in text.split(":")]
            if len(parts) == 1:
                hours, minutes, seconds = 0, parts[0], 0
            elif len(parts) == 2:
                hours, minutes, seconds = 0, parts[0], parts[1]
            else:
                hours, minutes, seconds = parts
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class ClusterOptions(BaseModel):
    """Per-stage batch options, used when the stage is dispatched to Slurm or PBS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    queue: str | None = None
    extra_args: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()


@dataclass(init=False, repr=False, eq=False)
class Retry(FrozenValue):
    """Retry a stage that raises one of ``on``, waiting ``backoff ** attempt`` seconds between.

    Immutable; equal to another with equal fields.
    """

    max_attempts: int = 3
    backoff: float = 2.0
    on: tuple[type[BaseException], ...] = field(default=(TimeoutError,))

    def __init__(
        self,
        max_attempts: int = 3,
        backoff: float = 2.0,
        on: tuple[type[BaseException], ...] = (TimeoutError,),
    ) -> None:
        # Written out rather than generated: see pytest_physpipe.frozen.
        self.__dict__.update(max_attempts=max_attempts, backoff=backoff, on=on)
        self.__post_init__()

    def __post_init__(self) -> None:
        from pytest_physpipe.errors import StageError

        on: Any = self.on
        if isinstance(on, type):
            on = (on,)  # Retry(on=TimeoutError): one class is a tuple of one
        if not (
            isinstance(on, (tuple, list))
            and on
            and all(isinstance(c, type) and issubclass(c, BaseException) for c in on)
        ):
            raise StageError(
                f"Retry(on={self.on!r}): `on` takes exception classes, such as "
                "Retry(on=(TimeoutError, ConnectionError)); strings and instances match nothing."
            )
        object.__setattr__(self, "on", tuple(on))
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise StageError(f"Retry(max_attempts={self.max_attempts!r}) must be an integer")
        if self.max_attempts < 1:
            raise StageError(
                f"Retry(max_attempts={self.max_attempts}) must be at least 1 (the first try "
                "counts); use Retry(max_attempts=1) for no retry"
            )
        if not isinstance(self.backoff, (int, float)) or self.backoff < 0:
            raise StageError(f"Retry(backoff={self.backoff!r}) must be a number >= 0")

    @classmethod
    def coerce(cls, value: Retry | int) -> Retry:
        """``retries=N`` means N retries after the first attempt, on any exception."""
        if isinstance(value, Retry):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"retries={value!r} must be a Retry(...) or a non-negative int")
        return cls(max_attempts=value + 1, backoff=0.0 if value == 0 else 2.0, on=(Exception,))

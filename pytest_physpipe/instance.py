"""A planned stage instance: one stage, one resolved config, its upstream keys and its key.

Pure data, built by the planner (:mod:`pytest_physpipe.plan`) from declarations only. An
instance's key manifest (what its key was computed from, kept in its store entry) is built on
first use: a plan of ten thousand cached instances shows their keys and statuses and never
reads a manifest, so it builds none (see ``docs/decisions.md#plan-cost``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest

from pytest_physpipe import keys
from pytest_physpipe.fanin import Coord
from pytest_physpipe.frozen import Frozen, FrozenValue
from pytest_physpipe.models import StageConfig
from pytest_physpipe.stage import StageSpec

__all__ = ["GatherGroup", "GatherRef", "StageFixed", "StageInstance"]


class StageFixed:
    """What every instance of one stage shares within a run: the key's fixed parts, encoded
    once, and the manifest entries that do not vary between instances.

    The manifest entries here are one object per stage, shared by its instances' manifests
    (which nothing edits): a sweep of ten thousand instances builds them once.
    """

    __slots__ = ("head", "spec", "tail", "template")

    def __init__(self, spec: StageSpec, packages: Mapping[str, str], salt: str) -> None:
        self.spec = spec
        # The qualified name without the module, like the stage's: moving a stage and its
        # config class to another file keeps the key (docs/decisions.md).
        config_class = None if spec.config_class is None else spec.config_class.__qualname__
        self.template = keys.KeyTemplate(
            name=spec.name,
            qualname=spec.qualname,
            code=spec.code,
            version=spec.version,
            config_class=config_class,
            packages=packages,
            salt=salt,
        )
        self.head: dict[str, Any] = {
            "stage": spec.name,
            "qualname": spec.qualname,
            "code": spec.code,
            "code_parts": dict(spec.code_info.parts),
            "version": spec.version,
            "config_class": config_class,
        }
        self.tail: dict[str, Any] = {
            "packages": dict(packages),
            "salt": keys.xxh3(salt.encode()),
        }

    def manifest(
        self,
        config_json: dict[str, Any],
        encoded: bytes,
        inputs: Mapping[str, str] | None,
        upstream: Mapping[str, str],
    ) -> dict[str, Any]:
        """The key manifest of one instance (``encoded``: its config as its key encodes it)."""
        return {
            **self.head,
            "config": config_json,
            "config_key": keys.xxh3(encoded),
            "inputs": dict(inputs) if inputs else {},
            "upstream": dict(upstream),
            **self.tail,
        }


_new = object.__new__

#: The ``gathered`` (and ``upstream``) of the instances that have none: one dict for all,
#: which nothing edits (an instance's fields are read, never changed).
NOTHING: dict[str, Any] = {}


@dataclass(init=False, repr=False, eq=False)
class StageInstance(Frozen):
    """One stage with one resolved config and its upstream keys: one store entry.

    Immutable (see :mod:`pytest_physpipe.frozen`); equal only to itself.
    """

    spec: StageSpec
    config: StageConfig | None
    upstream: dict[str, str]
    key: str
    param_id: str | None
    config_json: dict[str, Any] = field(default_factory=dict)
    #: The marks its ``pytest.param(..., marks=...)`` entry gave this instance itself.
    marks: tuple[pytest.Mark, ...] = ()
    #: Per ``gather(...)`` parameter, the instances it receives (its ``upstream`` entry holds
    #: their digest, so the key covers them).
    gathered: dict[str, tuple[GatherRef, ...]] = field(default_factory=dict)

    def __init__(
        self,
        spec: StageSpec,
        config: StageConfig | None,
        upstream: dict[str, str],
        key: str,
        param_id: str | None,
        *,
        config_json: dict[str, Any] | None = None,
        manifest: dict[str, Any] | None = None,
        marks: tuple[pytest.Mark, ...] = (),
        gathered: dict[str, tuple[GatherRef, ...]] | None = None,
        basis: tuple[StageFixed, bytes, Mapping[str, str] | None] | None = None,
    ) -> None:
        # The frozen dataclass's own __init__ sets each field through object.__setattr__,
        # which made building the instances of a large sweep cost more than their keys; the
        # instance's dict is filled directly instead. Setting a field afterwards still raises.
        fields = self.__dict__
        fields["spec"] = spec
        fields["config"] = config
        fields["upstream"] = upstream
        fields["key"] = key
        fields["param_id"] = param_id
        fields["config_json"] = {} if config_json is None else config_json
        fields["marks"] = marks
        fields["gathered"] = NOTHING if gathered is None else gathered
        if manifest is not None:
            fields["manifest"] = manifest
        elif basis is not None:  # three entries, not the tuple: one object less per instance
            fields["_fixed"], fields["_encoded"], fields["_inputs"] = basis

    @classmethod
    def of_entry(
        cls,
        fixed: StageFixed,
        config: StageConfig,
        key: str,
        param_id: str | None,
        config_json: dict[str, Any],
        *,
        encoded: bytes,
        marks: tuple[pytest.Mark, ...],
    ) -> StageInstance:
        """The instance of a ``params=`` entry with nothing upstream, no gathers and no input
        files (a sweep's usual instance): what ``StageInstance(fixed.spec, config, NOTHING,
        key, param_id, config_json=config_json, marks=marks, basis=(fixed, encoded, None))``
        builds, without the branches of the general case."""
        instance = _new(cls)
        fields = instance.__dict__
        fields["spec"] = fixed.spec
        fields["config"] = config
        fields["upstream"] = NOTHING
        fields["key"] = key
        fields["param_id"] = param_id
        fields["config_json"] = config_json
        fields["marks"] = marks
        fields["gathered"] = NOTHING
        fields["_fixed"] = fixed
        fields["_encoded"] = encoded
        fields["_inputs"] = None
        return instance

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The parts the key was computed from, kept in the entry: ``physpipe show`` lists
        them and a later run compares against them to say why it recomputes. Built on first
        use (a commit, or the reason of a missing instance)."""
        # Read, not popped: two threads asking at once build the same document.
        fields = self.__dict__
        fixed: StageFixed | None = fields.get("_fixed")
        if fixed is None:
            return {}
        encoded, inputs = fields["_encoded"], fields["_inputs"]
        return fixed.manifest(self.config_json, encoded, inputs, self.upstream)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def slow(self) -> bool:
        """Runs as a slow instance: a cluster backend dispatches it. A gathering stage always
        runs in the pytest process (after the jobs of what it gathers)."""
        if self.gathered:
            return False
        if self.spec.slow:
            return True
        return any(m.name == "slow" for m in self.marks) if self.marks else False

    @property
    def label(self) -> str:
        param_id = self.param_id
        return f"{self.spec.name}[{param_id}]" if param_id else self.spec.name


@dataclass(init=False, repr=False, eq=False)
class GatherRef(FrozenValue):
    """One instance a gather parameter receives: its key and its coordinates."""

    key: str
    coords: dict[str, Any]

    def __init__(self, key: str, coords: dict[str, Any]) -> None:
        self.__dict__.update(key=key, coords=coords)


@dataclass(init=False, repr=False, eq=False)
class GatherGroup(Frozen):
    """One gather of a ``gather(..., over=...)`` parameter: the fixture param of the
    gathering stage's instance (``ident`` is its pytest id)."""

    param: str
    ident: str
    coords: dict[Coord, Any]
    refs: tuple[GatherRef, ...]

    def __init__(
        self, param: str, ident: str, coords: dict[Coord, Any], refs: tuple[GatherRef, ...]
    ) -> None:
        self.__dict__.update(param=param, ident=ident, coords=coords, refs=refs)

    def __repr__(self) -> str:
        return self.ident

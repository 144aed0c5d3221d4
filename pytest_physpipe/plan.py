"""The plan: which stage instances each collected test needs, with their static keys.

Built right after collection from declarations only (configs, overrides, code fingerprints,
upstream keys); nothing runs. The same :class:`Planner` resolves an instance again when its
fixture executes, so the key a test was planned with is the key it is served.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pytest_physpipe import keys
from pytest_physpipe.errors import ConfigError, GraphError
from pytest_physpipe.models import StageConfig
from pytest_physpipe.stage import StageRegistry, StageSpec, default_ids, validate_config

__all__ = ["MISSING", "Planner", "StageInstance"]

#: "No param given" (``None`` is a legitimate param value).
MISSING: Any = object()


@dataclass(frozen=True, eq=False)
class StageInstance:
    """One stage with one resolved config and its upstream keys: one store entry."""

    spec: StageSpec
    config: StageConfig | None
    upstream: dict[str, str]
    key: str
    param_id: str | None
    config_json: dict[str, Any] = field(default_factory=dict)
    #: The parts the key was computed from, kept in the entry: ``physpipe show`` lists them
    #: and a later run compares against them to say why it recomputes.
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return f"{self.name}[{self.param_id}]" if self.param_id else self.name


class Planner:
    """Resolves configs and keys. One per run; memoizes instances by their declaration."""

    def __init__(
        self,
        *,
        registry: StageRegistry,
        overrides: Iterable[tuple[str, str, str]] = (),
        packages: Mapping[str, str] | None = None,
        salt: str = "",
        rootdir: Path | None = None,
    ) -> None:
        self.registry = registry
        self.overrides: dict[str, dict[str, str]] = {}
        for stage_name, field_name, value in overrides:
            self.overrides.setdefault(stage_name, {})[field_name] = value
        self.packages = dict(packages or {})
        self.salt = salt
        self.rootdir = rootdir
        self._instances: dict[str, StageInstance] = {}
        self._by_declaration: dict[bytes, StageInstance] = {}
        self._item_instances: dict[str, dict[str, StageInstance]] = {}

    # -- validation -----------------------------------------------------------------------------

    def validate(self, used: Iterable[str]) -> None:
        """Check the graph reachable from ``used`` and the ``--physpipe-set`` targets."""
        conflicts = self.registry.conflicts()
        if conflicts:
            old, new = conflicts[0]
            raise GraphError(
                f"two stages are named {new.name!r}: {old.location} and {new.location}. Stage "
                "names share one namespace per test run; rename one with @stage(name=...)."
            )
        seen: set[str] = set()
        for name in used:
            self._visit(name, [], seen)
        for stage_name, fields in self.overrides.items():
            spec = self.registry.get(stage_name)
            if spec is None:
                known = ", ".join(sorted(s.name for s in self.registry.all())) or "none"
                raise ConfigError(
                    f"--physpipe-set {stage_name}.…: there is no stage named {stage_name!r} "
                    f"(stages: {known}). Check the spelling: NAME.FIELD=VALUE."
                )
            for field_name in fields:
                if spec.config_class is None or field_name not in spec.config_class.model_fields:
                    options = (
                        ", ".join(spec.config_class.model_fields) if spec.config_class else "none"
                    )
                    raise ConfigError(
                        f"--physpipe-set {stage_name}.{field_name}: stage {stage_name!r} has no "
                        f"config field {field_name!r} (fields: {options})."
                    )

    def _visit(self, name: str, path: list[str], seen: set[str]) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise GraphError(
                f"stages form a cycle: {cycle}. A stage cannot depend on itself, directly or "
                "through others; break the cycle by merging stages or passing data via config."
            )
        if name in seen:
            return
        spec = self.registry.get(name)
        if spec is None:
            return
        for upstream in spec.upstream:
            if upstream not in self.registry:
                raise GraphError(
                    f"stage {name!r} ({spec.location}) takes parameter {upstream!r}, which is "
                    "not a stage. Stage parameters name other stages so that keys stay static: "
                    f"make {upstream!r} a @stage, or move the value into the config of {name!r} (a "
                    "StageConfig field)."
                )
            self._visit(upstream, [*path, name], seen)
        seen.add(name)

    # -- configs and keys -----------------------------------------------------------------------

    def resolve_config(self, spec: StageSpec, param: object = MISSING) -> StageConfig | None:
        """The config an instance runs with: param (or default), then ``--physpipe-set``."""
        if param is MISSING:
            config = spec.default_config
        else:
            config = spec.coerce_config(param, origin="the parametrization")
        fields = self.overrides.get(spec.name)
        if not fields or config is None:
            return config
        data = config.model_dump()
        for field_name, raw in fields.items():
            data[field_name] = self._parse_override(spec, config, field_name, raw)
        return validate_config(spec, data, origin="--physpipe-set")

    def _parse_override(
        self, spec: StageSpec, config: StageConfig, field_name: str, raw: str
    ) -> Any:
        # The raw text first (pydantic's lax mode reads "32" as an int and "1e-3" as a float);
        # then the text as JSON, for lists, dicts, booleans and null.
        data = config.model_dump()
        for candidate in (raw, _json_or_missing(raw)):
            if candidate is MISSING:
                continue
            try:
                validated = type(config).model_validate({**data, field_name: candidate})
            except ValidationError:
                continue
            return getattr(validated, field_name)
        data[field_name] = raw
        validate_config(spec, data, origin=f"--physpipe-set {spec.name}.{field_name}={raw}")
        return raw  # pragma: no cover - validate_config raised

    def instance(
        self, spec: StageSpec, config: StageConfig | None, upstream: Mapping[str, str]
    ) -> StageInstance:
        """The instance for this declaration (memoized), with its provenance key."""
        try:
            config_data = keys.config_json(config)
            identity = keys.config_identity(config)
        except keys.UnencodableField as exc:
            raise ConfigError(
                f"stage {spec.name!r} ({spec.location}): config field {exc.field!r} cannot be "
                f"encoded into its provenance key ({exc.reason}). Keys are computed from "
                "config values, so every field must be JSON-like data (numbers, strings, "
                "UTF-8 text, lists, tuples, dicts, paths, enums, pydantic models); store "
                "anything else in a stage and pass it downstream instead."
            ) from None
        declaration = keys.canonical([spec.name, id(spec), identity, dict(upstream)])
        instance = self._by_declaration.get(declaration)
        if instance is not None:
            return instance
        try:
            inputs = keys.input_file_hashes(config, base=self.rootdir)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"stage {spec.name!r}: {exc}. Fix the path in its config (relative paths are "
                f"read from the rootdir {self.rootdir})."
            ) from None
        # The qualified name without the module, like the stage's: moving a stage and its
        # config class to another file keeps the key (docs/decisions.md).
        config_class = None if spec.config_class is None else spec.config_class.__qualname__
        key = keys.stage_key(
            name=spec.name,
            qualname=spec.qualname,
            code=spec.code,
            version=spec.version,
            config_class=config_class,
            config=identity,
            inputs=inputs,
            upstream=upstream,
            packages=self.packages,
            salt=self.salt,
        )
        manifest = {
            "stage": spec.name,
            "qualname": spec.qualname,
            "code": spec.code,
            "code_parts": dict(spec.code_info.parts),
            "version": spec.version,
            "config_class": config_class,
            "config": config_data,
            "config_key": keys.xxh3(keys.canonical(identity)),
            "inputs": inputs,
            "upstream": dict(upstream),
            "packages": dict(self.packages),
            "salt": keys.xxh3(self.salt.encode()),
        }
        instance = StageInstance(
            spec=spec,
            config=config,
            upstream=dict(upstream),
            key=key,
            param_id=self._label_id(spec, config, upstream),
            config_json=config_data,
            manifest=manifest,
        )
        self._by_declaration[declaration] = instance
        self._instances.setdefault(key, instance)
        return instance

    def _label_id(
        self, spec: StageSpec, config: StageConfig | None, upstream: Mapping[str, str]
    ) -> str | None:
        # Like pytest's test ids: a downstream instance reads as the params it was fanned by.
        parts: list[str] = []
        for key in upstream.values():
            above = self._instances.get(key)
            if above is not None and above.param_id:
                parts.extend(p for p in above.param_id.split("-") if p not in parts)
        own = _param_id(spec, config)
        if own:
            parts.extend(p for p in own.split("-") if p not in parts)
        return "-".join(parts) or None

    def get(self, key: str) -> StageInstance | None:
        return self._instances.get(key)

    # -- items ----------------------------------------------------------------------------------

    def for_item(self, item: pytest.Item) -> dict[str, StageInstance]:
        """The stage instances a test needs, by stage name (memoized by node id)."""
        cached = self._item_instances.get(item.nodeid)
        if cached is not None:
            return cached
        names = [n for n in getattr(item, "fixturenames", ()) if n in self.registry]
        callspec = getattr(item, "callspec", None)
        params: Mapping[str, Any] = callspec.params if callspec is not None else {}
        resolved = self.resolve(names, params)
        self._item_instances[item.nodeid] = resolved
        return resolved

    def resolve(self, names: Iterable[str], params: Mapping[str, Any]) -> dict[str, StageInstance]:
        """The instances of ``names`` and of everything upstream of them, by stage name.

        ``params[name]`` is what pytest hands stage ``name`` as ``request.param`` (a ``params=``
        entry, or an indirect parametrization's value); a stage without one gets its default
        config. Tests (:meth:`for_item`) and :class:`pytest_physpipe.Workflow` resolve here.
        """
        resolved: dict[str, StageInstance] = {}

        def visit(name: str) -> StageInstance:
            if name in resolved:
                return resolved[name]
            spec = self.registry.get(name)
            assert spec is not None  # names come from the registry; validate() checked upstream
            config = self.resolve_config(spec, params.get(name, MISSING))
            upstream = {p: visit(p).key for p in spec.upstream}
            resolved[name] = instance = self.instance(spec, config, upstream)
            return instance

        for name in names:
            visit(name)
        return resolved

    def item_instances(self) -> dict[str, dict[str, StageInstance]]:
        return self._item_instances

    def instances(self, items: Iterable[pytest.Item] | None = None) -> list[StageInstance]:
        """The instances ``items`` need (default: every planned test), upstream first."""
        ordered: list[StageInstance] = []
        seen: set[str] = set()
        per_items = (
            list(self._item_instances.values())
            if items is None
            else [self.for_item(item) for item in items]
        )

        def visit(instance: StageInstance) -> None:
            if instance.key in seen:
                return
            seen.add(instance.key)
            for key in instance.upstream.values():
                upstream = self._instances.get(key)
                if upstream is not None:
                    visit(upstream)
            ordered.append(instance)

        for per_item in per_items:
            for instance in per_item.values():
                visit(instance)
        return ordered


def _json_or_missing(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return MISSING


_PARAM_IDS: dict[int, tuple[StageSpec, dict[bytes, str]]] = {}


def _param_id(spec: StageSpec, config: StageConfig | None) -> str | None:
    if config is None:
        return None
    if spec.params is not None and spec.ids is not None:
        # One dict per spec: comparing against every param would be quadratic in sweep size.
        cached = _PARAM_IDS.get(id(spec))
        if cached is None or cached[0] is not spec:
            table = {
                keys.canonical(keys.config_json(p)): i
                for p, i in zip(spec.params, spec.ids, strict=True)
            }
            cached = _PARAM_IDS[id(spec)] = (spec, table)
        ident = cached[1].get(keys.canonical(keys.config_json(config)))
        if ident is not None:
            return ident
    if config == spec.default_config:
        return None
    return default_ids([config], spec.default_config)[0]

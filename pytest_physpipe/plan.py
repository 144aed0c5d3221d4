"""The plan: which stage instances each collected test needs, with their static keys.

Built right after collection from declarations only (configs, overrides, code fingerprints,
upstream keys); nothing runs. A ``gather(...)`` parameter is planned from the declarations too:
every instance the gathered stage's sweeps produce (:meth:`Planner.enumerate`), split into one
gather per point of the fields ``over=`` leaves (:meth:`Planner.groups`); the gathering
instance's key covers their keys. The same :class:`Planner` resolves an instance again when its
fixture executes, so the key a test was planned with is the key it is served.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import xxhash
from pydantic import ValidationError

from pytest_physpipe import keys
from pytest_physpipe.errors import ConfigError, GraphError
from pytest_physpipe.fanin import Coord, Gather, Gathered, coord_names, group_by, name_coords
from pytest_physpipe.models import StageConfig
from pytest_physpipe.stage import StageRegistry, StageSpec, default_ids, validate_config

__all__ = ["MISSING", "GatherGroup", "GatherRef", "Planner", "StageInstance"]

#: "No param given" (``None`` is a legitimate param value).
MISSING: Any = object()

#: "Not known yet" for a params= index (``None`` means: none of the params).
_UNKNOWN: Any = object()


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
    #: The marks its ``pytest.param(..., marks=...)`` entry gave this instance itself.
    marks: tuple[pytest.Mark, ...] = ()
    #: Per ``gather(...)`` parameter, the instances it receives (its ``upstream`` entry holds
    #: their digest, so the key covers them).
    gathered: dict[str, tuple[GatherRef, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def slow(self) -> bool:
        """Runs as a slow instance: a cluster backend dispatches it. A gathering stage always
        runs in the pytest process (after the jobs of what it gathers)."""
        if self.gathered:
            return False
        return self.spec.slow or any(m.name == "slow" for m in self.marks)

    @property
    def label(self) -> str:
        return f"{self.name}[{self.param_id}]" if self.param_id else self.name


@dataclass(frozen=True)
class GatherRef:
    """One instance a gather parameter receives: its key and its coordinates."""

    key: str
    coords: dict[str, Any]


@dataclass(frozen=True, eq=False)
class GatherGroup:
    """One gather of a ``gather(..., over=...)`` parameter: the fixture param of the
    gathering stage's instance (``ident`` is its pytest id)."""

    param: str
    ident: str
    coords: dict[Coord, Any]
    refs: tuple[GatherRef, ...]

    def __repr__(self) -> str:
        return self.ident


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
        self._by_declaration: dict[tuple[Any, ...], StageInstance] = {}
        self._templates: dict[int, tuple[StageSpec, keys.KeyTemplate]] = {}
        self._item_instances: dict[str, dict[str, StageInstance]] = {}
        self._by_request: dict[tuple[str, int, tuple[str, ...]], tuple[object, StageInstance]] = {}
        self._enumerated: dict[str, list[tuple[StageInstance, dict[Coord, Any]]]] = {}
        self._groups: dict[tuple[str, str], list[GatherGroup]] = {}
        self._enumerating: list[str] = []

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
                swept = _swept_fields(spec)
                if field_name in swept:
                    raise ConfigError(
                        f"--physpipe-set {stage_name}.{field_name}: stage {stage_name!r} sweeps "
                        f"{field_name!r} over its params= ({', '.join(swept[field_name])}); "
                        "setting it would collapse the sweep into one instance under the old "
                        f"ids. Select instances with -k (for example -k "
                        f'"{field_name}:{swept[field_name][0]}") or change the sweep instead.'
                    )
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
        for param, declared in spec.gathers:
            self._check_gather(spec, param, declared)
            self._visit(declared.stage, [*path, name], seen)
        seen.add(name)

    def _check_gather(self, spec: StageSpec, param: str, declared: Gather) -> None:
        if declared.stage not in self.registry:
            known = ", ".join(sorted(s.name for s in self.registry.all())) or "none"
            raise GraphError(
                f"stage {spec.name!r} ({spec.location}): parameter {param!r} is "
                f"{declared!r}, but there is no stage named {declared.stage!r} (stages: "
                f"{known}). Name a declared stage."
            )

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

    def resolve_one(
        self, spec: StageSpec, param: object, upstream: Mapping[str, str]
    ) -> StageInstance:
        """The instance of ``spec`` for a fixture param (a config, a :class:`GatherGroup` or
        :data:`MISSING`) and the keys of its upstream instances."""
        group = param if isinstance(param, GatherGroup) else None
        config_param = MISSING if group is not None else param
        marks: tuple[pytest.Mark, ...] = ()
        index: int | None = None
        if config_param is not MISSING and spec.params is not None:
            index = _param_index(spec, spec.coerce_config(config_param, origin="params"))
            if index is not None and spec.marks is not None:
                marks = spec.marks[index]
        config = self.resolve_config(spec, config_param)
        gathered: dict[str, tuple[GatherRef, ...]] = {}
        for name, declared in spec.gathers:
            if declared.over is not None:
                groups = self.groups(spec, name)
                chosen = group if group is not None and group.param == name else groups[0]
                gathered[name] = chosen.refs
            else:
                gathered[name] = self.groups(spec, name)[0].refs
        return self.instance(
            spec,
            config,
            upstream,
            marks=marks,
            gathered=gathered,
            ident=group.ident if group is not None else None,
            # Which params= entry the config is, unless an override made another config.
            param_index=index if config is config_param else _UNKNOWN,
        )

    def instance(
        self,
        spec: StageSpec,
        config: StageConfig | None,
        upstream: Mapping[str, str],
        *,
        marks: tuple[pytest.Mark, ...] = (),
        gathered: Mapping[str, tuple[GatherRef, ...]] | None = None,
        ident: str | None = None,
        param_index: Any = _UNKNOWN,
    ) -> StageInstance:
        """The instance for this declaration (memoized), with its provenance key.

        ``param_index``: which ``params=`` entry ``config`` is, where the caller knows
        (``None``: none of them); left out, it is looked up."""
        upstream = dict(upstream)
        for name, refs in (gathered or {}).items():
            # One digest per gather: the keys (and coordinates) of everything it gathers.
            upstream[name] = xxhash.xxh3_128_hexdigest(
                keys.canonical([[r.key, repr(sorted(r.coords.items()))] for r in refs])
            )
        try:
            config_data, identity = keys.config_encodings(config)
        except keys.UnencodableField as exc:
            raise ConfigError(
                f"stage {spec.name!r} ({spec.location}): config field {exc.field!r} cannot be "
                f"encoded into its provenance key ({exc.reason}). Keys are computed from "
                "config values, so every field must be JSON-like data (numbers, strings, "
                "UTF-8 text, lists, tuples, dicts, paths, enums, pydantic models); store "
                "anything else in a stage and pass it downstream instead."
            ) from None
        encoded = keys.canonical(identity)
        declaration = (spec.name, id(spec), encoded, tuple(sorted(upstream.items())))
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
        key = self._template(spec).key(encoded, inputs, upstream)
        manifest = {
            "stage": spec.name,
            "qualname": spec.qualname,
            "code": spec.code,
            "code_parts": dict(spec.code_info.parts),
            "version": spec.version,
            "config_class": config_class,
            "config": config_data,
            "config_key": keys.xxh3(encoded),
            "inputs": inputs,
            "upstream": dict(upstream),
            "packages": dict(self.packages),
            "salt": keys.xxh3(self.salt.encode()),
        }
        instance = StageInstance(
            spec=spec,
            config=config,
            upstream=upstream,
            key=key,
            param_id=self._label_id(spec, config, upstream, ident, param_index),
            config_json=config_data,
            manifest=manifest,
            marks=marks,
            gathered=dict(gathered or {}),
        )
        self._by_declaration[declaration] = instance
        self._instances.setdefault(key, instance)
        return instance

    def _template(self, spec: StageSpec) -> keys.KeyTemplate:
        """The key's parts fixed for ``spec`` in this run, encoded once."""
        known = self._templates.get(id(spec))
        if known is not None and known[0] is spec:
            return known[1]
        config_class = None if spec.config_class is None else spec.config_class.__qualname__
        template = keys.KeyTemplate(
            name=spec.name,
            qualname=spec.qualname,
            code=spec.code,
            version=spec.version,
            config_class=config_class,
            packages=self.packages,
            salt=self.salt,
        )
        self._templates[id(spec)] = (spec, template)
        return template

    def _label_id(
        self,
        spec: StageSpec,
        config: StageConfig | None,
        upstream: Mapping[str, str],
        ident: str | None = None,
        param_index: Any = _UNKNOWN,
    ) -> str | None:
        # Like pytest's test ids: a downstream instance reads as the params it was fanned by.
        parts: list[str] = []
        for key in upstream.values():
            above = self._instances.get(key)
            if above is not None and above.param_id:
                parts.extend(p for p in above.param_id.split("-") if p not in parts)
        own = ident or _param_id(spec, config, param_index)
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
            upstream = {p: visit(p).key for p in spec.upstream}
            resolved[name] = instance = self.for_request(spec, params.get(name, MISSING), upstream)
            return instance

        for name in names:
            visit(name)
        return resolved

    # -- fan-in ---------------------------------------------------------------------------------

    def enumerate(self, name: str) -> list[tuple[StageInstance, dict[Coord, Any]]]:
        """Every instance of stage ``name`` the declarations produce, in declaration order,
        each with its sweep coordinates ((stage, field) -> value)."""
        done = self._enumerated.get(name)
        if done is not None:
            return done
        if name in self._enumerating:
            cycle = " -> ".join([*self._enumerating[self._enumerating.index(name) :], name])
            raise GraphError(
                f"stages form a cycle through gather(): {cycle}. A stage cannot gather "
                "itself or a stage that depends on it."
            )
        self._enumerating.append(name)
        try:
            closure = self._closure(name)
            axes: list[tuple[str, list[Any]]] = []
            for spec in closure:
                if spec.params is not None:
                    axes.append((spec.name, list(spec.params)))
                for param, declared in spec.gathers:
                    if declared.over is not None:
                        axes.append((spec.name, list(self.groups(spec, param))))
            seen: set[str] = set()
            result: list[tuple[StageInstance, dict[Coord, Any]]] = []
            for combo in itertools.product(*(options for _, options in axes)):
                params = {stage: value for (stage, _), value in zip(axes, combo, strict=True)}
                resolved = self.resolve([name], params)
                instance = resolved[name]
                if instance.key in seen:
                    continue
                seen.add(instance.key)
                coords: dict[Coord, Any] = {}
                for spec in closure:
                    value = params.get(spec.name, MISSING)
                    if isinstance(value, GatherGroup):
                        coords.update(value.coords)
                    elif value is not MISSING and resolved[spec.name].config is not None:
                        config = resolved[spec.name].config
                        assert config is not None
                        coords.update(((spec.name, f), v) for f, v in config.model_dump().items())
                result.append((instance, coords))
        finally:
            self._enumerating.remove(name)
        self._enumerated[name] = result
        return result

    def _closure(self, name: str) -> list[StageSpec]:
        """``name`` and the stages upstream of it (not through gathers), ``name`` first."""
        order: list[StageSpec] = []

        def visit(current: str) -> None:
            spec = self.registry.get(current)
            if spec is None:
                raise GraphError(f"gather(): there is no stage named {current!r}")
            if spec in order:
                return
            order.append(spec)
            for upstream in spec.upstream:
                visit(upstream)

        visit(name)
        return order

    def groups(self, spec: StageSpec, param: str) -> list[GatherGroup]:
        """The gathers of ``spec``'s parameter ``param``: one, or one per point of the fields
        ``over=`` does not gather along."""
        cached = self._groups.get((spec.name, param))
        if cached is not None:
            return cached
        declared = dict(spec.gathers)[param]
        self._check_gather(spec, param, declared)
        items = self.enumerate(declared.stage)
        raws = [raw for _, raw in items]
        names = coord_names(raws)
        named = name_coords(raws)
        if declared.over is not None:
            unknown = [f for f in declared.over if f not in names.values()]
            if unknown:
                fields = ", ".join(names.values()) or "none"
                raise ConfigError(
                    f"stage {spec.name!r} ({spec.location}): {declared!r} gathers along "
                    f"{', '.join(map(repr, unknown))}, which is not a field that varies across "
                    f"the instances of {declared.stage!r} (fields that vary: {fields})."
                )
        groups = []
        for fixed, indices in group_by(named, declared.over):
            members = [items[i] for i in indices]
            coords = name_coords([raw for _, raw in members])
            refs = tuple(
                GatherRef(instance.key, c) for (instance, _), c in zip(members, coords, strict=True)
            )
            raw_fixed = {c: v for c, v in members[0][1].items() if names.get(c) in fixed}
            ident = "-".join(f"{k}={_format(v)}" for k, v in fixed.items()) or "all"
            groups.append(GatherGroup(param=param, ident=ident, coords=raw_fixed, refs=refs))
        self._groups[(spec.name, param)] = groups
        return groups

    def gathered_values(
        self, instance: StageInstance, value_of: Callable[[StageInstance], Any]
    ) -> dict[str, tuple[Gathered, ...]]:
        """What each ``gather(...)`` parameter of ``instance`` receives: one item per gathered
        instance, in declaration order, its value from ``value_of`` (which serves it)."""
        values: dict[str, tuple[Gathered, ...]] = {}
        for name, refs in instance.gathered.items():
            items = []
            for ref in refs:
                gathered = self._instances.get(ref.key)
                if gathered is not None:
                    items.append(Gathered(coords=ref.coords, value=value_of(gathered), key=ref.key))
            values[name] = tuple(items)
        return values

    def reachable(self, instance: StageInstance) -> list[StageInstance]:
        """``instance`` and every instance it needs (upstream and gathered), upstream first."""
        return self.upstream_first([instance])

    def for_request(
        self, spec: StageSpec, param: object, upstream: Mapping[str, str]
    ) -> StageInstance:
        """The instance for a stage given ``param`` (``request.param``) and its upstream keys.

        Memoized by (stage, the param object, upstream keys): the plan resolves each instance
        here once, and a fixture request at run time gets the planned instance back without
        resolving its config or key again, so the key a test is served is the key it was
        planned with. A request the plan did not see resolves here the same way.
        """
        token = (spec.name, id(param), tuple(upstream.values()))
        known = self._by_request.get(token)
        if known is not None and known[0] is param and known[1].spec is spec:
            return known[1]
        instance = self.resolve_one(spec, param, upstream)
        # The param is kept with its instance, so its id is not reused while it is memoized.
        self._by_request[token] = (param, instance)
        return instance

    def instances(self, items: Iterable[pytest.Item]) -> list[StageInstance]:
        """The instances ``items`` need, upstream first."""
        return self.upstream_first(
            instance for item in items for instance in self.for_item(item).values()
        )

    def upstream_first(self, instances: Iterable[StageInstance]) -> list[StageInstance]:
        """``instances`` and every instance they need (upstream and gathered), each once,
        upstream first. The one upstream-first walk of the package."""
        ordered: dict[str, StageInstance] = {}

        def visit(instance: StageInstance) -> None:
            if instance.key in ordered:
                return
            needed = [*instance.upstream.values()]
            needed += [ref.key for refs in instance.gathered.values() for ref in refs]
            for key in needed:
                above = self._instances.get(key)
                if above is not None:
                    visit(above)
            ordered[instance.key] = instance

        for instance in instances:
            visit(instance)
        return list(ordered.values())


def _json_or_missing(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return MISSING


_PARAM_TABLES: dict[int, tuple[StageSpec, _ParamTable]] = {}


def _param_index(spec: StageSpec, config: StageConfig | None) -> int | None:
    """Which entry of ``params=`` ``config`` is (``None``: none of them)."""
    if spec.params is None or config is None:
        return None
    # One table per spec: comparing against every param would be quadratic in sweep size.
    cached = _PARAM_TABLES.get(id(spec))
    if cached is None or cached[0] is not spec:
        cached = _PARAM_TABLES[id(spec)] = (spec, _ParamTable(spec.params))
    return cached[1].index(config)


class _ParamTable:
    """The first ``params=`` entry equal to a config (configs are equal when their
    provenance is: :meth:`StageConfig.__eq__`).

    Found by identity first (pytest hands a fixture the entry itself, and ``params`` keeps
    every entry alive, so no other live object has one's id), then by hash; configs with an
    unhashable field (a list) are compared by their encoding.
    """

    def __init__(self, params: tuple[StageConfig, ...]) -> None:
        self._params = params
        self._by_value: dict[StageConfig, int] | None = {}
        self._by_encoding: dict[bytes, int] | None = None
        self._by_id: dict[int, int] = {}
        try:
            for position, param in enumerate(params):
                self._by_id[id(param)] = self._by_value.setdefault(param, position)
        except TypeError:
            self._by_value = None
            encodings = self._encodings()
            self._by_id = {id(param): encodings[_encoded(param)] for param in params}

    def _encodings(self) -> dict[bytes, int]:
        if self._by_encoding is None:
            self._by_encoding = {}
            for position, param in enumerate(self._params):
                self._by_encoding.setdefault(_encoded(param), position)
        return self._by_encoding

    def index(self, config: StageConfig) -> int | None:
        found = self._by_id.get(id(config))
        if found is not None:
            return found
        if self._by_value is not None:
            try:
                return self._by_value.get(config)
            except TypeError:
                pass
        return self._encodings().get(_encoded(config))


def _encoded(config: StageConfig) -> bytes:
    return keys.canonical(keys.config_identity(config))


def _param_id(
    spec: StageSpec, config: StageConfig | None, param_index: Any = _UNKNOWN
) -> str | None:
    if config is None:
        return None
    index = _param_index(spec, config) if param_index is _UNKNOWN else param_index
    if index is not None and spec.ids is not None:
        return spec.ids[index]
    if config == spec.default_config:
        return None
    return default_ids([config], spec.default_config)[0]


def _format(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _swept_fields(spec: StageSpec) -> dict[str, list[str]]:
    """The config fields whose value differs across ``params=``, with their values."""
    if spec.params is None or len(spec.params) < 2:
        return {}
    dumps = [p.model_dump() for p in spec.params]
    swept: dict[str, list[str]] = {}
    for name in dumps[0]:
        values: list[str] = []
        for dump in dumps:
            text = _format(dump.get(name))
            if text not in values:
                values.append(text)
        if len(values) > 1:
            swept[name] = values
    return swept

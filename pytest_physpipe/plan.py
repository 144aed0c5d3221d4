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
from pathlib import Path
from typing import Any

import pytest
import xxhash
from pydantic import ValidationError

from pytest_physpipe import keys
from pytest_physpipe.errors import ConfigError, GraphError
from pytest_physpipe.fanin import Coord, Gather, Gathered, coord_names, group_by, name_coords
from pytest_physpipe.instance import NOTHING, GatherGroup, GatherRef, StageFixed, StageInstance
from pytest_physpipe.models import StageConfig
from pytest_physpipe.params import UNKNOWN_INDEX as _UNKNOWN
from pytest_physpipe.params import format_value, index_of, own_id, param_position, swept_fields
from pytest_physpipe.stage import StageRegistry, StageSpec, validate_config

__all__ = ["MISSING", "GatherGroup", "GatherRef", "Planner", "StageInstance"]

#: "No param given" (``None`` is a legitimate param value).
MISSING: Any = object()


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
        #: Per spec (by id; its instances keep it alive): the instance of each declaration,
        #: by its config's encoding (and its upstream keys, where it has any). Keys of bytes
        #: and ints where they can be: a tuple per instance is more work for the collector.
        self._by_declaration: dict[int, dict[Any, StageInstance]] = {}
        self._templates: dict[int, StageFixed] = {}
        self._input_classes: dict[type[StageConfig], bool] = {}
        #: By the id of the item (kept in ``_items``, so no other object takes its id): the
        #: node id is a property, and the plan asks once per test at collection and again
        #: when it runs.
        self._item_instances: dict[int, dict[str, StageInstance]] = {}
        self._items: list[object] = []
        #: The specs :meth:`stage_names` found for the tests' fixture names.
        self._specs: dict[str, StageSpec] = {}
        #: Per stage name: the instance of each (param object, upstream keys); by the param's
        #: id alone for a stage with nothing upstream.
        self._by_request: dict[str, dict[Any, StageInstance]] = {}
        self._requested: list[object] = []
        self._enumerated: dict[str, list[tuple[StageInstance, dict[Coord, Any]]]] = {}
        self._groups: dict[tuple[str, str], list[GatherGroup]] = {}
        self._enumerating: list[str] = []
        self._stage_names: dict[tuple[str, ...], list[str]] = {}
        self._reached_marks: dict[str, tuple[StageInstance, bool, tuple[pytest.Mark, ...]]] = {}

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
                swept = swept_fields(spec)
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
        if spec.params is not None and not spec.gathers and spec.name not in self.overrides:
            # An entry of params= itself (what pytest hands the fixture): its index is an
            # identity lookup, and the entry is the config the instance runs with.
            index = param_position(spec, param)
            if index is not None:
                assert spec.marks is not None  # set with params
                config: Any = param
                if not upstream and spec.ids is not None:
                    return self._entry(spec, config, index, spec.ids)
                return self.instance(
                    spec, config, upstream, marks=spec.marks[index], param_index=index
                )
        group = param if isinstance(param, GatherGroup) else None
        config_param = MISSING if group is not None else param
        marks: tuple[pytest.Mark, ...] = ()
        index = None
        if config_param is not MISSING and spec.params is not None:
            index = index_of(spec, spec.coerce_config(config_param, origin="params"))
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
        upstream = dict(upstream) if upstream else NOTHING
        if gathered:
            upstream = dict(upstream)
            for name, refs in gathered.items():
                # One digest per gather: the keys (and coordinates) of everything it gathers.
                upstream[name] = xxhash.xxh3_128_hexdigest(
                    keys.canonical([[r.key, repr(sorted(r.coords.items()))] for r in refs])
                )
        config_data, encoded = self._encodings(spec, config)
        declaration: Any = (encoded, tuple(sorted(upstream.items()))) if upstream else encoded
        declared = self._declared(spec)
        instance = declared.get(declaration)
        if instance is not None and instance.spec is spec:
            return instance
        inputs: dict[str, str] | None = None
        if config is not None and self._has_inputs(type(config)):
            inputs = self._input_hashes(spec, config)
        fixed = self._fixed(spec)
        if upstream or type(param_index) is not int or spec.ids is None:
            param_id = self._label_id(spec, config, upstream, ident, param_index)
        else:  # an entry of params= with nothing upstream: its own id (what _label_id says)
            param_id = spec.ids[param_index]
            if "-" in param_id:
                param_id = self._label_id(spec, config, upstream, ident, param_index)
        instance = StageInstance(
            spec,
            config,
            upstream,
            fixed.template.key(encoded, inputs, upstream),
            param_id,
            config_json=config_data,
            marks=marks,
            gathered=dict(gathered) if gathered else None,
            # The manifest is built from these when something reads it (a commit, a reason).
            basis=(fixed, encoded, inputs),
        )
        declared[declaration] = instance
        self._instances.setdefault(instance.key, instance)
        return instance

    def _entry(
        self, spec: StageSpec, config: StageConfig, index: int, ids: tuple[str, ...]
    ) -> StageInstance:
        """:meth:`instance` for entry ``index`` of ``spec``'s ``params=`` (``ids``) with
        nothing upstream, a sweep's usual instance: the same instance and key, by the same
        steps, without the general case's handling of upstream keys, gathers and labels (an
        entry with input files takes the general path)."""
        assert spec.marks is not None  # set with params
        if self._has_inputs(type(config)):
            return self.instance(spec, config, NOTHING, marks=spec.marks[index], param_index=index)
        config_data, encoded = self._encodings(spec, config)
        declared = self._declared(spec)
        instance = declared.get(encoded)
        if instance is not None and instance.spec is spec:
            return instance
        fixed = self._fixed(spec)
        param_id: str | None = ids[index]
        if "-" in ids[index]:  # its coordinates, each once (what _label_id says)
            param_id = self._label_id(spec, config, NOTHING, None, index)
        instance = StageInstance.of_entry(
            fixed,
            config,
            fixed.template.plain_key(encoded),
            param_id,
            config_data,
            encoded=encoded,
            marks=spec.marks[index],
        )
        declared[encoded] = instance
        self._instances.setdefault(instance.key, instance)
        return instance

    def _encodings(
        self, spec: StageSpec, config: StageConfig | None
    ) -> tuple[dict[str, Any], bytes]:
        """``config``'s JSON data and its canonical encoding (what the key and the memo use)."""
        try:
            config_data, identity = keys.config_encodings(config)
        except keys.UnencodableField as exc:
            raise _unencodable(spec, exc) from None
        return config_data, keys.canonical(identity)

    def _declared(self, spec: StageSpec) -> dict[Any, StageInstance]:
        """The instances planned for ``spec`` by declaration (its encoded config, and its
        upstream keys where it has any)."""
        declared = self._by_declaration.get(id(spec))
        if declared is None:
            declared = self._by_declaration[id(spec)] = {}
        return declared

    def _input_hashes(self, spec: StageSpec, config: StageConfig) -> dict[str, str]:
        try:
            return keys.input_file_hashes(config, base=self.rootdir)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"stage {spec.name!r}: {exc}. Fix the path in its config (relative paths "
                f"are read from the rootdir {self.rootdir})."
            ) from None

    def _has_inputs(self, config_class: type[StageConfig]) -> bool:
        """Whether configs of this class have ``InputFile`` fields (memoized per class)."""
        found = self._input_classes.get(config_class)
        if found is None:
            found = self._input_classes[config_class] = keys.has_input_files(config_class)
        return found

    def _fixed(self, spec: StageSpec) -> StageFixed:
        """What ``spec``'s instances share in this run: the key's fixed parts, encoded once,
        and the manifest entries that do not vary between instances."""
        known = self._templates.get(id(spec))
        if known is not None and known.spec is spec:
            return known
        fixed = self._templates[id(spec)] = StageFixed(spec, self.packages, self.salt)
        return fixed

    def _label_id(
        self,
        spec: StageSpec,
        config: StageConfig | None,
        upstream: Mapping[str, str],
        ident: str | None = None,
        param_index: Any = _UNKNOWN,
    ) -> str | None:
        # Like pytest's test ids: a downstream instance reads as the params it was fanned by.
        if not upstream:
            own = ident or own_id(spec, config, param_index)
            if not own or "-" not in own:
                return own or None
        parts: list[str] = []
        for key in upstream.values():
            above = self._instances.get(key)
            if above is not None and above.param_id:
                parts.extend(p for p in above.param_id.split("-") if p not in parts)
        own = ident or own_id(spec, config, param_index)
        if own:
            parts.extend(p for p in own.split("-") if p not in parts)
        return "-".join(parts) or None

    def get(self, key: str) -> StageInstance | None:
        return self._instances.get(key)

    # -- items ----------------------------------------------------------------------------------

    def for_item(self, item: pytest.Item) -> dict[str, StageInstance]:
        """The stage instances a test needs, by stage name (memoized per item)."""
        resolved = self._item_instances.get(id(item))
        if resolved is None:
            callspec = getattr(item, "callspec", None)
            params: Mapping[str, Any] = callspec.params if callspec is not None else {}
            resolved = {}
            for name in self.stage_names(item):  # what resolve() does, one call less per test
                self._resolve_into(name, params, resolved)
            self._item_instances[id(item)] = resolved
            self._items.append(item)
        return resolved

    def stage_names(self, item: pytest.Item) -> list[str]:
        """The stages among a test's fixtures, in its fixture order.

        Memoized by the names themselves: the tests of one function share their fixture
        names, so the registry is asked once per test function, not once per test (and the
        specs it answered are the ones the plan resolves these names to).
        """
        fixturenames = tuple(getattr(item, "fixturenames", ()))
        names = self._stage_names.get(fixturenames)
        if names is None:
            names = []
            for name in fixturenames:
                spec = self.registry.get(name)
                if spec is not None:
                    names.append(name)
                    self._specs[name] = spec
            self._stage_names[fixturenames] = names
        return names

    def reached_marks(self, instance: StageInstance) -> tuple[bool, tuple[pytest.Mark, ...]]:
        """Whether a stage declared ``slow=True`` is among ``instance`` and every instance it
        needs (upstream and gathered), and the marks those instances carry, upstream first,
        each once. Memoized per instance: tests sharing an instance share the answer."""
        if not instance.upstream and not instance.gathered and not instance.marks:
            return instance.spec.slow, ()  # needs nothing else: nothing to remember
        known = self._reached_marks.get(instance.key)
        if known is not None and known[0] is instance:
            return known[1], known[2]
        slow = False
        marks: list[pytest.Mark] = []
        for reached in self.upstream_first([instance]):
            slow = slow or reached.spec.slow
            marks.extend(m for m in reached.marks if m not in marks)
        self._reached_marks[instance.key] = (instance, slow, tuple(marks))
        return slow, tuple(marks)

    def resolve(self, names: Iterable[str], params: Mapping[str, Any]) -> dict[str, StageInstance]:
        """The instances of ``names`` and of everything upstream of them, by stage name.

        ``params[name]`` is what pytest hands stage ``name`` as ``request.param`` (a ``params=``
        entry, or an indirect parametrization's value); a stage without one gets its default
        config. Tests (:meth:`for_item`) and :class:`pytest_physpipe.Workflow` resolve here.
        """
        resolved: dict[str, StageInstance] = {}
        for name in names:
            self._resolve_into(name, params, resolved)
        return resolved

    def _resolve_into(
        self, name: str, params: Mapping[str, Any], resolved: dict[str, StageInstance]
    ) -> StageInstance:
        # A method, not a nested closure: a recursive closure is a function <-> cell cycle
        # that only the cyclic garbage collector frees, one per test.
        instance = resolved.get(name)
        if instance is not None:
            return instance
        spec = self._specs.get(name) or self.registry.get(name)
        assert spec is not None  # names come from the registry; validate() checked upstream
        upstream: dict[str, str] = NOTHING
        if spec.upstream:
            upstream = {}
            for above in spec.upstream:
                upstream[above] = self._resolve_into(above, params, resolved).key
        resolved[name] = instance = self.for_request(spec, params.get(name, MISSING), upstream)
        return instance

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
        pending = [name]
        while pending:  # depth first, each stage before its upstream ones, as declared
            current = pending.pop()
            spec = self.registry.get(current)
            if spec is None:
                raise GraphError(f"gather(): there is no stage named {current!r}")
            if spec in order:
                continue
            order.append(spec)
            pending.extend(reversed(spec.upstream))
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
            ident = "-".join(f"{k}={format_value(v)}" for k, v in fixed.items()) or "all"
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
        token: Any = (id(param), tuple(upstream.values())) if upstream else id(param)
        requested = self._by_request.get(spec.name)
        if requested is None:
            requested = self._by_request[spec.name] = {}
        known = requested.get(token)
        if known is not None and known.spec is spec:
            return known
        instance = None
        if not upstream and spec.ids is not None and not spec.gathers:
            # An entry of params= with nothing upstream (a sweep's usual request): what
            # resolve_one does first, without its call.
            index = param_position(spec, param)
            if index is not None and spec.name not in self.overrides:
                instance = self._entry(spec, param, index, spec.ids)  # type: ignore[arg-type]
        if instance is None:
            instance = self.resolve_one(spec, param, upstream)
        # The planner keeps every param it memoized, so no other object takes its id.
        self._requested.append(param)
        requested[token] = instance
        return instance

    def instances(self, items: Iterable[pytest.Item]) -> list[StageInstance]:
        """The instances ``items`` need, upstream first."""
        memo, for_item = self._item_instances, self.for_item
        return self.upstream_first(
            instance
            for item in items
            for instance in (memo.get(id(item)) or for_item(item)).values()
        )

    def upstream_first(self, instances: Iterable[StageInstance]) -> list[StageInstance]:
        """``instances`` and every instance they need (upstream and gathered), each once,
        upstream first. The one upstream-first walk of the package."""
        ordered: dict[str, StageInstance] = {}
        for instance in instances:
            if instance.upstream or instance.gathered:
                self._add_upstream_first(instance, ordered)
            elif instance.key not in ordered:  # needs nothing: the common case of a sweep
                ordered[instance.key] = instance
        return list(ordered.values())

    def _add_upstream_first(
        self, instance: StageInstance, ordered: dict[str, StageInstance]
    ) -> None:
        if instance.key in ordered:
            return
        known = self._instances
        for key in instance.upstream.values():
            above = known.get(key)
            if above is not None:
                self._add_upstream_first(above, ordered)
        for refs in instance.gathered.values():
            for ref in refs:
                above = known.get(ref.key)
                if above is not None:
                    self._add_upstream_first(above, ordered)
        ordered[instance.key] = instance


def _unencodable(spec: StageSpec, exc: keys.UnencodableField) -> ConfigError:
    return ConfigError(
        f"stage {spec.name!r} ({spec.location}): config field {exc.field!r} cannot be "
        f"encoded into its provenance key ({exc.reason}). Keys are computed from "
        "config values, so every field must be JSON-like data (numbers, strings, "
        "UTF-8 text, lists, tuples, dicts, paths, enums, pydantic models); store "
        "anything else in a stage and pass it downstream instead."
    )


def _json_or_missing(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return MISSING

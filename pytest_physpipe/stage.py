"""``@stage``: a function becomes a declarative :class:`StageSpec` and a session fixture.

No I/O happens here. The fixture built for a stage only hands its request to the run object
the plugin keeps in ``config.stash`` (:data:`RUN`); everything that runs, caches or schedules
lives further down the line (plan → execute → session).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import sys
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pytest
from pydantic import ValidationError

from pytest_physpipe.errors import ConfigError, StageError
from pytest_physpipe.fanin import Gather
from pytest_physpipe.frozen import Frozen
from pytest_physpipe.keys import python_dumps
from pytest_physpipe.models import ClusterOptions, Resources, Retry, StageConfig

if TYPE_CHECKING:
    from pytest_physpipe.codefp import CodeFingerprint
    from pytest_physpipe.run import PhyspipeRun

__all__ = ["RUN", "StageSpec", "registry", "stage", "sweep"]

_RESERVED = ("config", "ctx")
_C = TypeVar("_C", bound=StageConfig)


@dataclass(init=False, repr=False, eq=False)
class StageSpec(Frozen):
    """Everything ``@stage`` declared about one stage; the unit keys and plans are built from.

    Immutable; equal only to itself.
    """

    name: str
    func: Callable[..., Any]
    upstream: tuple[str, ...]
    config_class: type[StageConfig] | None
    default_config: StageConfig | None
    params: tuple[StageConfig, ...] | None
    ids: tuple[str, ...] | None
    #: Per entry of ``params``: the marks its ``pytest.param(..., marks=...)`` gave it.
    marks: tuple[tuple[pytest.Mark, ...], ...] | None
    #: Parameters whose default is ``gather(...)``, in signature order.
    gathers: tuple[tuple[str, Gather], ...]
    version: int | str | None
    resources: Resources
    slow: bool
    cluster: ClusterOptions | None
    cache: bool
    codec: str
    retry: Retry
    track: tuple[Any, ...]
    wants_ctx: bool

    def __init__(  # noqa: PLR0917 (the dataclass's own signature, positions included)
        self,
        name: str,
        func: Callable[..., Any],
        upstream: tuple[str, ...],
        config_class: type[StageConfig] | None,
        default_config: StageConfig | None,
        params: tuple[StageConfig, ...] | None,
        ids: tuple[str, ...] | None,
        marks: tuple[tuple[pytest.Mark, ...], ...] | None,
        gathers: tuple[tuple[str, Gather], ...],
        version: int | str | None,
        resources: Resources,
        slow: bool,
        cluster: ClusterOptions | None,
        cache: bool,
        codec: str,
        retry: Retry,
        track: tuple[Any, ...],
        wants_ctx: bool,
    ) -> None:
        # Written out rather than generated: see pytest_physpipe.frozen.
        self.__dict__.update(
            name=name,
            func=func,
            upstream=upstream,
            config_class=config_class,
            default_config=default_config,
            params=params,
            ids=ids,
            marks=marks,
            gathers=gathers,
            version=version,
            resources=resources,
            slow=slow,
            cluster=cluster,
            cache=cache,
            codec=codec,
            retry=retry,
            track=track,
            wants_ctx=wants_ctx,
        )

    @property
    def qualname(self) -> str:
        """The function's ``__qualname__`` (module-free: moving a stage keeps its key)."""
        return str(self.func.__qualname__)

    @property
    def import_path(self) -> str:
        """``module:qualname``, how a batch worker finds the function again."""
        return f"{self.func.__module__}:{self.func.__qualname__}"

    @property
    def location(self) -> str:
        """``file:line`` of the definition, for error messages."""
        code = getattr(self.func, "__code__", None)
        if code is None:
            return self.import_path
        return f"{code.co_filename}:{code.co_firstlineno}"

    @cached_property
    def code_info(self) -> CodeFingerprint:
        """The code fingerprint with what it covered: the function, the project code it
        reaches, and ``track``."""
        # Imported here, not at declaration: an xdist controller declares every stage (it
        # imports the conftests) and fingerprints none.
        from pytest_physpipe.codefp import code_of

        return code_of(self.func, self.track)

    @cached_property
    def code(self) -> str:
        """The code fingerprint's digest, as keys use it."""
        return self.code_info.digest

    def coerce_config(self, value: object, *, origin: str) -> StageConfig | None:
        """Turn a config given by a user (instance or dict) into a validated instance."""
        if self.config_class is None:
            if value is None:
                return None
            raise ConfigError(
                f"stage {self.name!r} ({self.location}) takes no config, but {origin} gives it "
                f"{value!r}. Add a `config: SomeConfig` parameter to the stage, or drop the "
                "value."
            )
        if isinstance(value, self.config_class):
            return value
        if isinstance(value, Mapping):
            return validate_config(self, dict(value), origin=origin)
        raise ConfigError(
            f"stage {self.name!r}: {origin} gives {value!r} ({type(value).__name__}), but the "
            f"stage's config is {self.config_class.__name__}. Pass a "
            f"{self.config_class.__name__}(...) instance or a dict of its fields."
        )


def validate_config(spec: StageSpec, data: dict[str, Any], *, origin: str) -> StageConfig:
    """Validate ``data`` against the stage's config class, naming the stage on failure."""
    assert spec.config_class is not None  # callers check; internal invariant
    try:
        return spec.config_class.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"stage {spec.name!r} ({spec.location}): invalid {spec.config_class.__name__} from "
            f"{origin}. Fix the value(s) below.\n{exc}"
        ) from None


#: The run object (:class:`pytest_physpipe.run.PhyspipeRun`) that ``pytest_configure``
#: registers: the one stash key through which the fixtures built here, and everything else
#: that needs the run's state, reach it.
RUN: pytest.StashKey[PhyspipeRun] = pytest.StashKey()


class StageRegistry:
    """Every stage declared in this process, by fixture name; the latest definition wins.

    pytest may import a module more than once in one process (pytester, importlib mode), so a
    re-registration from the same file replaces the old spec; two live definitions from
    different files under one name are reported by :meth:`conflicts`. A spec is *live* while
    the module object that declared it is still the imported one (in ``sys.modules``, or a
    conftest registered with pytest: conftests share the module name ``conftest``); a stage
    from an earlier in-process run whose module is gone is no stage of this run.
    """

    def __init__(self) -> None:
        self._specs: dict[str, StageSpec] = {}
        self._shadowed: dict[str, list[StageSpec]] = {}
        self._origins: dict[int, tuple[StageSpec, ModuleType | None]] = {}
        self._is_plugin: Callable[[object], bool] = lambda module: False
        # Modules this view found registered as plugins (kept, so their ids stay theirs):
        # pluggy's check walks every plugin, and the plan asks once per fixture name per test.
        self._plugin_modules: dict[int, ModuleType] = {}

    def add(self, spec: StageSpec) -> None:
        module = sys.modules.get(spec.func.__module__)
        old = self._specs.get(spec.name)
        if (
            old is not None
            and module is not None
            and _file_of(old) == _file_of(spec)
            and self._origins.get(id(old), (None, None))[1] is module
        ):
            raise StageError(
                f"stage {spec.name!r} is declared twice in one module ({old.location} and "
                f"{spec.location}); the second would silently replace the first. Rename one "
                "(or give it @stage(name=...))."
            )
        self._origins[id(spec)] = (spec, module)
        if old is not None and _file_of(old) != _file_of(spec):
            self._shadowed.setdefault(spec.name, []).append(old)
        self._specs[spec.name] = spec

    def bound(self, is_plugin: Callable[[object], bool]) -> StageRegistry:
        """This registry as one pytest run sees it (``is_plugin``: its plugin manager's check).

        A shallow copy: it shares the declarations, so stages imported later still show.
        """
        view = copy.copy(self)
        view._is_plugin = is_plugin
        view._plugin_modules = {}
        return view

    def is_live(self, spec: StageSpec) -> bool:
        origin = self._origins.get(id(spec))
        module = origin[1] if origin is not None else None
        if module is None:
            return True  # declared outside any imported module (exec'd code): cannot tell
        if sys.modules.get(spec.func.__module__) is module or id(module) in self._plugin_modules:
            return True
        if self._is_plugin(module):  # a conftest: registered for the whole run
            self._plugin_modules[id(module)] = module
            return True
        return False

    def get(self, name: str) -> StageSpec | None:
        spec = self._specs.get(name)
        return spec if spec is not None and self.is_live(spec) else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def all(self) -> list[StageSpec]:
        return [spec for spec in self._specs.values() if self.is_live(spec)]

    def conflicts(self) -> list[tuple[StageSpec, StageSpec]]:
        """Pairs of live stages sharing a name (both modules still imported)."""
        pairs = []
        for name, olds in self._shadowed.items():
            current = self._specs[name]
            for old in olds:
                if (
                    self.is_live(old)
                    and self.is_live(current)
                    and _file_of(old) != _file_of(current)
                ):
                    pairs.append((old, current))
        return pairs


def _file_of(spec: StageSpec) -> str:
    return spec.location.rsplit(":", 1)[0]


#: The process-wide registry of declarations (like pluggy's hookspec markers, it is filled at
#: import time, before any pytest config exists).
registry = StageRegistry()


def sweep(
    config_class: type[_C],
    *,
    marks: Callable[[_C], Iterable[pytest.MarkDecorator | pytest.Mark]] | None = None,
    **fields: Sequence[Any],
) -> list[Any]:
    """The configs of the cartesian product of ``fields``, for ``@stage(params=...)``.

    ``sweep(GridConfig, n=[64, 128], length=[1.0, 2.0])`` gives four configs whose ids read
    ``n=64-length=1.0`` and so on. ``marks=lambda config: [...]`` marks instances one by one
    (``[pytest.mark.slow] if config.n > 1000 else []``): a config it gives marks to comes back
    as ``pytest.param(config, marks=...)``.
    """
    if not (isinstance(config_class, type) and issubclass(config_class, StageConfig)):
        raise ConfigError(f"sweep() needs a StageConfig subclass, got {config_class!r}")
    for field, values in fields.items():
        if field not in config_class.model_fields:
            raise ConfigError(
                f"sweep({config_class.__name__}, {field}=...): {config_class.__name__} has no "
                f"field {field!r}; its fields are {', '.join(config_class.model_fields)}"
            )
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise ConfigError(
                f"sweep({config_class.__name__}, {field}=...) needs a list of values, "
                f"got {values!r}"
            )
    names = list(fields)
    configs = []
    for combo in itertools.product(*(list(fields[n]) for n in names)):
        try:
            configs.append(config_class(**dict(zip(names, combo, strict=True))))
        except ValidationError as exc:
            raise ConfigError(
                f"sweep({config_class.__name__}): invalid combination\n{exc}"
            ) from None
    if marks is None:
        return configs
    if not callable(marks):
        raise ConfigError(
            f"sweep({config_class.__name__}, marks=...) takes a function of the config that "
            f"returns marks, such as `lambda c: [pytest.mark.slow] if c.n > 64 else []`; got "
            f"{marks!r}"
        )
    entries: list[Any] = []
    for config in configs:
        given = marks(config)
        given = [given] if isinstance(given, pytest.MarkDecorator | pytest.Mark) else list(given)
        entries.append(pytest.param(config, marks=given) if given else config)
    return entries


def _unwrap_param(
    name: str, index: int, entry: object
) -> tuple[object, tuple[pytest.Mark, ...], str | None]:
    """An entry of ``params=``: a config, or ``pytest.param(config, marks=..., id=...)``."""
    # pytest.param's ParameterSet is not a public type; it is a named tuple of these fields.
    if isinstance(entry, tuple) and all(hasattr(entry, a) for a in ("values", "marks", "id")):
        values = entry.values  # type: ignore[attr-defined]
        if len(values) != 1:
            raise StageError(
                f"stage {name!r}: params[{index}] is pytest.param with {len(values)} values; "
                "a stage param holds one config: pytest.param(MyConfig(...), marks=...)"
            )
        marks = tuple(m.mark if isinstance(m, pytest.MarkDecorator) else m for m in entry.marks)  # type: ignore[attr-defined]
        return values[0], marks, entry.id  # type: ignore[attr-defined]
    return entry, (), None


def _format_id_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def default_ids(configs: Sequence[StageConfig], base: StageConfig | None) -> tuple[str, ...]:
    """Ids from the fields that vary across ``configs`` (or differ from ``base``)."""
    dumps = python_dumps(configs)
    fields = list(type(configs[0]).model_fields) if configs else []
    varying = [f for f in fields if _varies(dumps, f)]
    if not varying and base is not None:
        base_dump = base.model_dump()
        varying = [f for f in fields if any(d.get(f) != base_dump.get(f) for d in dumps)]
    if not varying:
        return tuple("default" if len(configs) == 1 else f"config{i}" for i in range(len(configs)))
    if len(varying) == 1:  # a sweep of one field: no join, no call per config
        only = varying[0]
        values = [d[only] for d in dumps]
        return tuple(f"{only}={repr(v) if isinstance(v, float) else str(v)}" for v in values)
    return tuple("-".join(f"{f}={_format_id_value(d[f])}" for f in varying) for d in dumps)


def _varies(dumps: list[dict[str, Any]], field: str) -> bool:
    """Whether ``field`` shows two values (by ``repr``) across ``dumps``."""
    first = repr(dumps[0].get(field))
    return any(repr(d.get(field)) != first for d in dumps)


def _config_annotation(func: Callable[..., Any], name: str) -> type[StageConfig]:
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise StageError(
            f"stage {name!r}: cannot resolve the annotation of its `config` parameter ({exc}). "
            "Annotate it with a StageConfig subclass importable from the stage's module."
        ) from None
    annotation = hints.get("config")
    if isinstance(annotation, type) and issubclass(annotation, StageConfig):
        return annotation
    raise StageError(
        f"stage {name!r}: its `config` parameter must be annotated with a StageConfig subclass "
        f"(got {annotation!r}). Declare `class MyConfig(StageConfig): ...` and write "
        "`config: MyConfig`."
    )


#: Fixtures of pytest and of this plugin: a stage of that name would shadow them or be shadowed.
_RESERVED_NAMES = frozenset(
    {
        "request", "pytestconfig", "cache", "tmp_path", "tmp_path_factory", "tmpdir",
        "tmpdir_factory", "monkeypatch", "capsys", "capsysbinary", "capfd", "capfdbinary",
        "caplog", "recwarn", "record_property", "record_xml_attribute",
        "record_testsuite_property", "doctest_namespace", "pytester", "testdir", "subtests",
        "physpipe", "physics_snapshot", "snapshot", "ctx", "config",
    }
)  # fmt: skip


def _check_option_types(name: Any, options: dict[str, Any]) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise StageError(f"@stage(name={name!r}): a stage name must be a Python identifier")
    if name in _RESERVED_NAMES:
        raise StageError(
            f"stage {name!r} has the name of a pytest fixture, which it would hide from every "
            "test (or be hidden by). Rename the function, or give @stage(name=...) another name."
        )
    version = options["version"]
    if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
        raise StageError(
            f"stage {name!r}: version={version!r} must be an int or a str (bump it to force a "
            "recompute)"
        )
    for flag in ("slow", "cache"):
        if not isinstance(options[flag], bool):
            raise StageError(f"stage {name!r}: {flag}={options[flag]!r} must be True or False")


def _build_spec(func: Callable[..., Any], options: dict[str, Any]) -> StageSpec:
    if not callable(func) or not hasattr(func, "__code__"):
        raise StageError(f"@stage decorates plain functions, not {func!r}")
    name = options["name"] or func.__name__
    _check_option_types(name, options)
    signature = inspect.signature(func)
    upstream: list[str] = []
    gathers: list[tuple[str, Gather]] = []
    config_default: Any = None
    has_config = wants_ctx = False
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise StageError(
                f"stage {name!r}: parameter {param.name!r} is {param.kind.description}; a stage "
                "takes only named parameters (upstream stages, `config`, `ctx`)"
            )
        if param.name == "config":
            has_config = True
            if param.default is not param.empty:
                config_default = param.default
        elif param.name == "ctx":
            wants_ctx = True
        elif isinstance(param.default, Gather):
            if param.default.stage == name:
                raise StageError(
                    f"stage {name!r}: parameter {param.name!r} gathers the stage itself; "
                    "gather(...) names another stage"
                )
            gathers.append((param.name, param.default))
        else:
            if param.default is not param.empty:
                raise StageError(
                    f"stage {name!r}: parameter {param.name!r} has a default; upstream stages "
                    "cannot be optional. Make it a config field instead (or, to receive every "
                    'instance of a stage, give it the default gather("stage")).'
                )
            upstream.append(param.name)
    if name in upstream:
        raise StageError(f"stage {name!r} names itself as a parameter")

    config_class = _config_annotation(func, name) if has_config else None
    params_opt = options["params"]
    if (options["config"] is not None or params_opt is not None) and config_class is None:
        raise StageError(
            f"stage {name!r}: `config=`/`params=` given but the function has no `config` "
            "parameter. Add `config: MyConfig` to its signature."
        )
    draft = StageSpec(
        name=name,
        func=func,
        upstream=tuple(upstream),
        config_class=config_class,
        default_config=None,
        params=None,
        ids=None,
        marks=None,
        gathers=tuple(gathers),
        version=options["version"],
        resources=_coerce_model(name, "resources", Resources, options["resources"]),
        slow=bool(options["slow"]),
        cluster=_coerce_model(name, "cluster", ClusterOptions, options["cluster"]),
        cache=bool(options["cache"]),
        codec=options["codec"],
        retry=_coerce_retry(name, options["retries"]),
        track=tuple(options["track"]),
        wants_ctx=wants_ctx,
    )
    default: StageConfig | None = None
    if config_class is not None:
        source = options["config"] if options["config"] is not None else config_default
        if source is None:
            default = validate_config(draft, {}, origin="the config class's defaults")
        else:
            default = draft.coerce_config(source, origin="the default config")
    params, ids, marks = _params(draft, options, default)
    if not isinstance(draft.codec, str):
        raise StageError(f"stage {name!r}: codec= must be a codec name such as 'auto' or 'npy'")
    if len([g for _, g in gathers if g.over is not None]) > 1:
        raise StageError(
            f"stage {name!r}: more than one gather(..., over=...) parameter; a stage fans out "
            "over one gather"
        )
    return StageSpec(
        **{
            **draft.__dict__,
            "default_config": default,
            "params": params,
            "ids": ids,
            "marks": marks,
        }
    )


def _params(
    draft: StageSpec, options: dict[str, Any], default: StageConfig | None
) -> tuple[
    tuple[StageConfig, ...] | None,
    tuple[str, ...] | None,
    tuple[tuple[pytest.Mark, ...], ...] | None,
]:
    """``params=`` and ``ids=``: the configs, their ids and the marks of each."""
    name, params_opt = draft.name, options["params"]
    if params_opt is None:
        if options["ids"] is not None:
            raise StageError(f"stage {name!r}: ids= given without params=")
        return None, None, None
    if isinstance(params_opt, str | bytes | Mapping) or not isinstance(params_opt, Iterable):
        raise StageError(f"stage {name!r}: params= takes a list of configs, got {params_opt!r}")
    config_class = draft.config_class
    entries = list(params_opt)
    # The usual entry is a config: nothing to unwrap or check (None below). Every entry is
    # unwrapped before any is validated, so the first error is the same as it always was.
    unwrapped = [
        None
        if config_class is not None and isinstance(entry, config_class)
        else _unwrap_param(name, i, entry)
        for i, entry in enumerate(entries)
    ]
    configs: list[StageConfig] = []
    given: dict[int, str] = {}  # pytest.param(id=...), by position
    marked: dict[int, tuple[pytest.Mark, ...]] = {}
    for i, (entry, parts) in enumerate(zip(entries, unwrapped, strict=True)):
        if parts is None:
            configs.append(entry)
            continue
        value, entry_marks, entry_id = parts
        config = draft.coerce_config(value, origin=f"params[{i}]")
        if config is None:
            continue
        if entry_id:
            given[len(configs)] = entry_id
        if entry_marks:
            marked[len(configs)] = entry_marks
        configs.append(config)
    params = tuple(configs)
    if not params:
        raise StageError(f"stage {name!r}: params= is empty; give at least one config")
    ids = tuple(options["ids"]) if options["ids"] is not None else default_ids(params, default)
    if len(ids) != len(params):
        raise StageError(
            f"stage {name!r}: {len(ids)} ids for {len(params)} params; give one id each"
        )
    if given:  # pytest.param(id=...) wins over ids= and the default, as in parametrize
        ids = tuple(given.get(i) or ident for i, ident in enumerate(ids))
    no_marks: tuple[pytest.Mark, ...] = ()
    marks = tuple(marked.get(i, no_marks) for i in range(len(params))) if marked else None
    if marks is None:
        marks = (no_marks,) * len(params)
    if any(g.over is not None for _, g in draft.gathers):
        raise StageError(
            f"stage {name!r}: params= and gather(..., over=...) both fan it out; give one "
            "(move the swept fields into the gathered stage's sweep)"
        )
    return params, ids, marks


_M = TypeVar("_M", Resources, ClusterOptions)


def _coerce_model(name: str, option: str, model: type[_M], value: object) -> Any:
    """``resources=``/``cluster=``: an instance or a dict of its fields, validated now."""
    if value is None:
        return Resources() if model is Resources else None
    if isinstance(value, model):
        return value
    if isinstance(value, Mapping):
        try:
            return model.model_validate(dict(value))
        except ValidationError as exc:
            raise StageError(f"stage {name!r}: invalid {option}=\n{exc}") from None
    raise StageError(
        f"stage {name!r}: {option}= must be a {model.__name__}(...) (or a dict of its fields), "
        f"got {value!r}"
    )


def _coerce_retry(name: str, value: Retry | int) -> Retry:
    try:
        return Retry.coerce(value)
    except ValueError as exc:
        raise StageError(f"stage {name!r}: {exc}") from None


def _make_fixture(spec: StageSpec) -> Any:
    def stage_fixture(request: pytest.FixtureRequest, **upstream: Any) -> Any:
        run = request.config.stash.get(RUN, None)
        if run is None:
            raise StageError(
                f"stage {spec.name!r} was requested but the physpipe plugin is not active "
                "(was it disabled with `-p no:physpipe`?)"
            )
        return run.provide(spec, request, upstream)

    parameters = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY)]
    parameters += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in spec.upstream]
    stage_fixture.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    stage_fixture.__name__ = spec.func.__name__
    stage_fixture.__qualname__ = spec.func.__qualname__
    stage_fixture.__module__ = spec.func.__module__
    stage_fixture.__doc__ = spec.func.__doc__
    params: list[object] | None = None
    ids: list[str] | None = None
    if spec.params is not None and spec.ids is not None and spec.marks is not None:
        # pytest puts the marks of a fixture's params on every test that uses the fixture,
        # directly or through other fixtures: `-m`, skip and xfail then work as in pytest.
        # Only a marked entry needs pytest.param; the ids go as ids= (a sweep of ten thousand
        # configs builds no ten thousand ParameterSets).
        params = [
            pytest.param(config, marks=marks, id=ident) if marks else config
            for config, marks, ident in zip(spec.params, spec.marks, spec.ids, strict=True)
        ]
        ids = list(spec.ids)
    return pytest.fixture(scope="session", name=spec.name, params=params, ids=ids)(stage_fixture)


_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def stage(func: _F, /) -> _F: ...
@overload
def stage(
    *,
    name: str | None = None,
    version: int | str | None = None,
    config: StageConfig | Mapping[str, Any] | None = None,
    params: Sequence[StageConfig | Mapping[str, Any]] | None = None,
    ids: Sequence[str] | None = None,
    resources: Resources | None = None,
    slow: bool = False,
    cluster: ClusterOptions | None = None,
    cache: bool = True,
    codec: str = "auto",
    retries: Retry | int = 0,
    track: Sequence[Any] = (),
) -> Callable[[_F], _F]: ...
def stage(func: Any = None, /, **options: Any) -> Any:
    """Declare a pipeline stage: the function becomes a session-scoped pytest fixture.

    Its parameters name upstream stages, plus the optional ``config`` (a
    :class:`~pytest_physpipe.StageConfig`) and ``ctx`` (a
    :class:`~pytest_physpipe.StageContext`). Works bare (``@stage``) or with options
    (``@stage(version=2, slow=True)``); see the README for every option.
    """
    defaults: dict[str, Any] = {
        "name": None,
        "version": None,
        "config": None,
        "params": None,
        "ids": None,
        "resources": None,
        "slow": False,
        "cluster": None,
        "cache": True,
        "codec": "auto",
        "retries": 0,
        "track": (),
    }
    unknown = set(options) - set(defaults)
    if unknown:
        raise StageError(
            f"@stage got unknown option(s) {', '.join(sorted(unknown))}; the options are "
            f"{', '.join(defaults)}"
        )

    def decorate(function: Any) -> Any:
        spec = _build_spec(function, {**defaults, **options})
        registry.add(spec)
        return _make_fixture(spec)

    if func is not None:
        if options:
            raise StageError("use either @stage or @stage(...), not both")
        return decorate(func)
    return decorate

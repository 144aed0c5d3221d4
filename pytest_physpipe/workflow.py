"""``Workflow``: the stages of a test suite outside pytest, in a notebook or a script.

It is built from the pieces a pytest run uses, and from nothing else: the project's pytest
configuration as pytest itself reads it (:mod:`pytest_physpipe.project`), the :class:`Planner`
for configs and keys (:meth:`Planner.resolve`, which tests resolve through too), and the
:class:`StageRunner` for hits, per-key locks, verification, resource slots and atomic commits.
So a value computed here is a hit in pytest, and the other way round.

A call's keyword arguments select one instance: each names a stage (the target or one upstream
of it) and gives config fields. A swept stage's instance is its ``params`` entry matching those
fields (or its id, ``"n=64"``); any other stage runs with its default config with the fields
set. A config instance is taken as it is, as indirect parametrization takes it. Settings from
the ini (``physpipe_set`` overrides included) apply on top, as in a run.

Read-only calls (``status``, ``record``, ``plan``, ``stages``, ``diagram``) never create the
store; they raise :class:`NotInStoreError` where there is none, because a mistyped store path
would otherwise read as "everything missing". ``get`` and ``rebuild`` create it, as a run does.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Literal, overload

from pytest_physpipe import keys
from pytest_physpipe.context import StageContext
from pytest_physpipe.errors import NotInStoreError, ProjectError, SelectionError
from pytest_physpipe.execute import PluginHooks, RunnerHooks, Served, StageRunner
from pytest_physpipe.models import StageConfig
from pytest_physpipe.plan import MISSING, GatherGroup, Planner, StageInstance
from pytest_physpipe.project import Project, load_project
from pytest_physpipe.reasons import why_missing
from pytest_physpipe.records import StageRecord
from pytest_physpipe.report import format_graph, format_plan
from pytest_physpipe.resources import SlotPool, detect_budget
from pytest_physpipe.runid import new_run_id
from pytest_physpipe.stage import StageSpec, registry, validate_config
from pytest_physpipe.store.codecs import CodecRegistry
from pytest_physpipe.store.entries import Store
from pytest_physpipe.units import human_time

__all__ = ["InstanceRow", "InstanceTable", "StageStatus", "Workflow"]


class StageStatus(str):
    """``"cached"``, ``"missing"`` or ``"uncached"`` (a ``cache=False`` stage), with details.

    Compares like the plain string (``wf.status(...) == "missing"``); ``reason`` says why a
    missing instance would be computed, as ``--physpipe-plan`` does.
    """

    key: str
    label: str
    reason: str | None

    def __new__(cls, state: str, *, key: str, label: str, reason: str | None = None) -> StageStatus:
        status = super().__new__(cls, state)
        status.key, status.label, status.reason = key, label, reason
        return status

    def __repr__(self) -> str:
        why = f", reason={self.reason!r}" if self.reason else ""
        return f"StageStatus({str(self)!r}, label={self.label!r}, key={self.key[:16]!r}{why})"


@dataclass(frozen=True)
class InstanceRow:
    """One stage instance of a table: its label, key and status."""

    instance: StageInstance
    status: StageStatus

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def label(self) -> str:
        return self.instance.label

    @property
    def key(self) -> str:
        return self.instance.key


class InstanceTable(Sequence[InstanceRow]):
    """Stage instances with their statuses, upstream first; prints as ``--physpipe-plan`` does."""

    def __init__(self, rows: Iterable[InstanceRow]) -> None:
        self._rows = tuple(rows)

    @overload
    def __getitem__(self, index: int) -> InstanceRow: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[InstanceRow]: ...
    def __getitem__(self, index: int | slice) -> InstanceRow | Sequence[InstanceRow]:
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    def __str__(self) -> str:
        statuses = {row.key: str(row.status) for row in self._rows}
        reasons = {row.key: row.status.reason for row in self._rows if row.status.reason}
        instances = [row.instance for row in self._rows]
        return "\n".join(format_plan(instances, statuses, "local", reasons))

    __repr__ = __str__


class Workflow:
    """The stages of a test suite, served from its store outside pytest.

    ``rootdir`` is the folder you would run pytest on; the ini settings, ``addopts``, plugins
    and the store are found as ``pytest <rootdir>`` would find them. ``modules`` are the modules
    declaring stages, as the tests import them (``"stages"``) or as paths to ``.py`` files.
    ``store`` overrides the store's location; ``settings`` overrides ``physpipe_*`` ini
    settings (``{"physpipe_lock": "soft"}``). ``progress=False`` silences the progress lines.
    """

    def __init__(
        self,
        rootdir: str | os.PathLike[str] = ".",
        modules: Sequence[str | os.PathLike[str]] = (),
        store: str | os.PathLike[str] | None = None,
        settings: Mapping[str, object] | None = None,
        *,
        progress: bool = True,
    ) -> None:
        self.project: Project = load_project(rootdir, settings)
        config = self.project.config
        self.modules: list[ModuleType] = [_import_stages(m, self.project) for m in modules]
        self.registry = registry.bound(config.pluginmanager.is_registered)
        if not self.registry.all():
            raise ProjectError(
                f"Workflow(rootdir={os.fspath(rootdir)!r}): no stage is declared. Name the "
                "modules that declare your stages: Workflow(rootdir=..., modules=['stages'])."
            )
        ini = self.project.settings
        #: Which setting chose the store's place (``store=``, ``PHYSPIPE_DIR``, the ini, ...).
        self.store_source: str
        if store is None:
            root, self.store_source = ini.store_dir, self.project.store_source
        else:
            root, self.store_source = Path(store).expanduser().absolute(), "store="
        codecs = CodecRegistry()
        config.hook.pytest_physpipe_register_codecs(registry=codecs)
        self.store = Store(root, codecs=codecs, lock_mode=ini.lock, verify_max=ini.verify_max)
        self.planner = Planner(
            registry=self.registry,
            overrides=ini.overrides,
            packages=keys.package_versions(ini.track_packages),
            salt=ini.salt,
            rootdir=self.project.rootdir,
        )
        self.planner.validate(sorted(spec.name for spec in self.registry.all()))
        self.run_id = new_run_id()
        slots = self.store.layout.slots_dir(self.run_id)
        # The budget is detected when a build first has to compute (never for a stored target).
        self._pool = SlotPool(slots, functools.partial(detect_budget, cpus=ini.cpus, gpus=ini.gpus))
        # The slot files of this process's builds go with it, as a run's go at its end.
        weakref.finalize(self, shutil.rmtree, slots, ignore_errors=True)
        self._progress = _Progress(PluginHooks(config.hook), enabled=progress)
        self._runner = self._new_runner(self.run_id, rebuild=frozenset())
        #: What this workflow served, by key: the record of each computed or loaded instance
        #: (a computed one says why in ``reason``, as a run's records do).
        self.records: dict[str, StageRecord] = {}
        self._reasons: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"Workflow(rootdir={str(self.project.path)!r}, store={str(self.store.root)!r}, "
            f"stages={len(self.registry.all())})"
        )

    @property
    def rootdir(self) -> Path:
        """pytest's rootdir for this project (relative paths in configs are read from it)."""
        return self.project.rootdir

    # -- the instance API -----------------------------------------------------------------------

    def get(self, name: str, /, **selection: Any) -> Any:
        """The value of one instance: loaded if stored, else computed (upstream first) and stored.

        It is the value a test receives: reloaded from the store, arrays read-only.
        """
        return self._build(self._select(name, selection), self._runner).value

    def rebuild(self, name: str, /, **selection: Any) -> Any:
        """Recompute one instance and overwrite its entry (``--physpipe-rebuild``); its value.

        Only the instance itself is recomputed; missing upstream instances are computed first,
        stored ones are loaded. Its key, and so every downstream key, stays the same.
        """
        target = self._select(name, selection)
        runner = self._new_runner(new_run_id(), rebuild=frozenset({target.name}))
        return self._build(target, runner).value

    def key(self, name: str, /, **selection: Any) -> str:
        """The provenance key of one instance, the key a pytest run uses (nothing is read)."""
        return self._select(name, selection).key

    def status(self, name: str, /, **selection: Any) -> StageStatus:
        """``"cached"`` or ``"missing"`` (with ``.reason``) for one instance; computes nothing."""
        instance = self._select(name, selection)
        self._require_store()
        return self._status(instance)

    def record(self, name: str, /, **selection: Any) -> StageRecord:
        """The provenance of one stored instance (the :class:`StageRecord` a test would get).

        Its ``status`` is ``"computed"`` if this workflow computed it, else ``"hit"``. An
        instance not in the store raises :class:`NotInStoreError`: ``get`` computes it, and
        ``key`` gives its key without it.
        """
        instance = self._select(name, selection)
        known = self.records.get(instance.key)
        if known is not None and instance.spec.cache:
            return known
        self._require_store()
        hit = self._runner.lookup(instance) if instance.spec.cache else None
        if hit is None:
            raise NotInStoreError(
                f"stage {instance.label} ({instance.key[:16]}) is not in the store "
                f"{self.store.root}{'' if instance.spec.cache else ' (cache=False: never stored)'}"
                ". "
                f"wf.get({instance.name!r}, ...) computes it; wf.key(...) gives its key already."
            )
        return hit.record

    def plan(self, name: str, /, **selection: Any) -> InstanceTable:
        """The instances one selection needs, upstream first, with statuses (computes nothing)."""
        target = self._select(name, selection)
        self._require_store()
        return self._table(self.planner.reachable(target))

    # -- the whole DAG --------------------------------------------------------------------------

    def stages(self, *names: str) -> InstanceTable:
        """Every instance of every stage (or of ``names``), sweeps fanned out, with statuses."""
        for name in names:
            self._spec(name)
        self._require_store()
        wanted = set(names)
        return self._table(
            instance for instance in self._every_instance() if not wanted or instance.name in wanted
        )

    def what_invalidates(self, name: str, /) -> set[str]:
        """Every stage downstream of ``name``: what a change to it (code, config) recomputes."""
        self._spec(name)
        below: dict[str, set[str]] = {}
        for spec in self.registry.all():
            for upstream in (*spec.upstream, *(g.stage for _, g in spec.gathers)):
                below.setdefault(upstream, set()).add(spec.name)
        downstream: set[str] = set()
        todo = [name]
        while todo:
            for child in below.get(todo.pop(), ()):
                if child not in downstream:
                    downstream.add(child)
                    todo.append(child)
        return downstream

    def diagram(self, format: Literal["dot", "mermaid"] = "dot") -> str:
        """The DAG of every instance, coloured by status: what ``--physpipe-graph`` writes."""
        if format not in ("dot", "mermaid"):
            raise ValueError(f"diagram(format={format!r}): choose 'dot' or 'mermaid'")
        self._require_store()
        instances = list(self._every_instance())
        statuses = {instance.key: str(self._status(instance)) for instance in instances}
        return format_graph(instances, {}, statuses, mermaid=format == "mermaid")

    # -- selections -----------------------------------------------------------------------------

    def _spec(self, name: str) -> StageSpec:
        spec = self.registry.get(name) if isinstance(name, str) else None
        if spec is None:
            known = ", ".join(sorted(s.name for s in self.registry.all()))
            raise SelectionError(
                f"there is no stage named {name!r} (stages: {known}). Check the spelling, or "
                "add the module declaring it to Workflow(modules=[...])."
            )
        return spec

    def _closure(self, name: str) -> list[str]:
        """``name`` and every stage upstream of it, upstream first."""
        order: list[str] = []

        def visit(current: str) -> None:
            if current in order:
                return
            for upstream in self._spec(current).upstream:
                visit(upstream)
            order.append(current)

        visit(name)
        return order

    def _select(self, name: str, selection: Mapping[str, Any]) -> StageInstance:
        """The instance ``name`` with ``selection``, resolved as a test with those params is."""
        self._spec(name)
        closure = self._closure(name)
        for given in selection:
            self._spec(given)
            if given not in closure:
                raise SelectionError(
                    f"{given}=...: stage {given!r} is not {name!r} nor upstream of it (its "
                    f"upstream: {', '.join(closure[:-1]) or 'none'}), so it cannot select an "
                    f"instance of {name!r}."
                )
        params: dict[str, Any] = {}
        for stage_name in closure:
            spec = self._spec(stage_name)
            given = selection.get(stage_name, MISSING)
            fans_out = [param for param, declared in spec.gathers if declared.over is not None]
            if fans_out:
                groups = self.planner.groups(spec, fans_out[0])
                params[stage_name] = _group(spec, groups, given, name)
            elif spec.params is not None or stage_name in selection:
                params[stage_name] = _param(spec, given, name)
        return self.planner.resolve([name], params)[name]

    def _every_instance(self) -> Iterator[StageInstance]:
        """Each instance of each stage the declarations produce, upstream first."""
        seen: set[str] = set()
        for name in _topological([spec.name for spec in self.registry.all()], self._spec):
            for instance, _coords in self.planner.enumerate(name):
                if instance.key not in seen:
                    seen.add(instance.key)
                    yield instance

    # -- statuses -------------------------------------------------------------------------------

    def _require_store(self) -> None:
        if not self.store.root.is_dir():
            raise NotInStoreError(
                f"there is no physpipe store at {self.store.root} (the location comes from "
                f"{self.store_source}). Nothing has been computed into it yet: wf.get(...) or "
                "a pytest run creates it. If you expected results there, check that setting."
            )

    def _status(self, instance: StageInstance) -> StageStatus:
        if not instance.spec.cache:
            return StageStatus("uncached", key=instance.key, label=instance.label)
        if self.store.exists(instance.key):
            return StageStatus("cached", key=instance.key, label=instance.label)
        reason = why_missing(instance, self.store)
        return StageStatus("missing", key=instance.key, label=instance.label, reason=reason)

    def _table(self, instances: Iterable[StageInstance]) -> InstanceTable:
        return InstanceTable(InstanceRow(each, self._status(each)) for each in instances)

    # -- building -------------------------------------------------------------------------------

    def _new_runner(self, run_id: str, *, rebuild: frozenset[str]) -> StageRunner:
        ini = self.project.settings
        return StageRunner(
            store=self.store,
            run_id=run_id,
            pool=self._pool,
            hooks=self._progress,
            rebuild=rebuild,
            full_verify=ini.verify,
            worker="workflow",
            extra_versions=self.planner.packages,
        )

    def _build(self, target: StageInstance, runner: StageRunner) -> Served:
        todo = self._to_compute(target, runner)
        for instance in todo:
            self._pool.check(instance.spec.resources, stage=instance.label)
        # Why each is computed, asked before anything is committed (as a run's plan does).
        self._reasons = {
            instance.key: "rebuild"
            if runner is not self._runner and instance is target
            else why_missing(instance, self.store)
            for instance in todo
            if instance.spec.cache
        }
        with self._progress.build(len(todo)):
            return self._serve(target, runner)

    def _to_compute(self, target: StageInstance, runner: StageRunner) -> list[StageInstance]:
        """What serving ``target`` will compute: missing instances, from the top (an estimate:
        another process may commit some meanwhile)."""
        todo: dict[str, StageInstance] = {}

        def visit(instance: StageInstance, rebuild: bool) -> None:
            if instance.key in todo:
                return
            stored = instance.spec.cache and self.store.exists(instance.key)
            live = not instance.spec.cache and instance.key in self.records
            if (stored or live) and not rebuild:
                return
            for name, key in instance.upstream.items():
                above = None if name in instance.gathered else self.planner.get(key)
                if above is not None:
                    visit(above, rebuild=False)
            for refs in instance.gathered.values():
                for ref in refs:
                    gathered = self.planner.get(ref.key)
                    if gathered is not None:
                        visit(gathered, rebuild=False)
            todo[instance.key] = instance

        visit(target, rebuild=runner is not self._runner)
        return list(todo.values())

    def _value(self, instance: StageInstance) -> Any:
        return self._serve(instance, self._runner).value

    def _serve(self, instance: StageInstance, runner: StageRunner) -> Served:
        """A hit, or the upstream values first and then the runner's compute-once protocol."""
        served = runner.lookup(instance) if instance.spec.cache else None
        if served is None:
            upstream: dict[str, Any] = {}
            for name, key in instance.upstream.items():
                if name in instance.gathered:
                    continue  # its entry is the digest of what it gathers
                above = self.planner.get(key)
                assert above is not None  # resolved together with ``instance``
                upstream[name] = self._value(above)
            upstream.update(self.planner.gathered_values(instance, self._value))
            served = runner.provide(instance, upstream)
        record = served.record
        if record.status == "computed" and record.reason is None and instance.spec.cache:
            reason = self._reasons.get(instance.key, "entry could not be loaded")
            record = record.model_copy(update={"reason": reason})
        if record.status != "hit" or instance.key not in self.records:
            self.records[instance.key] = record  # "computed" stays, later hits or not
        return served


def _param(spec: StageSpec, given: Any, target: str) -> Any:
    """What pytest would pass stage ``spec`` as ``request.param`` for this selection."""
    if isinstance(given, StageConfig):
        return given  # taken as it is, as indirect parametrization takes a config
    if given is not MISSING and spec.config_class is None:
        raise SelectionError(
            f"{spec.name}={given!r}: stage {spec.name!r} takes no config, so there is nothing "
            "to select; drop this argument."
        )
    if spec.params is None:
        if given is MISSING:
            return MISSING
        fields = _fields(spec, given)
        base = spec.default_config.model_dump() if spec.default_config is not None else {}
        return validate_config(
            spec, {**base, **fields}, origin=f"the selection {spec.name}={given!r}"
        )
    ids = spec.ids or ()
    if given is MISSING:
        if len(spec.params) == 1:
            return spec.params[0]
        raise SelectionError(
            f"stage {spec.name!r} is swept over {len(spec.params)} instances ({', '.join(ids)})"
            f"; say which one {target!r} should use: wf.get({target!r}, "
            f"{spec.name}={_example(spec.params)})."
        )
    if isinstance(given, str):
        if given in ids:
            return spec.params[ids.index(given)]
        raise SelectionError(
            f"{spec.name}={given!r}: stage {spec.name!r} has no params entry with that id "
            f"(its ids: {', '.join(ids)})."
        )
    fields = _fields(spec, given)
    probe = validate_config(
        spec,
        {**spec.params[0].model_dump(), **fields},
        origin=f"the selection {spec.name}={given!r}",
    )
    wanted = {name: getattr(probe, name) for name in fields}
    matches = [
        (ident, entry)
        for ident, entry in zip(ids, spec.params, strict=True)
        if all(getattr(entry, name) == value for name, value in wanted.items())
    ]
    if len(matches) == 1:
        return matches[0][1]
    if not matches:
        raise SelectionError(
            f"{spec.name}={given!r} matches none of the {len(ids)} params entries of stage "
            f"{spec.name!r} ({', '.join(ids)}). Pick one of those, or pass a config to build "
            f"an instance outside the sweep: {spec.name}={type(probe).__name__}(...)."
        )
    raise SelectionError(
        f"{spec.name}={given!r} matches {len(matches)} params entries of stage {spec.name!r}: "
        f"{', '.join(ident for ident, _ in matches)}. Give more fields to pick one."
    )


def _group(spec: StageSpec, groups: Sequence[GatherGroup], given: Any, target: str) -> Any:
    """The gather of a ``gather(..., over=...)`` stage a selection picks, by id or fields."""
    idents = [group.ident for group in groups]
    if given is MISSING:
        if len(groups) == 1:
            return groups[0]
        raise SelectionError(
            f"stage {spec.name!r} fans out over {len(groups)} gathers ({', '.join(idents)}); "
            f"say which one {target!r} should use: wf.get({target!r}, {spec.name}="
            f"{idents[0]!r})."
        )
    if isinstance(given, str) and given in idents:
        return groups[idents.index(given)]
    if isinstance(given, Mapping):
        matches = [
            group
            for group in groups
            if all(
                any(field == wanted and value == v for (_, field), value in group.coords.items())
                for wanted, v in given.items()
            )
        ]
        if len(matches) == 1:
            return matches[0]
    raise SelectionError(
        f"{spec.name}={given!r}: stage {spec.name!r} gathers once per point of the fields it "
        f"does not gather along; pick one point by its id ({', '.join(idents)}) or by a dict "
        "of its fields that matches exactly one."
    )


def _fields(spec: StageSpec, given: Any) -> dict[str, Any]:
    assert spec.config_class is not None  # checked by _param
    if not isinstance(given, Mapping):
        raise SelectionError(
            f"{spec.name}={given!r}: select an instance with a dict of config fields "
            f"({spec.name}={{'field': value}}), a {spec.config_class.__name__}(...), or, for a "
            "swept stage, a params id such as 'n=64'."
        )
    unknown = [str(name) for name in given if name not in spec.config_class.model_fields]
    if unknown:
        raise SelectionError(
            f"{spec.name}={dict(given)!r}: {spec.config_class.__name__} has no field "
            f"{', '.join(map(repr, unknown))} (fields: "
            f"{', '.join(spec.config_class.model_fields)})."
        )
    return {str(name): value for name, value in given.items()}


def _example(params: Sequence[StageConfig]) -> str:
    """A selection of the first entry: the fields that vary across the sweep."""
    dumps = [entry.model_dump() for entry in params]
    varying = [f for f in dumps[0] if len({repr(d[f]) for d in dumps}) > 1]
    return repr({f: dumps[0][f] for f in varying})


def _topological(names: list[str], spec_of: Callable[[str], StageSpec]) -> list[str]:
    """``names`` ordered so that every stage comes after those it takes or gathers."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        spec = spec_of(name)
        for upstream in (*spec.upstream, *(declared.stage for _, declared in spec.gathers)):
            visit(upstream)
        order.append(name)

    for name in names:
        visit(name)
    return order


def _import_stages(entry: str | os.PathLike[str], project: Project) -> ModuleType:
    """Import a module of stages by name (as the tests import it) or from its file."""
    text = os.fspath(entry)
    if text.endswith(".py") or os.sep in text:
        path = Path(text).expanduser()
        path = (path if path.is_absolute() else project.path / path).resolve()
        if not path.is_file():
            raise ProjectError(f"Workflow(modules=[{text!r}]): there is no file {path}.")
        # As pytest's default import mode does: the first folder up without __init__.py goes
        # on sys.path, and the module's name is its dotted path from there.
        base, parts = path.parent, [path.stem]
        while (base / "__init__.py").is_file():
            base, parts = base.parent, [base.name, *parts]
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))
        text = ".".join(parts)
    try:
        module = import_module(text)
    except ModuleNotFoundError as exc:
        if exc.name is None or not text.startswith(exc.name):
            raise  # the module exists; something it imports does not
        raise ProjectError(
            f"Workflow(modules=[{os.fspath(entry)!r}]): no module named {text!r} on sys.path, "
            f"which starts with {sys.path[:3]}. Give the module as the tests in "
            f"{project.path} import it, or the path to its .py file."
        ) from None
    declared = {spec.func.__module__ for spec in registry.all()}
    plugins = getattr(module, "pytest_plugins", ())
    plugins = [plugins] if isinstance(plugins, str) else list(plugins)
    if module.__name__ not in declared and not declared.intersection(plugins):
        where = getattr(module, "__file__", None) or module.__name__
        raise ProjectError(
            f"Workflow(modules=[{os.fspath(entry)!r}]): module {module.__name__!r} ({where}) "
            "declares no stage (no @stage function is defined in it). Name the modules that "
            "define the stages."
        )
    return module


class _Progress:
    """Runner hooks: the project's hooks, plus a progress line for each computed instance.

    On a terminal (stderr is a tty) one line is rewritten in place while a stage computes; in
    a notebook or a log, plain lines.
    """

    def __init__(self, hooks: RunnerHooks, *, enabled: bool, stream: IO[str] | None = None):
        self._hooks = hooks
        self._enabled = enabled
        self._stream = stream
        self._total = self._done = 0

    @contextmanager
    def build(self, total: int) -> Iterator[None]:
        self._total, self._done = total, 0
        try:
            yield
        finally:
            self._total = self._done = 0

    def _say(self, text: str, *, final: bool) -> None:
        if not self._enabled:
            return
        stream = self._stream or sys.stderr
        if stream.isatty():
            stream.write(f"\r\x1b[K{text}" + ("\n" if final else ""))
        else:
            stream.write(text + "\n")
        stream.flush()

    def stage_start(self, record: StageRecord) -> None:
        self._hooks.stage_start(record)
        self._done += 1
        of = f" ({self._done} of {self._total})" if self._total > 1 else ""
        self._say(f"physpipe: computing {record.label}{of} ...", final=False)

    def stage_end(self, record: StageRecord, status: str) -> None:
        self._hooks.stage_end(record, status)
        self._say(
            f"physpipe: {record.label} {status} in {human_time(record.duration_s)}", final=True
        )

    def run_stage(self, record: StageRecord, ctx: StageContext, call: Callable[[], Any]) -> Any:
        return self._hooks.run_stage(record, ctx, call)

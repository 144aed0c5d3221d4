"""The session: store, planner, runner and records of one pytest process.

The run object (:mod:`pytest_physpipe.run`) creates it on first need and hands its hooks and
the stage fixtures' requests to it. The plan is made once, after collection: the instance each
fixture request is served is the planned one (:meth:`Planner.resolve`), and whether an instance
is cached, missing or due for a rebuild is decided once per key (:meth:`status`). Errors are
:class:`~pytest_physpipe.errors.PhyspipeError`; the run object turns them into usage errors.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from functools import cached_property, partial
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any

import pytest

from pytest_physpipe import codefp, keys
from pytest_physpipe.errors import BackendError, CorruptEntryError, PhyspipeError
from pytest_physpipe.isolation import isolate
from pytest_physpipe.options import Settings
from pytest_physpipe.plan import MISSING, Planner, StageInstance
from pytest_physpipe.resources import Budget, SlotPool, detect_budget
from pytest_physpipe.runid import new_run_id
from pytest_physpipe.stage import RUN, StageSpec, registry
from pytest_physpipe.store.layout import StoreLayout

if TYPE_CHECKING:
    from pytest_physpipe.cluster.campaign import Campaign
    from pytest_physpipe.execute import Served, StageRunner
    from pytest_physpipe.records import StageRecord
    from pytest_physpipe.store.codecs import CodecRegistry
    from pytest_physpipe.store.entries import Store

__all__ = ["PhyspipeFixture", "PhyspipeSession", "stage_provenance"]


class PhyspipeSession:
    """Everything physpipe knows during one pytest run (one per process, workers included)."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        *,
        run_id: str | None = None,
        worker: str | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.run_id = run_id or new_run_id()
        self.worker = worker
        # Fingerprints are memoized per process; a new run (pytester runs several in one
        # process) may see edited files.
        codefp.clear_memo()
        self._scratch: Path | None = None
        if settings.no_cache:
            self._scratch = Path(tempfile.mkdtemp(prefix="physpipe-nocache-"))
            self._store_root = self._scratch / "store"
            slots_root = self._scratch / "slots"
        else:
            self._store_root = settings.store_dir
            slots_root = StoreLayout(settings.store_dir).slots_dir(self.run_id)
        #: Where the store's entries are: what the plan's statuses read.
        self.layout = StoreLayout(self._store_root)
        _warn_untracked(settings.track_packages)
        self.planner = Planner(
            registry=registry.bound(config.pluginmanager.is_registered),
            overrides=settings.overrides,
            packages=keys.package_versions(settings.track_packages),
            salt=settings.salt,
            rootdir=Path(config.rootpath),
        )
        # An xdist worker gets the budget its controller decided (see scheduling/hooks.py);
        # otherwise it is detected when something first has to run (never, in a cached rerun).
        # Through a partial, not a method of the session: the pool's reference back to the
        # session would make the session, and the plan it holds, garbage that only the
        # cyclic collector frees (docs/decisions.md#plan-per-test).
        detect = partial(detect_budget, cpus=settings.cpus, gpus=settings.gpus)
        self.pool = SlotPool(slots_root, budget if budget is not None else detect)
        self.records: dict[str, StageRecord] = {}
        self.campaign: Campaign | None = None
        self._current: dict[str, str] = {}
        self._values: dict[str, Served] = {}
        #: key -> "cached", "missing", "rebuild" or "uncached" (see :meth:`status`).
        self.statuses: dict[str, str] = {}
        self.reasons: dict[str, str] = {}  # key -> why it is missing, from the plan
        self._plan_failed = False
        self._param_keywords: dict[str, tuple[str, ...]] = {}

    # The codecs, the store and the runner are made on first use: a plan (--physpipe-plan)
    # decides statuses from the layout alone and imports none of them.

    @cached_property
    def codecs(self) -> CodecRegistry:
        from pytest_physpipe.store.codecs import CodecRegistry

        codecs = CodecRegistry()
        self.config.hook.pytest_physpipe_register_codecs(registry=codecs)
        return codecs

    @cached_property
    def store(self) -> Store:
        from pytest_physpipe.store.entries import Store

        settings = self.settings
        store = Store(
            self._store_root,
            codecs=self.codecs,
            lock_mode=settings.lock,
            verify_max=settings.verify_max,
        )
        store.on_wait = _say_now(self.config)
        return store

    @cached_property
    def runner(self) -> StageRunner:
        from pytest_physpipe.execute import PluginHooks, StageRunner

        settings = self.settings
        return StageRunner(
            store=self.store,
            run_id=self.run_id,
            pool=self.pool,
            hooks=PluginHooks(self.config.hook),
            rebuild=settings.rebuild,
            full_verify=settings.verify,
            worker=self.worker,
            extra_versions=self.planner.packages,
        )

    # -- collection -----------------------------------------------------------------------------

    def mark_items(self, items: list[pytest.Item]) -> None:
        """Plan every collected test and mark those needing a slow stage (before ``-m``)."""
        used: set[str] = set()
        for item in items:
            used.update(self.planner.stage_names(item))
        try:
            self.planner.validate(sorted(used))
            self._check_rebuild_names()
            for item in items:
                self._mark(item)
        except PhyspipeError:
            self._plan_failed = True
            raise

    def _mark(self, item: pytest.Item) -> None:
        """Give a test the marks of every instance it needs (upstream and gathered too) and
        ``-k`` keywords for its sweep coordinates."""
        planner = self.planner
        slow = False
        marks: list[pytest.Mark] = []
        keywords = self._param_keywords
        for instance in planner.for_item(item).values():
            if instance.upstream or instance.gathered or instance.marks or instance.spec.slow:
                reached_slow, reached_marks = planner.reached_marks(instance)
                slow = slow or reached_slow
                marks.extend(m for m in reached_marks if m not in marks)
            param_id = instance.param_id
            if param_id:
                # `-k "level=3"` is no valid expression; `-k "level:3"` is (docs/decisions.md).
                if "-" not in param_id:  # one coordinate: its keyword, nothing to remember
                    if "=" in param_id:
                        item.extra_keyword_matches.add(param_id.replace("=", ":", 1))
                    continue
                found = keywords.get(param_id)
                if found is None:
                    found = keywords[param_id] = _keywords(param_id)
                item.extra_keyword_matches.update(found)
        if slow:
            slow_mark = pytest.mark.slow.mark
            marks = [slow_mark, *(m for m in marks if m != slow_mark)]
        if marks:  # most tests need no mark: their markers are not even looked at
            present = list(item.iter_markers())
            for mark in marks:
                # pytest already put the marks of the test's own fixture params on it.
                if mark not in present and not (
                    mark.name == "slow" and item.get_closest_marker("slow")
                ):
                    item.add_marker(getattr(pytest.mark, mark.name)(*mark.args, **mark.kwargs))

    def parametrize(self, metafunc: pytest.Metafunc) -> None:
        """Fan out the stages that gather ``over=`` some fields: one instance per gather."""
        stages = self.planner.registry
        taken = {
            name
            for mark in metafunc.definition.iter_markers("parametrize")
            for name in _argnames(mark)
        }
        for name in metafunc.fixturenames:
            spec = stages.get(name)
            if spec is None or name in taken:
                continue
            for param, declared in spec.gathers:
                if declared.over is None:
                    continue
                try:
                    groups = self.planner.groups(spec, param)
                except PhyspipeError:
                    # Planning the test again after collection raises it as a usage error; a
                    # collection error here would bury it under pytest's traceback.
                    continue
                metafunc.parametrize(
                    name,
                    [pytest.param(g, id=g.ident) for g in groups],
                    indirect=True,
                    scope="session",
                )

    def _check_rebuild_names(self) -> None:
        stages = self.planner.registry
        for name in sorted(self.settings.rebuild - {"all"}):
            if name not in stages:
                known = ", ".join(sorted(s.name for s in stages.all())) or "none"
                raise PhyspipeError(
                    f"--physpipe-rebuild {name}: there is no stage named {name!r} (stages: "
                    f"{known}). Name a stage, or use `all` to rebuild every stage."
                )

    def finish_collection(self, items: list[pytest.Item]) -> list[StageInstance]:
        """After deselection: check budgets, look up statuses, skip under cached-only."""
        if self._plan_failed:
            return []  # pytest calls this even when mark_items raised; let its error show
        instances = self.planner.instances(items)  # each key once, upstream first
        local = self.settings.backend == "local"
        missing = self._decide_statuses(instances)
        self._check_budget(instances)
        self._check_codecs(instances)
        if not local and not self.settings.plan_only:
            self._backend_factory()  # an unknown backend is an error even with no slow stage
        if self.settings.cached_only and missing:
            for item in items:
                absent = [f for f in self.planner.instances([item]) if self.status(f) == "missing"]
                if absent:
                    names = ", ".join(f"{f.label} ({f.key[:12]})" for f in absent)
                    item.add_marker(
                        pytest.mark.skip(
                            reason=f"--physpipe-cached-only: stage {names} is not in the store "
                            f"{self.store.root}"
                        )
                    )
        if not local and not (
            self.settings.plan_only or self.settings.cached_only or self.settings.no_cache
        ):
            self._start_campaign(instances)
        if not self.settings.plan_only:
            self.runner.read_ahead(i for i in instances if self.statuses[i.key] == "cached")
        return instances

    def status(self, instance: StageInstance) -> str:
        """Whether this run finds ``instance`` stored: decided once per key, at plan time.

        ``cached`` (stored, served as a hit), ``missing`` (to compute), ``rebuild`` (stored,
        recomputed because of ``--physpipe-rebuild``) or ``uncached`` (a ``cache=False`` stage,
        kept in memory only). The plan table, the scheduler's manifest, ``--physpipe-cached-only``
        and the batch campaign all read this one answer.
        """
        status = self.statuses.get(instance.key)
        if status is None:  # an instance the plan did not see (the plan decides all at once)
            self._decide_statuses([instance])
            status = self.statuses[instance.key]
        return status

    def _decide_statuses(self, instances: list[StageInstance]) -> bool:
        """:meth:`status` of every instance of the plan, decided in one loop (the one place
        statuses are decided); whether any is missing. Each stored entry is one ``stat`` of
        its ``meta.json`` (the check :meth:`Store.exists` makes), without the calls around it
        per key."""
        statuses, reasons = self.statuses, self.reasons
        look = not self.settings.no_cache
        entry_path, stat = self.layout.entry_path, os.stat
        rebuild = self.runner.wants_rebuild if self.settings.rebuild else None
        missing = False
        for instance in instances:
            key = instance.key
            status = statuses.get(key)  # decided before, or for an instance of the same key
            if status is None:
                status = "cached" if instance.spec.cache else "uncached"
                if status == "cached":
                    try:
                        mode = stat(f"{entry_path(key)}/meta.json").st_mode if look else 0
                    except (OSError, ValueError):
                        mode = 0
                    if not S_ISREG(mode):
                        status = "missing"
                        reasons[key] = self._why(instance)
                    elif rebuild is not None and rebuild(instance):
                        status = "rebuild"
                statuses[key] = status
            missing = missing or status == "missing"
        return missing

    def _why(self, instance: StageInstance) -> str:
        """Why ``instance`` is missing, against the latest entry of its stage and params."""
        if self.settings.no_cache:
            return "--physpipe-no-cache"
        if not os.path.isdir(self.layout.root):
            return "new"  # no store yet: nothing to compare with (one stat, not a search)
        from pytest_physpipe.reasons import why_missing  # only a miss is explained

        return why_missing(instance, self.store)

    def _check_budget(self, instances: Iterable[StageInstance]) -> None:
        """:class:`ResourceError` for the first instance to compute that asks more than the
        local budget.

        Instances served from the store never start, and slow instances going to a cluster have
        the scheduler's budget: neither is checked (nor, when none is left, is the budget
        detected).
        """
        if self.settings.cached_only:
            return  # nothing computes
        local = self.settings.backend == "local"
        checked: set[int] = set()  # resources are declared per stage: one check each
        statuses = self.statuses
        for instance in instances:
            if (statuses.get(instance.key) or self.status(instance)) == "cached":
                continue  # the usual answer first: nothing else is asked of a cached instance
            if id(instance.spec) in checked or (instance.slow and not local):
                continue
            self.pool.check(instance.spec.resources, stage=instance.label)
            checked.add(id(instance.spec))

    def _check_codecs(self, instances: Iterable[StageInstance]) -> None:
        """A ``codec=`` no registered codec answers to is an error before anything computes."""
        checked: set[int] = set()
        for instance in instances:
            spec = instance.spec
            if id(spec) in checked:
                continue
            checked.add(id(spec))
            if spec.cache and spec.codec != "auto" and spec.codec not in self.codecs:
                known = self.codecs.names()
                raise pytest.UsageError(
                    f"stage {instance.name!r}: codec={spec.codec!r} is not a registered codec "
                    f"(registered: {', '.join(known)}). Use one of them or 'auto', or register "
                    "yours through the pytest_physpipe_register_codecs hook."
                )

    def _backend_factory(self) -> Any:
        """The factory of ``--physpipe-backend``; :class:`BackendError` if none provides it."""
        from pytest_physpipe.cluster.backends import BATCH_BACKENDS

        factories: dict[str, Any] = dict(BATCH_BACKENDS)
        self.config.hook.pytest_physpipe_register_backends(backends=factories)
        name = self.settings.backend
        if name not in factories:
            raise BackendError(
                f"--physpipe-backend {name} (or ini physpipe_backend): no such backend; choose "
                f"local, {', '.join(sorted(factories))}, or one a plugin registers through "
                "pytest_physpipe_register_backends."
            )
        return factories[name]

    def _start_campaign(self, instances: list[StageInstance]) -> None:
        """Submit the slow, missing instances to the batch backend (docs/howto-cluster.md)."""
        # A rebuild goes to the cluster too: nothing slow is recomputed on the submitting host.
        if not any(f.slow and self.status(f) in ("missing", "rebuild") for f in instances):
            return
        from pytest_physpipe.cluster.campaign import Campaign
        from pytest_physpipe.cluster.interrupts import CancelOnInterrupt, terminal_say
        from pytest_physpipe.cluster.job import hook_plugins

        name = self.settings.backend
        factory = self._backend_factory()
        default_args = {"slurm": self.settings.slurm_args, "pbs": self.settings.pbs_args}
        campaign = Campaign(
            backend=factory(),
            store=self.store,
            runner=self.runner,
            planner=self.planner,
            run_id=self.run_id,
            rootdir=Path(self.config.rootpath),
            cwd=Path(self.config.invocation_params.dir),
            default_args=default_args.get(name, ()),
            say=terminal_say(self.config),
            submit_rate=_submit_rate(self.config),
            arrays=bool(self.config.getini("physpipe_job_arrays")),
            pack_walltime_s=_pack_walltime(self.config),
            plugins=hook_plugins(self.config.pluginmanager.get_plugins()),
        )
        try:
            self.store.ensure()
            campaign.check()
            self.campaign = campaign
            self.config.pluginmanager.register(CancelOnInterrupt(campaign))
            campaign.submit(instances)
        except PhyspipeError:
            campaign.cancel()
            raise
        finally:
            # What the campaign computed here for its jobs counts as computed by this run.
            for key, served in campaign.local.items():
                self.records[key] = served.record
                self._values[key] = served

    # -- running --------------------------------------------------------------------------------

    def instance_for(self, spec: StageSpec, request: pytest.FixtureRequest) -> StageInstance:
        """The planned instance a stage fixture's request stands for."""
        upstream_keys = {name: self._current[name] for name in spec.upstream}
        instance = self.planner.for_request(spec, getattr(request, "param", MISSING), upstream_keys)
        # pytest keeps one value per session fixture at a time and re-runs dependents when an
        # upstream param changes, so "the current instance of each stage" is well defined.
        self._current[spec.name] = instance.key
        return instance

    def _materialize(self, instance: StageInstance) -> Any:
        """The value of an instance no fixture provides (a gathered one), upstream first."""
        __tracebackhide__ = True
        memo = self._values.get(instance.key)
        if memo is not None:
            return memo.value
        upstream: dict[str, Any] = {}
        if not (self.campaign is not None and instance.slow and instance.spec.cache):
            for name, key in instance.upstream.items():
                above = self.planner.get(key)
                if above is not None:
                    upstream[name] = self._materialize(above)
        return self.serve(instance, upstream)

    def serve(self, instance: StageInstance, upstream: dict[str, Any]) -> Any:
        """The value of ``instance``: memoized, a hit, computed, or waited for from a job."""
        __tracebackhide__ = True
        memo = self._values.get(instance.key)
        if memo is not None:
            return memo.value
        spec = instance.spec
        if self.settings.cached_only and spec.cache:
            served = self._cached_only(instance)  # or a skip naming why there is no hit
            self.records[instance.key] = served.record
            self._values[instance.key] = served
            return served.value
        hit = None
        if instance.gathered and spec.cache and not self.settings.no_cache:
            hit = self.runner.lookup(instance)  # a cached gather loads none of what it gathered
        if instance.gathered and hit is None:
            upstream = {**upstream, **self.planner.gathered_values(instance, self._materialize)}
        try:
            if hit is not None:
                served = hit
            elif self.settings.no_cache and spec.cache:
                self.store.ensure()
                served = self.runner.compute_uncached(instance, upstream)
            elif self.campaign is not None and instance.slow and spec.cache:
                # A job this run submitted or joined reports as such, even when it is done.
                in_flight = instance.key in self.campaign.job_ids
                served = (None if in_flight else self.runner.lookup(instance)) or self._from_job(
                    instance
                )
            else:
                served = self.runner.provide(instance, upstream)
        except BaseException as exc:
            from pytest_physpipe.execute import record_for

            self.records[instance.key] = record_for(instance, "failed", self.worker, error=exc)
            raise
        record = served.record
        if record.status in ("computed", "loaded-from-job") and record.reason is None:
            record = record.model_copy(update={"reason": self._computed_because(instance)})
        self.records[instance.key] = record
        self._values[instance.key] = served
        return served.value

    def isolate_arguments(self, item: pytest.Function) -> None:
        """Give a test its own copy of every stage value it receives (``cache=False`` aside).

        pytest hands one session fixture value to every test; the pristine value stays with
        the fixture (and feeds downstream stages), the test edits only its copy.
        """
        arguments = item.funcargs
        for name, instance in self.planner.for_item(item).items():
            if name not in arguments or not instance.spec.cache:
                continue
            record = self.records.get(instance.key)
            plain = record is not None and record.codec == "json"
            arguments[name] = isolate(arguments[name], plain=plain)

    def _cached_only(self, instance: StageInstance) -> Served:
        """A hit, or a skip naming why there is none (missing, or an entry it cannot load)."""
        hit = self.runner.lookup(instance)
        if hit is not None:
            return hit
        try:
            problem = "is not in" if self.store.load(instance.key) is None else "is not usable in"
        except CorruptEntryError as exc:
            problem = f"has an entry that is corrupt or unusable ({exc}; run `physpipe verify`) in"
        from pytest_physpipe.execute import record_for

        self.records[instance.key] = record_for(instance, "skipped", self.worker)
        pytest.skip(
            f"--physpipe-cached-only: stage {instance.label} ({instance.key[:12]}) {problem} "
            f"the store {self.store.root}"
        )

    # -- results --------------------------------------------------------------------------------

    def _computed_because(self, instance: StageInstance) -> str:
        reason = self.reasons.get(instance.key)
        if reason is not None:
            return reason
        if self.runner.wants_rebuild(instance):
            return "--physpipe-rebuild"
        return "entry could not be loaded"  # cached when planned: see the warning above

    def _from_job(self, instance: StageInstance) -> Served:
        __tracebackhide__ = True
        assert self.campaign is not None
        if instance.key not in self.campaign.job_ids:
            # Needed at run time but not planned (an override the plan could not see): its
            # chain goes out now.
            self.campaign.submit(self.planner.upstream_first([instance]))
        return self.campaign.wait(instance)

    def close(self) -> None:
        if self.campaign is not None:
            self.campaign.close()
        store: Store | None = self.__dict__.get("store")  # a plan made none
        if store is not None:
            store.flush()  # this process's index notes; the sync of its commits
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


class PhyspipeFixture:
    """The ``physpipe`` fixture: provenance of the stage instances the current test uses."""

    def __init__(self, session: PhyspipeSession, item: pytest.Item) -> None:
        self._session = session
        self._item = item

    def record(self, name: str) -> StageRecord:
        """The :class:`StageRecord` of stage ``name`` as this test used it."""
        __tracebackhide__ = True
        instances = self._session.planner.for_item(self._item)
        instance = instances.get(name)
        if instance is None:
            used = ", ".join(sorted(instances)) or "none"
            raise PhyspipeError(
                f"physpipe.record({name!r}): test {self._item.nodeid} does not use a stage "
                f"named {name!r} (it uses: {used}). Add the stage as a parameter of the test."
            )
        record = self._session.records.get(instance.key)
        if record is None:
            raise PhyspipeError(
                f"physpipe.record({name!r}): stage {instance.label} has not been set up yet"
            )
        return record

    def records(self) -> dict[str, StageRecord]:
        """Every stage this test uses, by name."""
        return {name: self.record(name) for name in self._session.planner.for_item(self._item)}

    def config(self, name: str) -> Any:
        """The config of stage ``name`` as this test's instance of it runs (``None`` for a
        stage without one)."""
        __tracebackhide__ = True
        instances = self._session.planner.for_item(self._item)
        if name not in instances:
            used = ", ".join(sorted(instances)) or "none"
            raise PhyspipeError(
                f"physpipe.config({name!r}): test {self._item.nodeid} does not use a stage "
                f"named {name!r} (it uses: {used}). Add the stage as a parameter of the test."
            )
        return instances[name].config

    def key(self, name: str) -> str:
        """The provenance key of stage ``name`` for this test (known before it runs)."""
        instances = self._session.planner.for_item(self._item)
        if name not in instances:
            raise PhyspipeError(f"test {self._item.nodeid} does not use a stage named {name!r}")
        return instances[name].key


def stage_provenance(item: pytest.Item) -> dict[str, dict[str, object]]:
    """Per stage the test uses: its key, code fingerprint, config and version (for goldens)."""
    run = item.config.stash.get(RUN, None)
    session = None if run is None else run.existing_session
    if session is None:
        return {}
    return {
        name: {
            "key": instance.key,
            "code": instance.spec.code,
            "config": instance.config_json,
            "version": instance.spec.version,
        }
        for name, instance in sorted(session.planner.for_item(item).items())
    }


def _keywords(param_id: str) -> tuple[str, ...]:
    """The ``-k`` keywords of an instance's id (one per sweep coordinate)."""
    if "-" not in param_id:  # one coordinate (or none): what _id_parts gives, without a list
        return (param_id.replace("=", ":", 1),) if "=" in param_id else ()
    return tuple(part.replace("=", ":", 1) for part in _id_parts(param_id))


def _id_parts(param_id: str | None) -> list[str]:
    """``n=64-length=1.0`` -> ``["n=64", "length=1.0"]`` (a value may hold a ``-``)."""
    if not param_id:
        return []
    if "-" not in param_id:
        return [param_id] if "=" in param_id else []
    return [p for p in re.split(r"-(?=[A-Za-z_][\w.]*=)", param_id) if "=" in p]


def _argnames(mark: pytest.Mark) -> list[str]:
    names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
    if isinstance(names, str):
        return [n.strip() for n in names.split(",") if n.strip()]
    return list(names)


def _say_now(config: pytest.Config) -> Callable[[str], None]:
    """Write a line to the terminal at once, past output capturing (long lock waits)."""

    def say(message: str) -> None:
        import contextlib
        import sys

        capture = config.pluginmanager.get_plugin("capturemanager")
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if reporter is not None:
                reporter.write_line(message)
            else:  # an xdist worker: its stderr is the controller's terminal
                sys.stderr.write(message + "\n")
                sys.stderr.flush()

    return say


def _warn_untracked(names: Iterable[str]) -> None:
    """Warn about ini ``physpipe_track_packages`` entries that are not installed (typos)."""
    missing = [n for n in names if keys.package_versions([n])[n] == "not-installed"]
    if missing:
        import warnings

        from pytest_physpipe.errors import PhyspipeWarning

        warnings.warn(
            PhyspipeWarning(
                f"ini physpipe_track_packages names {', '.join(missing)}, which is not "
                "installed: keys record it as 'not-installed'. Fix the name (as pip spells it) "
                "or remove it."
            ),
            stacklevel=1,
        )


def _pack_walltime(config: pytest.Config) -> int:
    from pytest_physpipe.models import Resources

    text = str(config.getini("physpipe_pack_walltime")).strip() or "0"
    try:
        return 0 if text == "0" else Resources(walltime=text).walltime_s
    except ValueError:
        raise pytest.UsageError(
            f"ini physpipe_pack_walltime = {text!r} is not a walltime: give the longest time a "
            "packed array task may ask for, as Resources(walltime=...) takes it ('5:00', "
            "'1:00:00'), or 0 to run one instance per task."
        ) from None


def _submit_rate(config: pytest.Config) -> float:
    text = str(config.getini("physpipe_submit_rate") or "0")
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if rate < 0:
        raise pytest.UsageError(
            f"ini physpipe_submit_rate = {text!r} is not a rate: give the number of sbatch/qsub "
            "calls per second your site allows (0.5 is one every two seconds), or 0 for no limit."
        )
    return rate

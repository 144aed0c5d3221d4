"""Running stage instances: hit, or compute exactly once under the key's lock, then commit.

:class:`StageRunner` knows nothing of pytest, so a batch job uses it as the pytest session
does. The protocol for one instance:

1. Lock-free load. A valid entry is a hit. A missing entry, or one that vanished or changed
   mid-load, is a miss.
2. On a miss, take the key's lock and look again: another worker may have committed meanwhile.
   A corrupt entry is warned about and recomputed.
3. Compute while holding the stage's resource slots, commit atomically, release the lock.
4. The caller gets the value reloaded from the store, so fresh and cached runs behave alike.
"""

from __future__ import annotations

import inspect
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_physpipe.errors import (
    CorruptEntryError,
    CorruptEntryWarning,
    ForeignSignatureError,
    LockTimeoutError,
    SecretError,
    StoreWriteWarning,
)
from pytest_physpipe.isolation import isolate, readonly_copy
from pytest_physpipe.plan import StageInstance
from pytest_physpipe.readahead import ReadAhead
from pytest_physpipe.records import (
    StageRecord,
    Status,
    base_versions,
    distribution_versions,
    hostname,
    now_iso,
)
from pytest_physpipe.resources import Grant, SlotPool, pinned
from pytest_physpipe.stage import registry
from pytest_physpipe.store.entries import Loaded, Store

if TYPE_CHECKING:  # a hit never computes: these load with the first miss
    from pytest_physpipe.context import StageContext
    from pytest_physpipe.store.locks import KeyLock

__all__ = [
    "NoHooks",
    "PluginHooks",
    "RunnerHooks",
    "Served",
    "StageRunner",
    "error_text",
    "record_for",
]


#: The record fields :meth:`StageRunner._hit_record` fills in for this run.
_HIT_FIELDS = ("status", "param_id", "worker", "codec")


class RunnerHooks(Protocol):
    """Calls out of the runner; the plugin forwards them to the pluggy hooks in hookspecs.py."""

    def stage_start(self, record: StageRecord) -> None: ...

    def stage_end(self, record: StageRecord, status: str) -> None: ...

    def run_stage(self, record: StageRecord, ctx: StageContext, call: Callable[[], Any]) -> Any: ...


class NoHooks:
    """Runner hooks that do nothing but run the stage."""

    def stage_start(self, record: StageRecord) -> None:
        return None

    def stage_end(self, record: StageRecord, status: str) -> None:
        return None

    def run_stage(self, record: StageRecord, ctx: StageContext, call: Callable[[], Any]) -> Any:
        return call()


class PluginHooks:
    """Runner hooks that call the pluggy hooks of :mod:`pytest_physpipe.hookspecs`.

    ``hook`` is a pluggy hook relay: ``config.hook`` in a pytest run, the batch job's own
    plugin manager in :mod:`pytest_physpipe.cluster.job`; both run the same implementations.
    """

    def __init__(self, hook: Any) -> None:
        self._hook = hook

    def stage_start(self, record: StageRecord) -> None:
        self._hook.pytest_physpipe_stage_start(record=record)

    def stage_end(self, record: StageRecord, status: str) -> None:
        self._hook.pytest_physpipe_stage_end(record=record, outcome=status)

    def run_stage(self, record: StageRecord, ctx: StageContext, call: Callable[[], Any]) -> Any:
        return self._hook.pytest_physpipe_run_stage(record=record, ctx=ctx, call=call)


class Served:
    """What :meth:`StageRunner.provide` returns: the value and its record for this run."""

    __slots__ = ("record", "value")

    def __init__(self, value: Any, record: StageRecord) -> None:
        self.value = value
        self.record = record


class StageRunner:
    """Serves stage instances from a store, computing each missing one exactly once."""

    def __init__(
        self,
        *,
        store: Store,
        run_id: str,
        pool: SlotPool | None = None,
        hooks: RunnerHooks | None = None,
        rebuild: frozenset[str] = frozenset(),
        full_verify: bool = False,
        worker: str | None = None,
        extra_versions: dict[str, str] | None = None,
        origin: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        #: Record fields saying where computations run (a batch job: backend, job id).
        self.origin = dict(origin or {})
        self.run_id = run_id
        self.pool = pool
        self.hooks: RunnerHooks = hooks if hooks is not None else NoHooks()
        self.rebuild = rebuild
        self.full_verify = full_verify
        self.worker = worker
        self._extra_versions = dict(extra_versions or {})
        self._live: dict[str, Served] = {}
        self._lock = threading.Lock()
        self._ahead: ReadAhead | None = None

    @cached_property
    def versions(self) -> dict[str, str]:
        """The versions every computed record carries (looked up on the first compute: a
        cached rerun never needs them)."""
        return {**base_versions(), **self._extra_versions}

    # -- the protocol ---------------------------------------------------------------------------

    def wants_rebuild(self, instance: StageInstance) -> bool:
        return "all" in self.rebuild or instance.name in self.rebuild

    def read_ahead(self, planned: Iterable[StageInstance]) -> None:
        """Read the small entries of ``planned`` ahead of their lookups, in this order (the
        order the run looks them up in): see :mod:`pytest_physpipe.readahead`."""
        self._ahead = ReadAhead(
            self.store, ((i.key, i.name) for i in planned), full_verify=self.full_verify
        )

    def lookup(self, instance: StageInstance) -> Served | None:
        """A lock-free hit, or ``None`` (missing, vanished, corrupt, or due for a rebuild)."""
        loaded = None if self._ahead is None else self._ahead.take(instance.key)
        if loaded is None:
            try:
                loaded = self.store.load(instance.key, full_verify=self.full_verify)
            except CorruptEntryError:
                return None  # maybe replaced mid-load; step 2 decides under the lock
            if loaded is None:
                return None
        if (
            self.rebuild
            and self.wants_rebuild(instance)
            and loaded.meta.get("run_id") != self.run_id
        ):
            return None
        return Served(loaded.value, self._hit_record(loaded, instance))

    def provide(self, instance: StageInstance, upstream: dict[str, Any]) -> Served:
        """The value of ``instance``: a hit, or computed exactly once across processes."""
        if not instance.spec.cache:
            return self._provide_live(instance, upstream)
        hit = self.lookup(instance)
        if hit is not None:
            return hit
        self.store.ensure()
        lock = self.store.lock(instance.key, describe=f"stage {instance.label}")
        try:
            lock.acquire()
        except LockTimeoutError:
            raise
        except OSError as exc:  # a full disk or a read-only store: no lock file can be made
            warnings.warn(
                StoreWriteWarning(
                    f"stage {instance.label}: cannot take its lock in {self.store.root} "
                    f"({exc.strerror or exc}); it is computed without caching. Free some space "
                    "or fix the store's permissions."
                ),
                stacklevel=2,
            )
            return self._compute_uncached_value(instance, upstream)
        with _releasing(lock):
            replace = False
            try:
                loaded = self.store.load(instance.key, full_verify=True)
            except ForeignSignatureError as exc:
                warnings.warn(
                    CorruptEntryWarning(
                        f"stage {instance.label}: the store entry {instance.key} is not loaded: "
                        f"{exc}. It is kept for whoever signed it, and this run computes the "
                        "value without caching it. To share a store, give everyone the same "
                        "PHYSPIPE_SECRET."
                    ),
                    stacklevel=2,
                )
                return self._compute_uncached_value(instance, upstream)
            except CorruptEntryError as exc:
                warnings.warn(
                    CorruptEntryWarning(
                        f"stage {instance.label}: the store entry {instance.key} is corrupt "
                        f"({exc}); recomputing it. Nothing corrupt is served; run `physpipe "
                        "verify` to check the rest of the store."
                    ),
                    stacklevel=2,
                )
                loaded, replace = None, True
            if loaded is not None:
                rebuilt_now = loaded.meta.get("run_id") == self.run_id
                if not self.wants_rebuild(instance) or rebuilt_now:
                    return Served(loaded.value, self._hit_record(loaded, instance))
                replace = True
            return self._compute_and_commit(instance, upstream, replace=replace)

    def compute_uncached(self, instance: StageInstance, upstream: dict[str, Any]) -> Served:
        """Compute into a private scratch store (``--physpipe-no-cache``): same round trip."""
        return self._compute_and_commit(instance, upstream, replace=True)

    # -- internals ------------------------------------------------------------------------------

    def _provide_live(self, instance: StageInstance, upstream: dict[str, Any]) -> Served:
        with self._lock:
            live = self._live.get(instance.key)
        if live is not None:
            return live
        with self._workdir(instance) as workdir:
            # Nothing of a cache=False stage is stored: its artifacts go with its work dir.
            value, record, _artifacts = self._compute(instance, upstream, workdir)
        served = Served(value, record)
        self.hooks.stage_end(record, "computed")
        with self._lock:
            return self._live.setdefault(instance.key, served)

    def _hit_record(self, loaded: Loaded, instance: StageInstance) -> StageRecord:
        # Store.load validates a new record from meta.json on every call, so this one is ours
        # to fill in (tests/test_hit_records.py holds the store to that): no copy on a hit.
        # The four fields set directly: what pydantic's __setattr__ does for a model without
        # validate_assignment, less its four round trips through Python frames.
        record = loaded.record
        fields = record.__dict__
        fields["status"] = "hit"
        fields["param_id"] = instance.param_id
        fields["worker"] = self.worker
        fields["codec"] = loaded.meta["codec"]
        record.__pydantic_fields_set__.update(_HIT_FIELDS)
        return record

    def _base_record(self, instance: StageInstance) -> StageRecord:
        return record_for(
            instance,
            "computed",
            self.worker,
            created_at=now_iso(),
            host=hostname(),
            # Provenance, not key: which scipy made this, without scipy invalidating it.
            versions={
                **distribution_versions(instance.spec.code_info.modules),
                **self.versions,
            },
            code=instance.spec.code,
            manifest=instance.manifest,
            **self.origin,
        )

    @contextmanager
    def _workdir(self, instance: StageInstance) -> Iterator[Callable[[], Path]]:
        """A maker of the instance's scratch directory, made only if the stage asks for it
        (``ctx.workdir``, ``ctx.artifact``) and removed at the end."""
        made: list[Path] = []

        def make() -> Path:
            if not made:
                made.append(self.store.scratch(f"work-{instance.key[:12]}"))
            return made[0]

        try:
            yield make
        finally:
            if made:
                shutil.rmtree(made[0], ignore_errors=True)

    def _slots(self, instance: StageInstance) -> AbstractContextManager[Grant]:
        if self.pool is None:
            resources = instance.spec.resources
            return nullcontext(Grant(cpus=resources.cpu, cpu_ids=(), gpu_ids=()))
        return self.pool.hold(instance.spec.resources, stage=instance.label)

    def _compute(
        self, instance: StageInstance, upstream: dict[str, Any], workdir: Callable[[], Path]
    ) -> tuple[Any, StageRecord, dict[str, Path]]:
        """Run the stage in ``workdir``: its value, its record and the artifacts it kept there."""
        record = self._base_record(instance)
        spec = instance.spec
        from pytest_physpipe.context import StageContext

        with self._slots(instance) as grant, pinned(grant):
            ctx = StageContext(
                name=instance.label,
                stage=instance.name,
                key=instance.key,
                config=instance.config,
                workdir=workdir,
                resources=grant,
                mpi=instance.spec.resources.mpi,
            )
            # Each stage gets its own copy of what it consumes: an in-place edit of an
            # upstream value must reach no other consumer, and never the store.
            # (cache=False stages hand over live objects, shared on purpose.)
            kwargs = {
                name: value if _is_live(name) else isolate(value)
                for name, value in upstream.items()
            }
            if spec.config_class is not None:
                kwargs["config"] = instance.config
            if spec.wants_ctx:
                kwargs["ctx"] = ctx
            self.hooks.stage_start(record)
            started = time.perf_counter()
            try:
                value = self._attempts(instance, record, ctx, kwargs)
            except BaseException as exc:
                failed = record.model_copy(
                    update={
                        "status": "failed",
                        "duration_s": time.perf_counter() - started,
                        "error": error_text(exc),
                    }
                )
                self.hooks.stage_end(failed, "failed")
                raise
        record = record.model_copy(
            update={"duration_s": time.perf_counter() - started, "metrics": dict(ctx.metrics)}
        )
        return value, record, dict(ctx.artifacts)

    def _attempts(
        self,
        instance: StageInstance,
        record: StageRecord,
        ctx: StageContext,
        kwargs: dict[str, Any],
    ) -> Any:
        retry = instance.spec.retry
        func = instance.spec.func

        def call() -> Any:
            result = func(**kwargs)
            if inspect.isawaitable(result):
                return _run_coroutine(result)
            return result

        for attempt in range(1, retry.max_attempts + 1):
            try:
                return self.hooks.run_stage(record, ctx, call)
            except retry.on:
                if attempt == retry.max_attempts:
                    raise
                ctx.log.warning(
                    "stage %s failed (attempt %d of %d); retrying",
                    instance.label,
                    attempt,
                    retry.max_attempts,
                    exc_info=True,
                )
                time.sleep(retry.backoff**attempt if retry.backoff else 0.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _compute_uncached_value(self, instance: StageInstance, upstream: dict[str, Any]) -> Served:
        with self._workdir(instance) as workdir:
            # Not cached: its artifacts go with its work dir.
            value, record, _artifacts = self._compute(instance, upstream, workdir)
        self.hooks.stage_end(record, "computed")
        return Served(_as_stored(value), record)

    def _compute_and_commit(
        self, instance: StageInstance, upstream: dict[str, Any], *, replace: bool
    ) -> Served:
        with self._workdir(instance) as workdir:
            value, record, artifacts = self._compute(instance, upstream, workdir)
            try:
                # The store chooses the codec and moves the artifacts out of the work dir.
                self.store.commit(
                    instance.key,
                    value=value,
                    codec=instance.spec.codec,
                    stage=instance.label,
                    record=record,
                    run_id=self.run_id,
                    artifacts=artifacts,
                    replace=replace,
                )
            except (OSError, SecretError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                warnings.warn(
                    StoreWriteWarning(
                        f"stage {instance.label}: its result was not cached "
                        f"({why}); the test gets the value, and nothing partial "
                        f"was left in {self.store.root}"
                        + (" (nor its artifacts)" if artifacts else "")
                        + ". Free some space or fix the store's permissions."
                    ),
                    stacklevel=2,
                )
                self.hooks.stage_end(record, "computed")
                return Served(_as_stored(value), record)
        loaded = self.store.load(instance.key)
        if loaded is None:  # pragma: no cover - we hold the lock; only an outside rm gets here
            raise CorruptEntryError(f"entry {instance.key} vanished right after its commit")
        final = loaded.record.model_copy(
            update={
                "status": "computed",
                "param_id": instance.param_id,
                "worker": self.worker,
                "codec": loaded.meta.get("codec"),
            }
        )
        self.hooks.stage_end(final, "computed")
        return Served(loaded.value, final)


@contextmanager
def _releasing(lock: KeyLock) -> Iterator[None]:
    try:
        yield
    finally:
        lock.release()


def record_for(
    instance: StageInstance,
    status: Status,
    worker: str | None,
    *,
    error: BaseException | None = None,
    **fields: Any,
) -> StageRecord:
    """The record of ``instance`` with ``status``: every record of a run is built here."""
    return StageRecord(
        key=instance.key,
        name=instance.name,
        config=instance.config_json,
        upstream=instance.upstream,
        status=status,
        param_id=instance.param_id,
        worker=worker,
        error=None if error is None else error_text(error),
        **fields,
    )


def error_text(exc: BaseException) -> str:
    """How a record states the error that ended a stage: ``Type: message``."""
    return f"{type(exc).__name__}: {exc}"


def _is_live(stage_name: str) -> bool:
    spec = registry.get(stage_name)
    return spec is not None and not spec.cache


def _as_stored(value: Any) -> Any:
    """In memory, what a reload would give: arrays read-only for good, nothing shared with
    the object the stage returned (which the stage might still hold and edit)."""
    numpy = sys.modules.get("numpy")  # no numpy imported: no value can be an array
    if numpy is not None and isinstance(value, numpy.ndarray) and not value.dtype.hasobject:
        return readonly_copy(value)
    if type(value) is dict:
        return {k: _as_stored(v) for k, v in value.items()}
    if type(value) is list:
        return [_as_stored(v) for v in value]
    if type(value) is tuple:
        return tuple(_as_stored(v) for v in value)
    return isolate(value)


def _run_coroutine(awaitable: Any) -> Any:
    import asyncio  # only async stages pay for importing asyncio
    import concurrent.futures

    async def wrapper() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wrapper())
    # Called from inside a running loop (pytest-asyncio, Jupyter): run it in a fresh thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wrapper()).result()

"""CPU/GPU slots shared by every xdist worker of one run, and pinning a stage to its grant.

The run's budget (``--physpipe-cpus``, ``--physpipe-gpus``) becomes one file per slot in a
directory of the store, ``<root>/slots/<run_id>/``: ``cpu-0.slot`` ... and ``gpu-0.slot`` ...
A process holds a slot by holding a kernel lock (``flock``) on its file, so a worker that dies,
even by SIGKILL, frees its slots at once, and no stale slot can ever block a later run.

A stage takes all of its slots or none: under a short critical section (``alloc.lock``) it
tries the free slot files without blocking, and gives back what it got if that is not enough.
Waiters poll every few milliseconds, so a freed slot is taken within a few milliseconds. A
waiter that has waited a while becomes the *priority waiter* (``priority.lock``, one per run):
it keeps the slots it gets and takes more as they free up, and nobody else takes a slot until
it has all of its own, so a request for many slots is not starved by a stream of small ones.
Only one process is the priority waiter at a time, and it waits only on grants that are
complete and will be released, so it cannot deadlock.

See ``docs/locks-and-slots.md`` for the design and why CPU affinity is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pytest_physpipe.errors import LockTimeoutError, ResourceError
from pytest_physpipe.frozen import FrozenValue
from pytest_physpipe.models import Resources

__all__ = ["THREAD_ENV_VARS", "Budget", "Grant", "SlotPool", "detect_budget", "pinned"]

#: Environment variables that cap the thread pools of BLAS/OpenMP libraries started later
#: (subprocesses, libraries not yet loaded); threadpoolctl caps the ones already loaded.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

_POLL_S = 0.001
_POLL_MAX_S = 0.004
# After this long without a grant, a waiter tries to become the priority waiter.
_PRIORITY_AFTER_S = 0.2
_NVIDIA_SMI_TIMEOUT_S = 5.0
# What flock fails with where the filesystem has no flock (Lustre without -o flock, some FUSE).
_NO_FLOCK = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL})


@dataclass(init=False, repr=False, eq=False)
class Budget(FrozenValue):
    """What one run may use at once on this machine: CPU slots and GPU device ids."""

    cpus: int
    gpu_ids: tuple[str, ...]

    def __init__(self, cpus: int, gpu_ids: tuple[str, ...]) -> None:
        self.__dict__.update(cpus=cpus, gpu_ids=gpu_ids)  # see pytest_physpipe.frozen

    def __str__(self) -> str:
        gpus = ", ".join(self.gpu_ids) if self.gpu_ids else "none"
        return f"{self.cpus} CPU(s) and {len(self.gpu_ids)} GPU(s) (ids: {gpus})"


@dataclass(init=False, repr=False, eq=False)
class Grant(FrozenValue):
    """The slots a running stage holds; a stage sees it as ``ctx.resources``.

    ``cpu_ids`` are slot numbers in ``range(budget.cpus)``, not core numbers: the process's
    CPU affinity is not changed (see ``docs/locks-and-slots.md``). ``gpu_ids`` are device ids
    as ``CUDA_VISIBLE_DEVICES`` spells them.
    """

    cpus: int
    cpu_ids: tuple[int, ...]
    gpu_ids: tuple[str, ...]

    def __init__(self, cpus: int, cpu_ids: tuple[int, ...], gpu_ids: tuple[str, ...]) -> None:
        self.__dict__.update(cpus=cpus, cpu_ids=cpu_ids, gpu_ids=gpu_ids)


# --------------------------------------------------------------------------------------------
# The budget


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        # Honours taskset, cgroups cpusets and Slurm's binding, unlike os.cpu_count().
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _parse_cuda_visible(text: str) -> tuple[str, ...]:
    # CUDA reads the list up to the first invalid entry; "-1" (or "") is the usual "no GPU".
    ids: list[str] = []
    for item in text.split(","):
        item = item.strip()  # noqa: PLW2901  # the loop variable is only ever this token
        if not item or item.startswith("-"):
            break
        ids.append(item)
    return tuple(ids)


def _nvidia_smi_ids() -> tuple[str, ...]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        done = subprocess.run(
            [exe, "-L"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ()  # a broken driver means no usable GPU, not a failed run
    if done.returncode != 0:
        return ()
    count = sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))
    return tuple(str(i) for i in range(count))


def detect_budget(*, cpus: int | None, gpus: int | None) -> Budget:
    """The run's budget; ``None`` means "detect".

    CPUs: the cores this process may run on. GPUs: ``CUDA_VISIBLE_DEVICES`` if set (``""`` or
    ``"-1"`` means none; UUIDs are kept as they are), else one per ``GPU`` line of
    ``nvidia-smi -L``, else none. ``gpus=N`` takes the first N detected ids, or ``"0"`` ..
    ``"N-1"`` where none are detected.
    """
    if cpus is not None and cpus < 1:
        raise ResourceError(
            f"--physpipe-cpus {cpus} is not a CPU budget: give at least 1, or leave it out to "
            "use every core this process may run on."
        )
    if gpus is not None and gpus < 0:
        raise ResourceError(
            f"--physpipe-gpus {gpus} is not a GPU budget: give 0 or more, or leave it out to "
            "use the GPUs in CUDA_VISIBLE_DEVICES (or those nvidia-smi -L lists)."
        )
    cpu_budget = _cpu_count() if cpus is None else cpus
    if gpus == 0:
        return Budget(cpu_budget, ())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    detected = _parse_cuda_visible(visible) if visible is not None else _nvidia_smi_ids()
    if gpus is None:
        return Budget(cpu_budget, detected)
    if not detected:
        return Budget(cpu_budget, tuple(str(i) for i in range(gpus)))
    if gpus > len(detected):
        raise ResourceError(
            f"--physpipe-gpus {gpus} asks for more GPUs than this process can see "
            f"({len(detected)}: {', '.join(detected)}, from "
            f"{'CUDA_VISIBLE_DEVICES' if visible is not None else 'nvidia-smi -L'}). Lower "
            "--physpipe-gpus, or make more devices visible in CUDA_VISIBLE_DEVICES."
        )
    return Budget(cpu_budget, detected[:gpus])


# --------------------------------------------------------------------------------------------
# The slot pool


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class SlotPool:
    """The run's CPU and GPU slots, in the directory ``root`` (``<store>/slots/<run_id>``).

    Every worker of the run builds its own pool on the same directory and the same budget.
    """

    def __init__(self, root: Path, budget: Budget | Callable[[], Budget]) -> None:
        """``budget``, or the function that detects it on first need: detecting GPUs runs
        ``nvidia-smi``, which a run that computes nothing (a cached rerun) does not pay for."""
        self.root = Path(root)
        self._budget = budget

    @functools.cached_property
    def budget(self) -> Budget:
        return self._budget if isinstance(self._budget, Budget) else self._budget()

    @functools.cached_property
    def _files(self) -> dict[str, str]:
        """Slot name -> its file (paths built once: a hold happens per computed instance)."""
        names = [f"cpu-{i}.slot" for i in range(self.budget.cpus)]
        names += [f"gpu-{i}.slot" for i in range(len(self.budget.gpu_ids))]
        names += ["alloc.lock", "priority.lock"]
        return {name.rpartition(".")[0]: os.path.join(self.root, name) for name in names}

    def check(self, resources: Resources, *, stage: str) -> None:
        """Raise :class:`ResourceError` if ``resources`` can never fit in the budget."""
        if resources.cpu_slots <= self.budget.cpus and resources.gpu <= len(self.budget.gpu_ids):
            return
        raise ResourceError(
            f"Stage {stage!r} asks for {resources.cpu_slots} CPU(s) and {resources.gpu} GPU(s), "
            f"but this run's budget is {self.budget}, so it could never start. Raise the budget "
            "with --physpipe-cpus / --physpipe-gpus (ini physpipe_cpus / physpipe_gpus), lower "
            "the stage's Resources(cpu=..., gpu=...), or mark it slow=True and dispatch it to "
            "a cluster with --physpipe-backend slurm (or pbs)."
        )

    @contextlib.contextmanager
    def hold(
        self, resources: Resources, *, stage: str, timeout: float | None = None
    ) -> Iterator[Grant]:
        """Wait for and hold ``resources``' slots, all of them at once, while inside.

        ``timeout`` (seconds, ``None`` = forever) raises :class:`LockTimeoutError`.
        """
        self.check(resources, stage=stage)
        fds = self._open()
        try:
            try:
                cpu_slots, gpu_slots = self._acquire(fds, resources, stage=stage, timeout=timeout)
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    raise
                raise ResourceError(
                    f"Cannot hold resource slots for stage {stage!r}: the filesystem of "
                    f"{self.root} does not support flock ({exc.strerror}). Put the store on a "
                    "filesystem that does (--physpipe-dir), or ask the administrator to mount "
                    "this one with flock support (Lustre: -o flock)."
                ) from exc
            # Close the slot files we do not hold; closing a held one would drop its lock.
            held = {f"cpu-{i}" for i in cpu_slots} | {f"gpu-{i}" for i in gpu_slots}
            for name in [name for name in fds if name not in held]:
                os.close(fds.pop(name))
            yield Grant(
                cpus=resources.cpu,
                cpu_ids=tuple(cpu_slots),
                gpu_ids=tuple(self.budget.gpu_ids[i] for i in gpu_slots),
            )
        finally:
            for fd in fds.values():
                # Unlock, not just close: a child forked inside the stage shares these open
                # files, and would otherwise keep the slots for as long as it lives.
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    # -- internals --------------------------------------------------------------------------

    def _open(self) -> dict[str, int]:
        """One fresh descriptor per slot file (flock locks belong to an open file, so
        descriptors of their own make two holds in one process exclude each other too)."""
        fds: dict[str, int] = {}
        try:
            for name, path in self._files.items():
                try:
                    fds[name] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                except FileNotFoundError:  # the first hold of the run makes the directory
                    self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                    fds[name] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        return fds

    def _acquire(
        self,
        fds: dict[str, int],
        resources: Resources,
        *,
        stage: str,
        timeout: float | None,
    ) -> tuple[list[int], list[int]]:
        started = time.monotonic()
        cpus: list[int] = []
        gpus: list[int] = []
        priority = False
        poll = _POLL_S
        try:
            while True:
                with self._critical(fds["alloc"]):
                    done = False
                    # While a priority waiter gathers its slots, nobody else takes any.
                    if priority or not self._priority_taken(fds["priority"]):
                        self._take(fds, "cpu", self.budget.cpus, resources.cpu_slots, cpus)
                        self._take(fds, "gpu", len(self.budget.gpu_ids), resources.gpu, gpus)
                        done = len(cpus) == resources.cpu_slots and len(gpus) == resources.gpu
                    if not done and not priority:
                        # All or nothing: give back a partial grant so others can use it.
                        self._give_back(fds, cpus, gpus)
                if done:
                    return cpus, gpus
                waited = time.monotonic() - started
                if timeout is not None and waited >= timeout:
                    self._raise_timeout(resources, stage=stage, waited=waited)
                if not priority and waited >= _PRIORITY_AFTER_S:
                    priority = _try_flock(fds["priority"])
                time.sleep(poll)
                poll = min(poll * 1.5, _POLL_MAX_S)
        except BaseException:
            self._give_back(fds, cpus, gpus)
            raise
        finally:
            if priority:
                fcntl.flock(fds["priority"], fcntl.LOCK_UN)

    @staticmethod
    @contextlib.contextmanager
    def _critical(fd: int) -> Iterator[None]:
        # Held for a handful of non-blocking syscalls, so a blocking wait is short; a holder
        # that dies inside it releases it with its descriptors.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @staticmethod
    def _priority_taken(fd: int) -> bool:
        if _try_flock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True

    @staticmethod
    def _take(fds: dict[str, int], kind: str, total: int, want: int, got: list[int]) -> None:
        for index in range(total):
            if len(got) >= want:
                return
            if index not in got and _try_flock(fds[f"{kind}-{index}"]):
                got.append(index)
        got.sort()

    @staticmethod
    def _give_back(fds: dict[str, int], cpus: list[int], gpus: list[int]) -> None:
        for index in cpus:
            fcntl.flock(fds[f"cpu-{index}"], fcntl.LOCK_UN)
        for index in gpus:
            fcntl.flock(fds[f"gpu-{index}"], fcntl.LOCK_UN)
        cpus.clear()
        gpus.clear()

    def _raise_timeout(self, resources: Resources, *, stage: str, waited: float) -> NoReturn:
        raise LockTimeoutError(
            f"Timed out after {waited:.1f} s waiting for {resources.cpu_slots} CPU slot(s) and "
            f"{resources.gpu} GPU slot(s) for stage {stage!r} (budget: {self.budget}; slots in "
            f"{self.root}). Other stages of this run hold them: raise the timeout or the "
            "budget (--physpipe-cpus / --physpipe-gpus), or lower the stage's Resources."
        )


# --------------------------------------------------------------------------------------------
# Pinning


@contextlib.contextmanager
def pinned(grant: Grant) -> Iterator[None]:
    """Limit thread pools to ``grant.cpus`` and show only ``grant.gpu_ids``, while inside.

    Sets :data:`THREAD_ENV_VARS` and ``CUDA_VISIBLE_DEVICES`` (empty: no GPU) for anything
    started inside (subprocesses, libraries loaded later) and caps the BLAS/OpenMP pools
    already loaded with threadpoolctl. Everything is restored on exit; variables that were
    unset are unset again. A CUDA context created before entering keeps the devices it saw.
    """
    wanted = dict.fromkeys(THREAD_ENV_VARS, str(grant.cpus))
    wanted["CUDA_VISIBLE_DEVICES"] = ",".join(grant.gpu_ids)
    saved = {name: os.environ.get(name) for name in wanted}
    try:
        os.environ.update(wanted)
        controller = _pools()
        if controller.lib_controllers:
            with controller.limit(limits=grant.cpus):
                yield
        else:
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Pools:
    """The thread pools threadpoolctl finds, found again only when a shared library was loaded
    or unloaded since (its search walks every loaded library through a Python callback: about
    a millisecond, on every computed instance if done each time)."""

    def __init__(self) -> None:
        self.controller: Any = None
        self.seen: tuple[int, int] | None = None


_pools_found = _Pools()


def _pools() -> Any:
    from threadpoolctl import ThreadpoolController

    seen = _loaded_libraries()
    if _pools_found.controller is None or seen is None or seen != _pools_found.seen:
        _pools_found.controller = ThreadpoolController()
        _pools_found.seen = seen
    return _pools_found.controller


def _loaded_libraries() -> tuple[int, int] | None:
    """How many times a shared library was loaded and unloaded in this process (glibc's
    ``dl_iterate_phdr`` counters), or ``None`` where they cannot be read: then the pools are
    searched every time."""
    count = _library_counter()
    return None if count is None else count()


@functools.cache
def _library_counter() -> Callable[[], tuple[int, int] | None] | None:
    import ctypes  # here: only a computed instance needs it

    class PhdrInfo(ctypes.Structure):
        # The head of glibc's struct dl_phdr_info, up to its load and unload counters.
        _fields_ = (
            ("addr", ctypes.c_void_p),
            ("name", ctypes.c_char_p),
            ("phdr", ctypes.c_void_p),
            ("phnum", ctypes.c_uint16),
            ("adds", ctypes.c_ulonglong),
            ("subs", ctypes.c_ulonglong),
        )

    try:
        iterate = ctypes.CDLL(None).dl_iterate_phdr
    except (OSError, AttributeError):
        return None
    found: list[tuple[int, int]] = []

    def first(info: Any, size: int, _data: Any) -> int:
        if size >= ctypes.sizeof(PhdrInfo):
            found.append((info.contents.adds, info.contents.subs))
        return 1  # stop after the first object: the counters are the process's

    callback = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(PhdrInfo), ctypes.c_size_t, ctypes.c_void_p
    )(first)

    def count() -> tuple[int, int] | None:
        found.clear()
        iterate(callback, None)
        return found[0] if found else None

    return count

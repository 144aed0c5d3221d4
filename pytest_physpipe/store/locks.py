"""Per-key locks for the store: one process computes a missing entry, the others wait.

Two kinds of lock, picked by ini ``physpipe_lock`` (see ``docs/locks-and-slots.md``):

``flock``
    A kernel lock (``fcntl.flock``) on ``<root>/locks/<key>.lock``. The kernel drops it when
    its holder exits, however it exits (SIGKILL included), so a flock lock can never be stale.
    It does not exclude across the clients of a network filesystem (NFS, Lustre, ...).

``soft``
    The lock *is* the file: created with ``O_CREAT | O_EXCL`` (atomic on NFSv3+), holding JSON
    that names the holder (host, pid, token, start time, heartbeat period). A daemon thread
    touches its mtime while it is held. A waiter breaks it only when the holder is provably
    gone: it ran on this host and its pid is dead (or reused), or, from another host, its
    heartbeat has stopped for the stale threshold.

This module is POSIX-only (``fcntl``), as are the clusters it serves.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NoReturn

from pytest_physpipe.errors import LockTimeoutError
from pytest_physpipe.store.hosts import owner_alive, owner_info, same_host, this_host

__all__ = ["WAIT_REPORT_S", "KeyLock", "try_lock"]


def _log() -> logging.Logger:
    # Made on first use: pytest's log capture visits every logger in logging's registry at
    # every phase of every test, so a logger made at import costs each test of a run.
    return logging.getLogger(__name__)


# A waiter must see a release within a few milliseconds (workers wait on each other's
# stages); flock has no portable "wait with timeout", so waiters poll with a non-blocking try.
# A try is one syscall (~1 us), so even long waits cost little CPU.
_FLOCK_POLL_S = 0.001
_FLOCK_POLL_MAX_S = 0.002
# Soft locks live on network filesystems, where every poll is a round trip to the server:
# start fast (a local release is seen quickly), back off to a rate the server does not notice.
_SOFT_POLL_S = 0.002
_SOFT_POLL_MAX_S = 0.05

DEFAULT_STALE_AFTER_S = 30.0
#: How often a waiter says who holds the lock it waits for (seconds).
WAIT_REPORT_S = 60.0
DEFAULT_HEARTBEAT_S = 2.0
# A holder promises a heartbeat every ``heartbeat_s``; a waiter never judges it stale sooner
# than this many periods, whatever its own threshold, so mismatched settings stay safe.
_MISSED_BEATS = 3


# --------------------------------------------------------------------------------------------
# Soft-lock file contents


@dataclass(frozen=True)
class _Seen:
    """One observation of a soft lock file: what it says and whether it has changed."""

    ino: int
    mtime_ns: int
    size: int
    info: dict[str, Any] | None  # None: empty or half-written (its creator may still write)

    @property
    def signature(self) -> tuple[int, int, int, str | None]:
        return (self.ino, self.mtime_ns, self.size, self.token)

    @property
    def token(self) -> str | None:
        value = None if self.info is None else self.info.get("token")
        return value if isinstance(value, str) else None


def _observe(path: Path) -> _Seen | None:
    """Read a soft lock file; ``None`` if there is none.

    Opening the file (rather than ``stat``-ing the path) matters on NFS: close-to-open
    consistency makes the client revalidate its cached attributes, so the mtime is fresh.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    info: dict[str, Any] | None
    try:
        loaded = json.loads(data.decode("utf-8"))
        info = loaded if isinstance(loaded, dict) else None
    except (UnicodeDecodeError, ValueError):
        info = None
    return _Seen(st.st_ino, st.st_mtime_ns, st.st_size, info)


_string = json.encoder.encode_basestring_ascii


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: a short write (a file size limit) is retried, so it raises."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "an unknown process (the lock file is empty or unreadable)"
    host = info.get("host", "?")
    pid = info.get("pid", "?")
    what = info.get("describe") or ""
    started = info.get("started")
    since = ""
    if isinstance(started, (int, float)):
        age = max(0.0, time.time() - started)
        since = (
            f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
            f" ({age:.0f} s ago)"
        )
    return f"pid {pid} on host {host}{f' ({what})' if what else ''}{since}"


# --------------------------------------------------------------------------------------------
# The lock


class KeyLock:
    """An exclusive, non-reentrant lock on one store key, shared by processes and hosts.

    ``timeout`` (seconds, ``None`` = wait forever) bounds a blocking :meth:`acquire`; on expiry
    it raises :class:`~pytest_physpipe.errors.LockTimeoutError` naming ``describe`` (the stage),
    the lock file and its holder. ``stale_after`` and ``heartbeat`` only matter in soft mode:
    a soft lock whose holder runs on another host is broken after its heartbeat has not
    changed for ``max(stale_after, 3 * the holder's heartbeat period)`` seconds.

    No wait is silent: every ``report_every`` seconds a waiting :meth:`acquire` calls
    ``on_wait`` (default: a logged warning) with a sentence naming the holder (host, pid, what
    it computes) and how long it has held the lock.

    One instance is used by one thread at a time. Two instances on the same path exclude each
    other, in one process as in two.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mode: Literal["flock", "soft"],
        timeout: float | None = None,
        describe: str = "",
        stale_after: float = DEFAULT_STALE_AFTER_S,
        heartbeat: float = DEFAULT_HEARTBEAT_S,
        on_wait: Callable[[str], None] | None = None,
        report_every: float = WAIT_REPORT_S,
    ) -> None:
        if mode not in ("flock", "soft"):
            raise ValueError(f"KeyLock mode must be 'flock' or 'soft', not {mode!r}")
        if stale_after <= 0 or heartbeat <= 0:
            raise ValueError("KeyLock stale_after and heartbeat must be positive")
        self._file = os.fspath(path)  # a plain string: a miss takes the lock, no pathlib
        self._path: Path | None = None
        self.mode: Literal["flock", "soft"] = mode
        self.timeout = timeout
        self.describe = describe
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.on_wait = on_wait
        self.report_every = report_every
        self._next_report = report_every
        self._fd: int | None = None  # flock: the locked descriptor
        self._token: str | None = None  # soft: our token in the lock file
        self._beat_stop: threading.Event | None = None
        self._beat_thread: threading.Thread | None = None
        self._lost = False

    # -- public API -------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The lock file."""
        if self._path is None:
            self._path = Path(self._file)
        return self._path

    @property
    def held(self) -> bool:
        """Whether this instance holds the lock."""
        return self._fd is not None or self._token is not None

    @property
    def lost(self) -> bool:
        """Soft mode: the heartbeat found the lock file gone or someone else's (see docs)."""
        return self._lost

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; ``False`` only when ``blocking=False`` and someone else holds it."""
        if self.held:
            raise RuntimeError(f"KeyLock {self.path} is already held by this instance")
        try:
            return self._acquire(blocking)
        except FileNotFoundError:
            if self.path.parent.is_dir():
                raise
        # The first lock of this store (or `locks/` was removed): make the folder, once.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self._acquire(blocking)

    def _acquire(self, blocking: bool) -> bool:
        if self.mode == "flock":
            return self._acquire_flock(blocking)
        return self._acquire_soft(blocking)

    def release(self, *, remove: bool = False) -> None:
        """Let go of the lock (a no-op if not held).

        Soft lock files are always removed, and only while they still hold our token. flock
        files are kept by default: unlinking a file others may have opened is the classic
        flock race. ``remove=True`` unlinks it *while still holding it*, which is safe because
        :meth:`acquire` checks, once it holds a descriptor, that the path still names that
        very file, and starts over if not. ``physpipe prune`` uses it to tidy ``locks/``.
        """
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if remove:
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
            finally:
                # Unlock before closing: a child forked while we held it shares the open file,
                # and closing only our descriptor would leave the lock held for its lifetime.
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        elif self._token is not None:
            self._stop_heartbeat()
            token, self._token = self._token, None
            seen = _observe(self.path)
            if seen is not None and seen.token == token:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            else:
                _log().warning(
                    "physpipe: soft lock %s was no longer ours at release (%s)",
                    self.path,
                    "gone" if seen is None else f"held by {_describe_holder(seen.info)}",
                )

    def holder(self) -> str:
        """Who holds the lock now, in words, as read from the lock file (best effort)."""
        try:
            seen = _observe(self.path)
        except OSError as exc:
            return f"unknown ({exc})"
        if seen is None:
            return "nobody (the lock file is gone)"
        return _describe_holder(seen.info)

    def __enter__(self) -> KeyLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "free"
        return f"KeyLock({str(self.path)!r}, mode={self.mode!r}, {state})"

    # -- flock ------------------------------------------------------------------------------

    def _acquire_flock(self, blocking: bool) -> bool:
        started = time.monotonic()
        while True:
            fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                got = self._wait_flock(fd, blocking=blocking, started=started)
                # A lock on the file we opened only counts if the path still names that
                # file: a holder may have unlinked it with release(remove=True).
                size = self._still_named(fd) if got else -1
            except BaseException:
                os.close(fd)
                raise
            if size >= 0:
                self._fd = fd
                self._write_flock_info(fd, size)
                return True
            os.close(fd)
            if not got:
                return False
            # Lost the file to an unlink: open the new one and try again.

    def _wait_flock(self, fd: int, *, blocking: bool, started: float) -> bool:
        poll = _FLOCK_POLL_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                return True
            if not blocking:
                return False
            waited = time.monotonic() - started
            if self.timeout is not None and waited >= self.timeout:
                self._raise_timeout(waited)
            if waited >= self._next_report:
                self._report_wait(waited, None)
            if waited > 0.5:
                poll = _FLOCK_POLL_MAX_S
            time.sleep(poll)

    def _still_named(self, fd: int) -> int:
        """The size of the file open at ``fd`` if the path still names it, else -1."""
        held = os.fstat(fd)
        try:
            named = os.stat(self._file)
        except FileNotFoundError:
            return -1
        return held.st_size if os.path.samestat(held, named) else -1

    def _write_flock_info(self, fd: int, size: int) -> None:
        # Only for error messages (who holds it); waiters never truncate, so this is safe.
        # What json.dumps of that dict gives, without building and walking the dict.
        info = (
            f'{{"host": {_string(this_host().name)}, "pid": {os.getpid()}, '
            f'"describe": {_string(self.describe)}, "started": {time.time()!r}}}'
        )
        try:
            if size:  # a lock file taken before holds its last holder's record
                os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        except OSError as exc:  # a full disk must not turn a held lock into a failure
            _log().debug("physpipe: could not record the holder in %s: %s", self.path, exc)

    # -- soft -------------------------------------------------------------------------------

    def _acquire_soft(self, blocking: bool) -> bool:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        started = time.monotonic()
        poll = _SOFT_POLL_S
        # What we last saw of the lock file and since when (local monotonic time): a heartbeat
        # is judged stopped by our own clock, so clock skew between hosts does not matter.
        last: _Seen | None = None
        since = started
        while True:
            if self._try_create():
                return True
            seen = _observe(self.path)
            now = time.monotonic()
            if seen is None:
                continue  # released between our create and our look: try again at once
            if last is None or seen.signature != last.signature:
                last, since = seen, now
            if self._provably_gone(seen, unchanged_for=now - since) and self._break(seen):
                continue
            if not blocking:
                return False
            if deadline is not None and now >= deadline:
                self._raise_timeout(now - started, seen.info)
            if now - started >= self._next_report:
                self._report_wait(now - started, seen.info)
            time.sleep(poll)
            poll = min(poll * 1.5, _SOFT_POLL_MAX_S)

    def _try_create(self) -> bool:
        token = uuid.uuid4().hex
        info = {
            **owner_info(),
            "token": token,
            "started": time.time(),
            "heartbeat_s": self.heartbeat,
            "describe": self.describe,
        }
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            _write_all(fd, json.dumps(info).encode())
            os.fsync(fd)
        except BaseException:
            # We created it, so it is ours: do not leave a half-written lock behind.
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        os.close(fd)
        self._token = token
        self._lost = False
        self._start_heartbeat(token)
        return True

    def _provably_gone(self, seen: _Seen, *, unchanged_for: float) -> bool:
        """Whether the holder of ``seen`` is gone for sure (never while it lives)."""
        info = seen.info
        if info is not None and same_host(info):
            # Same host: the kernel knows (a zombie is dead). A live holder is never broken,
            # however slow.
            return not owner_alive(info)
        # Another host (or a file not yet written): only a stopped heartbeat tells.
        period = info.get("heartbeat_s") if info is not None else None
        beats = float(period) * _MISSED_BEATS if isinstance(period, (int, float)) else 0.0
        return unchanged_for > max(self.stale_after, beats)

    def _break(self, judged: _Seen) -> bool:
        """Remove the stale lock file ``judged``, unless it changed; ``True`` if we did.

        Breakers serialize on a guard file (``<lock>.break``, itself created with O_EXCL) and
        re-read the lock under it: if two waiters judge the same file stale, the first removes
        it and the second finds a different file (another token) and leaves it alone. A guard
        left by a breaker that died is itself broken once it is old (see ``_clear_guard``).
        """
        guard = self.path.with_name(self.path.name + ".break")
        token = uuid.uuid4().hex
        try:
            fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            self._clear_guard(guard)
            return False
        try:
            os.write(fd, token.encode())
        finally:
            os.close(fd)
        try:
            now = _observe(self.path)
            if now is None:
                return True  # already gone: the caller tries to create it
            if now.signature != judged.signature:
                return False  # re-acquired, or its heartbeat moved: not stale after all
            _log().warning(
                "physpipe: breaking stale lock %s held by %s",
                self.path,
                _describe_holder(judged.info),
            )
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                if guard.read_bytes() == token.encode():
                    guard.unlink()

    def _clear_guard(self, guard: Path) -> None:
        # A guard is held for a few milliseconds; one older than the stale threshold was left
        # by a breaker that died. Move it aside under a unique name, then check that what we
        # moved is the old guard (a fresh one is put back), so two clearers cannot collide.
        try:
            age = time.time() - guard.stat().st_mtime
        except FileNotFoundError:
            return
        if age < self.stale_after:
            return
        aside = guard.with_name(f"{guard.name}.{uuid.uuid4().hex}")
        try:
            guard.rename(aside)
        except FileNotFoundError:
            return
        try:
            if time.time() - aside.stat().st_mtime < self.stale_after:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, guard)
        finally:
            aside.unlink()

    def _start_heartbeat(self, token: str) -> None:
        stop = threading.Event()
        thread = threading.Thread(
            target=self._beat,
            args=(token, stop),
            name=f"physpipe-heartbeat-{self.path.name}",
            daemon=True,  # it must never keep the interpreter alive
        )
        self._beat_stop, self._beat_thread = stop, thread
        thread.start()

    def _beat(self, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                self._mark_lost("the lock file is gone")
                return
            except OSError as exc:
                _log().warning("physpipe: heartbeat of %s failed: %s", self.path, exc)
                continue
            try:
                data = os.read(fd, 65536)
                if token.encode() not in data:
                    self._mark_lost("another process holds it now")
                    return
                # Touch through our descriptor: never the path, which may name another file.
                os.utime(fd)
            except OSError as exc:  # a hiccup on the server: try again next period
                _log().warning("physpipe: heartbeat of %s failed: %s", self.path, exc)
            finally:
                os.close(fd)

    def _mark_lost(self, why: str) -> None:
        self._lost = True
        _log().warning(
            "physpipe: soft lock %s was lost while held (%s); a stage may be computed twice, "
            "which the store's atomic commit tolerates",
            self.path,
            why,
        )

    def _stop_heartbeat(self) -> None:
        if self._beat_stop is not None:
            self._beat_stop.set()
        if self._beat_thread is not None and self._beat_thread is not threading.current_thread():
            self._beat_thread.join()
        self._beat_stop = self._beat_thread = None

    # -- waiting and errors ---------------------------------------------------------------

    def _report_wait(self, waited: float, info: dict[str, Any] | None) -> None:
        self._next_report = waited + self.report_every
        holder = _describe_holder(info) if self.mode == "soft" else self.holder()
        what = self.describe or "a store key"
        message = (
            f"physpipe: still waiting for the lock of {what} after {waited:.0f} s; it is held by "
            f"{holder} ({self.path}). It is released when that process finishes the stage or "
            "dies; if it is stuck, stop it."
        )
        if self.on_wait is None:
            _log().warning("%s", message)
        else:
            self.on_wait(message)

    def _raise_timeout(self, waited: float, info: dict[str, Any] | None = None) -> NoReturn:
        what = f"the lock of {self.describe}" if self.describe else "a store lock"
        if self.mode == "soft":
            holder = _describe_holder(info)
            advice = (
                f"If that process still runs, let it finish or stop it, or raise the timeout. "
                f"If no other pytest is running on any host using this store, delete {self.path} "
                "and run again (a soft lock of a dead process on this host is broken "
                f"automatically; from another host, after {self.stale_after:.0f} s without a "
                "heartbeat)."
            )
        else:
            holder = self.holder()
            advice = (
                "flock locks are released by the kernel when their holder exits, so a live "
                "process holds it: let it finish or stop it, or raise the timeout. If the store "
                "is on a network filesystem shared by several hosts, set the ini option "
                "physpipe_lock = soft."
            )
        raise LockTimeoutError(
            f"Timed out after {waited:.1f} s waiting for {what} at {self.path}; it is held by "
            f"{holder}. {advice}"
        )


def try_lock(
    path: Path,
    mode: Literal["flock", "soft"],
    *,
    describe: str = "",
    stale_after: float = DEFAULT_STALE_AFTER_S,
) -> KeyLock | None:
    """Take the lock at ``path`` without waiting: the held lock, or ``None`` if it is busy.

    For ``physpipe prune``: skip an entry whose lock is held. A soft lock whose holder is
    provably dead on this host is broken; one from another host is left alone (judging it
    stale takes watching its heartbeat for a while).
    """
    lock = KeyLock(path, mode=mode, describe=describe, stale_after=stale_after)
    try:
        if lock.acquire(blocking=False):
            return lock
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        _log().warning("physpipe: cannot take lock %s: %s", path, exc)
    return None

"""Who a process is and whether it still lives: host identity and pid liveness, in one place.

Everything in the store that names an owner (soft locks, scratch directories, owner records)
names it the same way: ``(host, boot id, pid namespace, pid, process start time)``. Two rules
follow from that, and every caller relies on them:

- A pid is only meaningful on its own host, boot and pid namespace (:func:`same_host`). Two
  containers that share a hostname (``--network host``) do not share pids; a rebooted host's
  pids mean nothing. Anything else counts as another host, whose liveness only a heartbeat can
  tell.
- On this host, :func:`pid_alive` is exact: a pid that is gone, reused by a later process
  (start time differs) or a zombie (killed, not yet reaped: it holds nothing and will never
  release anything) is dead; a live process is never judged dead, whoever owns it.

POSIX only; without ``/proc`` (macOS, BSD) start times and zombies cannot be seen and only
"pid exists" is checked.
"""

from __future__ import annotations

import os
import socket
from typing import Any, NamedTuple

__all__ = [
    "Host",
    "hostname",
    "owner_alive",
    "owner_info",
    "pid_alive",
    "process_start",
    "same_host",
    "this_host",
]


class Host(NamedTuple):
    """This machine as the store's owner records name it."""

    name: str
    boot: str
    pidns: str


_HOST: Host | None = None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except OSError:
        return None


def this_host() -> Host:
    """This host, computed once per process (tests replace ``_HOST`` to fake another host)."""
    global _HOST  # noqa: PLW0603  # computed once per process
    if _HOST is None:
        boot = (_read_text("/proc/sys/kernel/random/boot_id") or "").strip()
        try:
            pidns = os.readlink("/proc/self/ns/pid")
        except OSError:
            pidns = ""
        _HOST = Host(socket.gethostname(), boot, pidns)
    return _HOST


def hostname() -> str:
    """The name records and scratch directories carry."""
    return this_host().name


def _stat_fields(pid: int) -> list[str]:
    text = _read_text(f"/proc/{pid}/stat")
    if not text:
        return []
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    # What is left starts at field 3 (the state).
    return text[text.rfind(")") + 2 :].split()


def process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ('' where /proc is missing)."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def pid_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (started at ``start``, if known) still runs on this host.

    Dead: no such pid, a pid reused by a process that started later, or a zombie (``Z``) or
    dead (``X``) process. Alive: anything else, another user's process included.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _stat_fields(pid)
    if fields:
        if fields[0] in ("Z", "X", "x"):
            return False  # killed and not yet reaped: it holds nothing any more
        if start and len(fields) > 19 and fields[19] != start:
            return False  # the pid was reused by a process that started later
    return True


def owner_info() -> dict[str, Any]:
    """This process as owner records store it (JSON-safe)."""
    host = this_host()
    pid = os.getpid()
    return {
        "host": host.name,
        "boot": host.boot,
        "pidns": host.pidns,
        "pid": pid,
        "pid_start": process_start(pid),
    }


def same_host(info: dict[str, Any] | None) -> bool:
    """Whether an owner record names this host (same name, boot and pid namespace)."""
    if not info:
        return False
    host = this_host()
    return (
        info.get("host") == host.name
        and info.get("boot", "") == host.boot
        and info.get("pidns", "") == host.pidns
        and isinstance(info.get("pid"), int)
    )


def owner_alive(info: dict[str, Any]) -> bool:
    """For an owner record of this host (:func:`same_host`): whether its process lives."""
    return pid_alive(int(info["pid"]), str(info.get("pid_start", "")))

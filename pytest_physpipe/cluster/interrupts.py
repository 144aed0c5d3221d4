"""How a campaign's jobs end with the run that submitted them, and how its lines are seen.

- :func:`sigterm_as_interrupt`: SIGTERM takes Ctrl-C's road, so ``kill`` and CI timeouts
  cancel jobs too.
- :class:`CancelOnInterrupt` (each process with a campaign): Ctrl-C, SIGTERM, ``-x`` and
  ``--maxfail`` cancel the jobs it submitted.
- :class:`RunGuard` (an xdist controller): as soon as ``-x``/``--maxfail`` is reached, it marks
  the run as stopping in the store (workers then submit nothing more and stop waiting) and
  cancels every job tagged with the run; again at the end, for late submissions.
- :class:`QuickInterrupt` (every process): after Ctrl-C, pytest and the xdist workers do not
  spend seconds rendering what nobody sees, so the run ends in a moment.
- :func:`terminal_say`: campaign lines reach the terminal, from xdist workers too.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_physpipe.errors import BackendError

if TYPE_CHECKING:
    from pytest_physpipe.cluster.campaign import Campaign

__all__ = [
    "CancelOnInterrupt",
    "QuickInterrupt",
    "RunGuard",
    "sigterm_as_interrupt",
    "stop_reason",
    "terminal_say",
]


def _stop_file(store: Path, run_id: str) -> Path:
    return Path(store) / "runs" / run_id / "stopping"


def stop_reason(store: Path, run_id: str) -> str | None:
    """Why the run is stopping early (``-x``), as its controller recorded it; else ``None``."""
    try:
        return _stop_file(store, run_id).read_text().strip() or "stopping"
    except OSError:
        return None


class CancelOnInterrupt:
    """Registered as a pytest plugin while a campaign runs: Ctrl-C, SIGTERM, ``-x`` and
    ``--maxfail`` cancel its jobs (no test of this run will wait for them any more)."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign

    def pytest_keyboard_interrupt(self, excinfo: object) -> None:
        # Ctrl-C, or SIGTERM (turned into KeyboardInterrupt above): no job this run
        # submitted may outlive it.
        self.campaign.cancel(why="interrupted")

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        stopped = session.shouldfail or session.shouldstop
        if exitstatus == 2 or stopped:  # pytest.ExitCode.INTERRUPTED, or -x / --maxfail
            self.campaign.cancel(why=str(stopped) if stopped else "interrupted")


class QuickInterrupt:
    """Ctrl-C ends a run in a moment, under xdist too.

    pytest renders the interrupt's whole traceback as soon as it happens, with the source of
    every frame (the few dozen frames of pytest, pluggy, xdist and execnet between the main
    loop and a waiting test), to print only its last line at the end unless ``--full-trace``
    is given. That costs seconds of CPU in every process: in each xdist worker, for a terminal
    nobody sees, while the controller waits for its workers (xdist gives them 10 s), and the
    user with it. Without ``--full-trace`` the traceback is kept from its last visible frame,
    the one pytest prints: the output is the same. A worker also skips its terminal summary
    (plugins render it for nobody; hypothesis imports itself for it). Jobs are cancelled all
    the same (:class:`CancelOnInterrupt`, and the controller's :class:`RunGuard`).
    """

    def __init__(self, config: Any) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if getattr(self.config, "workerinput", None) is not None:
            self.config.option.no_summary = True
        if self.config.option.fulltrace:
            return
        entries = excinfo.traceback
        for index in range(len(entries) - 1, -1, -1):
            if not entries[index].ishidden(excinfo):  # the frame pytest prints
                excinfo.traceback = entries[index:]
                return


class RunGuard:
    """In an xdist controller: when the run stops early (Ctrl-C, SIGTERM, ``-x``,
    ``--maxfail``), cancel every job tagged with the run, whichever worker submitted it.

    The workers cancel their own on an interrupt too, but ``-x`` only tells them to shut down,
    and a worker that dies takes its list of job ids with it: the tag does not die.
    """

    def __init__(self, config: Any, run_id: str, backend: str, store: Path) -> None:
        self.config = config
        self.run_id = run_id
        self.backend = backend
        self.store = Path(store)
        self.failures = 0
        self.stopped: str | None = None

    def _is_controller(self) -> bool:
        return self.config.pluginmanager.get_plugin("dsession") is not None

    def pytest_runtest_logreport(self, report: Any) -> None:
        maxfail = int(getattr(self.config.option, "maxfail", 0) or 0)
        if not (report.failed and maxfail and self._is_controller()) or self.stopped:
            return
        self.failures += 1
        if self.failures >= maxfail:
            self._stop(f"stopping after {self.failures} failures")

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        stopped = session.shouldfail or session.shouldstop or self.stopped
        if self._is_controller() and (exitstatus == 2 or stopped):
            # Again: a worker may have submitted after the first sweep.
            self._stop(str(stopped) if stopped else "interrupted")

    def _stop(self, why: str) -> None:
        self.stopped = why
        from pytest_physpipe.cluster.backends import BATCH_BACKENDS
        from pytest_physpipe.cluster.jobs import cancel_run

        flag = _stop_file(self.store, self.run_id)
        try:
            flag.parent.mkdir(parents=True, exist_ok=True)
            flag.write_text(why + "\n")
        except OSError:
            pass  # the cancellation below still happens
        factories: dict[str, Any] = dict(BATCH_BACKENDS)
        self.config.hook.pytest_physpipe_register_backends(backends=factories)
        factory = factories.get(self.backend)
        if factory is None:
            return
        say = terminal_say(self.config)
        try:
            ids = cancel_run(factory(), self.run_id)
        except BackendError as exc:
            say(f"physpipe: could not cancel the jobs of run {self.run_id}: {exc}")
            return
        if ids:
            say(f"physpipe: {why}: cancelled {self.backend} jobs {', '.join(ids)}")


def terminal_say(config: Any) -> Callable[[str], None]:
    """How a campaign's lines reach the user's terminal, also while a test runs (with
    pytest's capture suspended for the line, as pytest's live logging does).

    In a plain run, through the terminal reporter. In an xdist worker, whose terminal output
    nobody sees, on its stderr (inherited from the controller, so it reaches the same
    terminal), prefixed by the worker's id.
    """
    workerinput = getattr(config, "workerinput", None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    prefix = "" if workerinput is None else f"[{workerinput.get('workerid', '?')}] "

    def write(line: str) -> None:
        if workerinput is None:
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(line)
            return
        sys.stderr.write(prefix + line + "\n")
        sys.stderr.flush()

    def say(line: str) -> None:
        if capture is None:
            write(line)
            return
        with capture.global_and_fixture_disabled():
            write(line)

    return say


def sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise ``KeyboardInterrupt``; return the function that undoes it.

    pytest handles KeyboardInterrupt (Ctrl-C) cleanly; SIGTERM taking the same road means that
    `kill` or a CI timeout also cancels the jobs a run submitted. An xdist controller needs it
    too: on KeyboardInterrupt it stops its workers, and execnet interrupts their main thread,
    so each worker cancels its own jobs; killed outright by SIGTERM, it would leave them be.
    """

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum} ({signal.Signals(signum).name})")

    try:
        old = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        return lambda: None

    def undo() -> None:
        # None: the old handler was not installed from Python; the default is the best guess.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)

    return undo

"""Stress one store: N pytest sessions x ``-n 2`` at once, with random SIGKILLs.

For each lock mode, ``--sessions`` sessions run a small pipeline (swept ``base`` stages and a
``mean`` downstream of each) on one store, each with two xdist workers. A killer SIGKILLs
``--kills`` of them at random moments: the whole session (controller and workers) or one
worker. Then a clean session and a ``--physpipe-cached-only`` session run, and ``physpipe
verify`` checks the store. Counted:

- hangs: sessions still running after ``--timeout`` seconds (killed then);
- duplicates: computations of a key that another, unkilled process had already finished
  (each stage logs ``end <key> <pid>`` after computing; a killed process may not have
  committed, so its computation does not count);
- wrong values: failed tests (every test checks its stage's value against the formula) in
  unkilled sessions, the clean one and the cached-only one;
- verify: ``physpipe verify``'s exit status (0: clean).

    python bench/stress_store.py                      # 6 sessions, flock and soft
    python bench/stress_store.py --sessions 3 --kills 2 --params 3 --check   # CI size

``--check`` exits 1 unless every count is 0 and verify is clean.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = """
import os, time
from pathlib import Path
import numpy as np
from pytest_physpipe import stage, StageConfig

LOG = Path(__file__).parent / "calls.log"
PARAMS = {params}


def log(line):
    with LOG.open("a") as handle:
        handle.write(line + "\\n")


class Base(StageConfig):
    n: int = 1


@stage(params=[{{"n": n}} for n in PARAMS])
def base(config: Base, ctx):
    time.sleep(0.05 + (config.n % 4) * 0.05)
    (ctx.workdir / "scratch.dat").write_bytes(b"x" * 4096)
    log(f"end {{ctx.key}} {{os.getpid()}}")
    return np.arange(config.n * 1000, dtype=float)


@stage
def mean(base, ctx):
    time.sleep(0.05)
    log(f"end {{ctx.key}} {{os.getpid()}}")
    return {{"mean": float(base.mean()), "size": int(base.size)}}


def test_base(base):
    n = base.size // 1000
    assert base[-1] == n * 1000 - 1


def test_mean(mean):
    n = mean["size"] // 1000
    assert mean["mean"] == (n * 1000 - 1) / 2
"""


@dataclass
class Tally:
    mode: str
    sessions: int = 0
    killed_sessions: int = 0
    killed_workers: int = 0
    hangs: int = 0
    duplicates: int = 0
    wrong: int = 0
    computed: int = 0
    verify: int = -1
    killed_pids: set[int] = field(default_factory=set)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        for child in _children(stack.pop()):
            out.append(child)
            stack.append(child)
    return out


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PHYSPIPE_SECRET": "stress-" + "s" * 20}
    env.pop("PHYSPIPE_DIR", None)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _pytest_cmd(store: Path, mode: str, *extra: str) -> list[str]:
    plugins = ("no:cacheprovider", "no:hypothesispytest", "no:benchmark")
    return [
        sys.executable, "-m", "pytest", *(f"-p{p}" for p in plugins), "-q",
        f"--physpipe-dir={store}", "-o", f"physpipe_lock={mode}", *extra,
    ]  # fmt: skip


def _failed(output: str) -> int:
    for line in reversed(output.splitlines()):
        if " failed" in line:
            return int(line.split(" failed")[0].split()[-1])
    return 0


def run_mode(mode: str, args: argparse.Namespace, rng: random.Random) -> Tally:
    tally = Tally(mode)
    with tempfile.TemporaryDirectory(prefix=f"stress-{mode}-") as tmp:
        project = Path(tmp)
        params = list(range(1, args.params + 1))
        (project / "test_pipe.py").write_text(textwrap.dedent(PROJECT.format(params=params)))
        (project / "pytest.ini").write_text("[pytest]\n")
        store = project / "store"
        procs = [
            subprocess.Popen(
                _pytest_cmd(store, mode, "-n", "2"),
                cwd=project,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            for _ in range(args.sessions)
        ]
        tally.sessions = len(procs)
        victims = rng.sample(range(len(procs)), min(args.kills, len(procs)))
        killed: set[int] = set()

        def killer() -> None:
            for index in victims:
                time.sleep(rng.uniform(0.5, args.kill_window))
                proc = procs[index]
                if proc.poll() is not None:
                    continue
                tree = _descendants(proc.pid)
                workers = [p for p in tree if p != proc.pid]
                if workers and rng.random() < 0.5:
                    pid = rng.choice(workers)
                    tally.killed_workers += 1
                    targets = [pid, *_descendants(pid)]
                else:
                    killed.add(index)
                    tally.killed_sessions += 1
                    targets = [proc.pid, *tree]
                tally.killed_pids.update(targets)
                for pid in targets:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

        thread = threading.Thread(target=killer)
        thread.start()
        outputs: list[str] = []
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                tally.hangs += 1
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            outputs.append(out or "")
        thread.join()
        for index, out in enumerate(outputs):
            if index not in killed and procs[index].returncode not in (0, -signal.SIGKILL):
                # A session whose worker was killed reports that test as crashed, not wrong.
                tally.wrong += _failed(out) if "worker" not in out.lower() else 0
        for extra in ((), ("--physpipe-cached-only",)):
            done = subprocess.run(
                _pytest_cmd(store, mode, *extra), cwd=project, env=_env(),
                capture_output=True, text=True, timeout=args.timeout, check=False,
            )  # fmt: skip
            tally.wrong += _failed(done.stdout) + (done.returncode != 0)
            if extra and "skipped" in done.stdout:
                tally.wrong += 1  # cached-only must find every entry
        verify = subprocess.run(
            [sys.executable, "-m", "pytest_physpipe", "--dir", str(store), "verify", "-q"],
            env=_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        tally.verify = verify.returncode
        ends: dict[str, list[int]] = defaultdict(list)
        log = project / "calls.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            _, key, pid = line.split()
            ends[key].append(int(pid))
        for pids in ends.values():
            tally.computed += len(pids)
            finished = False
            for pid in pids:
                if finished:
                    tally.duplicates += 1
                if pid not in tally.killed_pids:
                    finished = True
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--params", type=int, default=6, help="swept base instances")
    parser.add_argument("--modes", default="flock,soft")
    parser.add_argument("--kill-window", type=float, default=6.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=300.0, help="per session, seconds")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--check", action="store_true", help="exit 1 unless all counts are 0")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    rows = [run_mode(mode, args, rng) for mode in args.modes.split(",")]
    header = (
        "lock",
        "sessions",
        "killed s/w",
        "computed",
        "hangs",
        "duplicates",
        "wrong",
        "verify",
    )
    print("  ".join(f"{h:>11}" for h in header))
    for t in rows:
        verify = "clean" if t.verify == 0 else f"rc {t.verify}"
        killed = f"{t.killed_sessions}/{t.killed_workers}"
        cells = (t.mode, t.sessions, killed, t.computed, t.hangs, t.duplicates, t.wrong, verify)
        print("  ".join(f"{c!s:>11}" for c in cells))
    bad = any(t.hangs or t.duplicates or t.wrong or t.verify != 0 for t in rows)
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())

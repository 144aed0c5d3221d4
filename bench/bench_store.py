"""What the store costs: one table, every number measured side by side in this run.

    python bench/bench_store.py              # all parts (builds a 100,000-entry store: minutes)
    python bench/bench_store.py --quick      # fewer repeats, 10,000 entries for (c) and (d)
    python bench/bench_store.py --check      # exit 1 when a target below is missed
    python bench/bench_store.py --skip cd    # parts to skip

(a) The store's part of a miss, per small entry (a dict), for each fsync policy: take the key's
    lock, commit, reload, release: what ``StageRunner`` asks of the store for one computed
    instance of a stage that does not use ``ctx.workdir`` (made only on first use).
    ``session`` (the default) includes its share of the one ``flush`` (index notes and
    ``syncfs``) at the end.
(b) ``Store.load`` of a small dict and of a 64 MiB float64 array (memory-mapped, verified by
    size and sampled checksum), and whether loading the array copied it.
(c) ``physpipe ls`` over a store of N entries (built through ``Store.commit`` in a loop, with
    ``fsync="none"``), in a fresh process, as a user runs it.
(d) ``physpipe prune`` removing 100 entries (made old with ``os.utime``) from stores of 1,000
    and of N entries: its cost must follow what it removes, not the store's size.

Targets (see bench/README.md): (a) <= 1 ms per entry with the default policy; (b) <= 50 µs
small, <= 300 µs 64 MiB (the budget of ``StageRunner.lookup``, which also builds a record),
and no copy; (c) <= 2 s at 100,000 entries; (d) the larger store's prune <= 3x the smaller's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchutil import Row, check_exit, print_table

from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.entries import Store

MISS_TARGET_S = 1e-3
SMALL_LOAD_S, BIG_LOAD_S = 0.05e-3, 0.3e-3
LS_TARGET_S = 2.0
PRUNE_RATIO = 3.0
POLICIES = ("entry", "session", "none")
DEFAULT_POLICY = "session"


SMALL = {"energy": 0.123456789, "steps": 1000, "converged": True, "label": "heat"}


def _key(i: int, salt: str) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(f"{salt}-{i}".encode())


def _record(key: str, i: int) -> StageRecord:
    return StageRecord(
        key=key,
        name="point",
        config={"i": i},
        param_id=f"i={i}",
        created_at="2026-01-01T00:00:00.000+00:00",
        host="bench",
        versions={"python": "3", "numpy": np.__version__},
        manifest={"stage": "point", "config": {"i": i}, "code": "c0ffee"},
    )


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def median_time(func: Callable[[], object], repeats: int) -> float:
    func()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def miss_cost(store: Store, count: int, salt: str) -> float:
    """Seconds per small entry of the store's part of a miss (see (a)); flush included."""
    keys = [_key(i, salt) for i in range(count)]
    records = [_record(k, i) for i, k in enumerate(keys)]
    started = time.perf_counter()
    for key, record in zip(keys, records, strict=True):
        lock = store.lock(key)
        lock.acquire()
        try:
            # (No scratch directory: the runner makes one only for a stage that asks for it.)
            store.commit(key, value=SMALL, record=record, run_id="bench")
            loaded = store.load(key)
            assert loaded is not None
        finally:
            lock.release()
    getattr(store, "flush", lambda: None)()
    return (time.perf_counter() - started) / count


def part_a(tmp: Path, count: int, rounds: int) -> list[Row]:
    results: dict[str, list[float]] = {p: [] for p in POLICIES}
    for r in range(rounds):  # interleaved, so machine noise hits every policy alike
        for policy in POLICIES:
            store = _store(tmp / f"a-{policy}", policy)
            store.ensure()
            results[policy].append(miss_cost(store, count, f"{policy}-{r}"))
    rows: list[Row] = []
    for policy in POLICIES:
        seconds = statistics.median(results[policy])
        chosen = policy == DEFAULT_POLICY
        rows.append(
            (
                f"(a) store part of a miss, small dict, fsync={policy}"
                + (" (default)" if chosen else ""),
                us(seconds),
                f"<= {us(MISS_TARGET_S)}" if chosen else "",
                seconds <= MISS_TARGET_S if chosen else None,
            )
        )
    return rows


def part_b(tmp: Path, repeats: int) -> list[Row]:
    store = Store(tmp / "b")
    store.ensure()
    small, big = "a" * 32, "b" * 32
    store.commit(small, value=SMALL, record=_record(small, 0), run_id="bench")
    array = np.arange((64 << 20) // 8, dtype=np.float64)
    store.commit(big, value=array, record=_record(big, 1), run_id="bench")
    del array
    rows: list[Row] = []
    for label, key, target, count in (
        ("small dict", small, SMALL_LOAD_S, repeats * 50),
        ("64 MiB float64 array", big, BIG_LOAD_S, repeats * 10),
    ):
        seconds = median_time(lambda key=key: store.load(key), count)  # type: ignore[misc]
        rows.append(
            (f"(b) Store.load, {label}", us(seconds), f"<= {us(target)}", seconds <= target)
        )
    loaded = store.load(big)
    assert loaded is not None
    value: Any = loaded.value
    copied = value.base is None or value.flags.owndata
    rows.append(
        ("(b) 64 MiB array loaded without a copy", "no" if copied else "yes", "", not copied)
    )
    return rows


def _store(root: Path, policy: str) -> Store:
    try:
        return Store(root, fsync=policy)  # type: ignore[arg-type]
    except TypeError:  # before fsync policies: every commit fsynced
        return Store(root)


def build_store(root: Path, count: int) -> Store:
    store = _store(root, "none")
    store.ensure()
    for i in range(count):
        key = _key(i, root.name)
        store.commit(key, value={"i": i, "square": i * i}, record=_record(key, i), run_id="bench")
    getattr(store, "flush", lambda: None)()
    return store


def physpipe(root: Path, *args: str) -> float:
    command = [sys.executable, "-m", "pytest_physpipe", "--dir", str(root), *args]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def age(store: Store, count: int, offset: int) -> None:
    """Make ``count`` entries look unused for a year."""
    old = time.time() - 365 * 86400
    for i in range(offset, offset + count):
        meta = Path(store.entry_dir(_key(i, store.root.name))) / "meta.json"
        os.utime(meta, (old, old))


def part_cd(tmp: Path, big: int, repeats: int, skip: str) -> list[Row]:
    rows: list[Row] = []
    started = time.perf_counter()
    small_store = build_store(tmp / "s1000", 1000)
    large_store = build_store(tmp / f"s{big}", big)
    built = time.perf_counter() - started
    rows.append(
        (
            f"    (building both stores by Store.commit: {1000 + big} entries)",
            f"{built:.0f} s",
            "",
            None,
        )
    )
    if "c" not in skip:
        for store, n in ((small_store, 1000), (large_store, big)):
            seconds = statistics.median(physpipe(store.root, "ls") for _ in range(repeats))
            target = n >= 100_000
            rows.append(
                (
                    f"(c) physpipe ls, {n:,} entries (fresh process)",
                    f"{seconds:.2f} s",
                    f"<= {LS_TARGET_S:.0f} s" if target else "",
                    seconds <= LS_TARGET_S if target else None,
                )
            )
    if "d" not in skip:
        times = {}
        for store, n in ((small_store, 1000), (large_store, big)):
            samples = []
            for r in range(repeats):
                age(store, 100, 100 * r)
                samples.append(physpipe(store.root, "prune", "--older-than", "30d", "-q"))
            times[n] = statistics.median(samples)
            rows.append(
                (
                    f"(d) physpipe prune of 100 entries, store of {n:,}",
                    f"{times[n]:.2f} s",
                    "",
                    None,
                )
            )
        ratio = times[big] / times[1000]
        rows.append(
            (
                f"(d) prune ratio {big:,} / 1,000 entries",
                f"{ratio:.2f}",
                f"<= {PRUNE_RATIO:.0f}",
                ratio <= PRUNE_RATIO,
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 10,000 entries")
    parser.add_argument("--skip", default="", help="parts to skip, e.g. --skip cd")
    parser.add_argument("--entries", type=int, default=None, help="N of (c) and (d)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    entries = args.entries or (10_000 if args.quick else 100_000)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(
        prefix="physpipe-bench-store-", ignore_cleanup_errors=True
    ) as name:
        tmp = Path(name)
        if "a" not in args.skip:
            rows += part_a(tmp, 200 if args.quick else 500, repeats)
        if "b" not in args.skip:
            rows += part_b(tmp, repeats)
        if "c" not in args.skip or "d" not in args.skip:
            rows += part_cd(tmp, entries, repeats, args.skip)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus")
    print_table(rows)
    return check_exit(rows, args.check)


if __name__ == "__main__":
    raise SystemExit(main())

"""What a hit of a scientific value costs without pickle: one table, measured side by side.

    python bench/bench_scientific.py            # 100 MiB sparse matrix, 1e6-row DataFrame
    python bench/bench_scientific.py --quick    # a tenth of each, fewer repeats
    python bench/bench_scientific.py --check    # exit 1 when a target below is missed

For a ~100 MiB ``scipy.sparse`` CSR matrix and a DataFrame of 10^6 rows (numeric columns and a
categorical one), the median time of one hit through ``StageRunner.lookup`` (what a stage
fixture does on a hit: load, verify, record) with the default codec (``scipy-sparse``,
``pandas``: npz/npy plus JSON, no pickle), the same with ``codec="pickle"`` (signed pickle),
and a bare ``pickle.load`` of the same value from a file (no checksum, no HMAC: a floor, not a
fair competitor, since loading it can run arbitrary code).

Target (``--check``): the pickle-free hit no slower than the signed-pickle hit; both verify
checksums, only one of them can run code on load.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pytest_physpipe import StageConfig, stage

#: The pickle-free hit may take at most this many times the signed-pickle hit.
TARGET_RATIO = 1.0


class SparseConfig(StageConfig):
    mib: int = 100


class FrameConfig(StageConfig):
    rows: int = 1_000_000


def make_sparse(mib: int) -> Any:
    import scipy.sparse

    # CSR: 8 bytes of float64 data and 4 of int32 column index per non-zero.
    nnz = (mib << 20) // 12
    n = 200_000
    rng = np.random.default_rng(0)
    rows = np.sort(rng.integers(0, n, nnz))
    cols = rng.integers(0, n, nnz).astype(np.int32)
    indptr = np.searchsorted(rows, np.arange(n + 1)).astype(np.int32)
    return scipy.sparse.csr_matrix((rng.standard_normal(nnz), cols, indptr), shape=(n, n))


def make_frame(rows: int) -> Any:
    import pandas

    rng = np.random.default_rng(1)
    return pandas.DataFrame(
        {
            "step": np.arange(rows, dtype=np.int64),
            "t": np.linspace(0.0, 1.0, rows),
            "energy": rng.standard_normal(rows),
            "residual": rng.random(rows).astype(np.float32),
            "phase": pandas.Categorical(rng.choice(["solid", "liquid", "gas"], rows)),
        }
    )


@stage
def bench_sparse(config: SparseConfig) -> Any:
    return make_sparse(config.mib)


@stage(name="bench_sparse_pickled", codec="pickle")
def bench_sparse_pickled(config: SparseConfig) -> Any:
    return make_sparse(config.mib)


@stage
def bench_frame(config: FrameConfig) -> Any:
    return make_frame(config.rows)


@stage(name="bench_frame_pickled", codec="pickle")
def bench_frame_pickled(config: FrameConfig) -> Any:
    return make_frame(config.rows)


def median_time(func: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(tmp: Path, *, mib: int, rows: int, repeats: int) -> list[tuple[str, float, float, float]]:
    from pytest_physpipe.execute import StageRunner
    from pytest_physpipe.plan import Planner
    from pytest_physpipe.stage import registry
    from pytest_physpipe.store.entries import Store

    store = Store(tmp / "store")
    runner = StageRunner(store=store, run_id="bench")
    planner = Planner(registry=registry)
    configs = {"sparse": SparseConfig(mib=mib), "frame": FrameConfig(rows=rows)}
    table = []
    for kind, config in configs.items():
        instances = {}
        for suffix in ("", "_pickled"):
            spec = registry.get(f"bench_{kind}{suffix}")
            assert spec is not None
            instances[suffix] = planner.instance(spec, config, {})
            runner.provide(instances[suffix], {})
        hit = runner.lookup(instances[""])
        assert hit is not None
        codec = store.load(instances[""].key)
        assert codec is not None
        assert codec.meta["codec"] in ("scipy-sparse", "pandas")
        plain = tmp / f"{kind}.pkl"
        with plain.open("wb") as handle:
            pickle.dump(hit.value, handle, protocol=pickle.HIGHEST_PROTOCOL)

        def load_plain(path: Path = plain) -> object:
            with path.open("rb") as handle:
                return pickle.load(handle)

        label = f"{mib} MiB CSR matrix" if kind == "sparse" else f"{rows:.0e}-row DataFrame"
        ours = median_time(lambda i=instances[""]: runner.lookup(i), repeats)
        signed = median_time(lambda i=instances["_pickled"]: runner.lookup(i), repeats)
        bare = median_time(load_plain, repeats)
        table.append((f"{label}: hit, {codec.meta['codec']} codec (no pickle)", ours, signed, bare))
        table.append((f"{label}: hit, codec='pickle' (signed)", signed, signed, bare))
        table.append((f"{label}: bare pickle.load (unverified)", bare, signed, bare))
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="hits timed per row")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    mib, rows = (10, 100_000) if args.quick else (100, 1_000_000)
    repeats = args.repeats or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory(prefix="physpipe-bench-sci-") as folder:
        os.environ.setdefault("PHYSPIPE_SECRET", "bench-secret-" + "x" * 32)
        table = run(Path(folder), mib=mib, rows=rows, repeats=repeats)
    width = max(len(row[0]) for row in table)
    print(f"{'case':<{width}}  {'median':>10}  {'vs signed pickle':>16}  {'vs pickle.load':>14}")
    failed = []
    for name, seconds, signed, bare in table:
        print(
            f"{name:<{width}}  {seconds * 1e3:>7.1f} ms  {seconds / signed:>15.2f}x"
            f"  {seconds / bare:>13.2f}x"
        )
        if "no pickle" in name and seconds > TARGET_RATIO * signed:
            failed.append(name)
    print(f"target: the pickle-free hit at most {TARGET_RATIO:g}x the signed-pickle hit")
    if args.check and failed:
        print("missed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Golden comparison of one big float64 array: physics_snapshot against ndarrays_regression.

    python bench/bench_snapshot.py             # 10^7 elements (76 MiB), 5 repeats
    python bench/bench_snapshot.py --quick     # 10^6 elements, 3 repeats
    python bench/bench_snapshot.py --n 3000000 --repeats 7

Both tools check the same array (``default_rng(42).standard_normal(n)``) against a golden with
``rtol=1e-9, atol=0`` in the same pytest session. Each repeat is a fresh pytest process; the
times are measured inside the test around the assertion alone (``perf_counter``), so pytest's
start-up is not in them. Rows:

* write: a whole pytest process that writes the golden (``--snapshot-update`` /
  ``--regen-all``), one tool per process, goldens deleted before each repeat. The whole
  process, because syrupy writes at the end of the session, outside the test; both rows carry
  the same start-up cost.
* compare, identical: the array equals its golden bit for bit (the common case in a
  regression suite).
* compare, within tolerance: every element scaled by ``1 + 1e-12``: the full tolerance path.
* golden size: bytes on disk, the readable file and the sidecar together for physics_snapshot,
  the ``.npz`` for ndarrays_regression.

Medians over the repeats; the ratio column is ndarrays_regression / physics_snapshot (above 1:
physics_snapshot is faster or smaller). No assertion on any number: this prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TEST_MODULE = textwrap.dedent(
    """
    import json
    import os
    import time

    import numpy as np

    N = int(os.environ["BENCH_N"])
    OUT = os.environ["BENCH_OUT"]


    def data():
        a = np.random.default_rng(42).standard_normal(N)
        if os.environ.get("BENCH_MODE") == "perturbed":
            a *= 1.0 + 1e-12
        return a


    def record(tool, seconds):
        with open(OUT, "a") as handle:
            handle.write(json.dumps({"tool": tool, "seconds": seconds}) + "\\n")


    def test_physics_snapshot(physics_snapshot):
        a = data()
        start = time.perf_counter()
        ok = a == physics_snapshot(rtol=1e-9, atol=0.0)
        record("physics_snapshot", time.perf_counter() - start)
        assert ok


    def test_ndarrays_regression(ndarrays_regression):
        a = data()
        start = time.perf_counter()
        ndarrays_regression.check({"a": a}, default_tolerance={"rtol": 1e-9, "atol": 0.0})
        record("ndarrays_regression", time.perf_counter() - start)
    """
)

TOOLS = ("physics_snapshot", "ndarrays_regression")
# Unrelated plugins only add start-up time to every process.
LEAN = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark"]


def run_session(root: Path, n: int, mode: str, *args: str) -> dict[str, float]:
    """Run the benchmark module once; the assertion times the tests recorded, per tool."""
    out = root / "timings.jsonl"
    out.unlink(missing_ok=True)
    env = {**os.environ, "BENCH_N": str(n), "BENCH_OUT": str(out), "BENCH_MODE": mode}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *LEAN, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"the benchmark session failed:\n{proc.stdout}\n{proc.stderr}")
    timings = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        timings[row["tool"]] = row["seconds"]
    return timings


def golden_sizes(root: Path) -> dict[str, int]:
    def size(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    return {
        "physics_snapshot": size(root / "__snapshots__"),
        "ndarrays_regression": size(root / "test_bench_golden"),
    }


def remove_goldens(root: Path) -> None:
    for folder in ("__snapshots__", "test_bench_golden"):
        shutil.rmtree(root / folder, ignore_errors=True)


def median_row(samples: list[dict[str, float]]) -> dict[str, float]:
    return {tool: statistics.median(s[tool] for s in samples) for tool in TOOLS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="array elements")
    parser.add_argument("--repeats", type=int, default=5, help="runs per row (median)")
    parser.add_argument("--quick", action="store_true", help="10^6 elements, 3 repeats")
    args = parser.parse_args()
    n, repeats = (1_000_000, 3) if args.quick else (args.n, args.repeats)

    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp:
        root = Path(tmp)
        (root / "test_bench_golden.py").write_text(TEST_MODULE)
        writes: list[dict[str, float]] = []
        sizes: dict[str, int] = {}
        for _ in range(repeats):
            remove_goldens(root)
            walls = {}
            for tool, flag in (("physics", "--snapshot-update"), ("ndarrays", "--regen-all")):
                start = time.perf_counter()
                run_session(root, n, "same", "-k", tool, flag)
                walls[f"{tool}_regression" if tool == "ndarrays" else "physics_snapshot"] = (
                    time.perf_counter() - start
                )
            writes.append(walls)
            sizes = golden_sizes(root)
        identical = [run_session(root, n, "same") for _ in range(repeats)]
        perturbed = [run_session(root, n, "perturbed") for _ in range(repeats)]

    rows = [
        ("write (whole pytest run)", median_row(writes), "s"),
        ("compare, identical", median_row(identical), "s"),
        ("compare, within tolerance", median_row(perturbed), "s"),
        ("golden size on disk", {tool: float(sizes[tool]) for tool in TOOLS}, "MiB"),
    ]
    mib = n * 8 / 2**20
    print(
        f"One float64 array of {n:,} elements ({mib:.1f} MiB) against its golden, "
        f"rtol=1e-9, atol=0; median of {repeats} fresh pytest processes per row.\n"
        "compare rows: the assertion alone, timed inside the test; write row: the whole "
        "process (syrupy writes at session end).\n"
    )
    header = f"{'':<28}{'physics_snapshot':>18}{'ndarrays_regression':>22}{'ratio':>9}"
    print(header)
    print("-" * len(header))
    for label, values, unit in rows:
        ours, theirs = values["physics_snapshot"], values["ndarrays_regression"]
        if unit == "MiB":
            cells = f"{ours / 2**20:>14.1f} MiB{theirs / 2**20:>18.1f} MiB"
        else:
            cells = f"{ours:>16.3f} s{theirs:>20.3f} s"
        print(f"{label:<28}{cells}{theirs / ours:>8.2f}x")
    print(
        "\nratio = ndarrays_regression / physics_snapshot (above 1: physics_snapshot is "
        "faster or smaller)"
    )


if __name__ == "__main__":
    main()

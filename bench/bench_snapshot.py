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
physics_snapshot is faster or smaller).

Then four more tables, each from fresh pytest processes:

* a Python list of 10^6 floats, compared within tolerance (physics_snapshot treats it as an
  array), against ndarrays_regression given ``np.asarray(list)``; golden sizes;
* a pandas DataFrame of 10^6 rows and three float columns, against dataframe_regression;
* the peak RSS of a ``--snapshot-update`` session writing eight 10^7-element float64 arrays
  (76 MiB each), one per test, and of one that finds them all within tolerance;
* ``--snapshot-update`` of one module with 500 new goldens (a parametrized test asserting a
  small dict with an 8-element array): the whole process, the time spent in the assertions
  (their sum), and a session that compares the same goldens, for scale.

``--check`` exits non-zero when a target is missed: the list compares in under 1 s with a golden
under 10 MB, the DataFrame compares in under 2 s, and the peak RSS of both update sessions stays
under 3 arrays' worth above the baseline process (the arrays are not all held at once).
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
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--only",
        choices=("array", "list", "memory", "many"),
        help="run one table: the big array, the list and DataFrame, memory, 500 new goldens",
    )
    args = parser.parse_args()
    n, repeats = (1_000_000, 3) if args.quick else (args.n, args.repeats)
    missed: list[str] = []
    if args.only in (None, "array"):
        big_array_table(n, repeats)
    if args.only in (None, "list"):
        missed += list_and_frame_tables(1 if args.quick else 3)
    if args.only in (None, "memory"):
        missed += memory_table()
    if args.only in (None, "many"):
        missed += many_goldens_table(1 if args.quick else 3)
    if args.check and missed:
        sys.exit("targets missed:\n  " + "\n  ".join(missed))


def big_array_table(n: int, repeats: int) -> None:

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
        "process (it includes start-up and the write of the golden).\n"
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


LIST_AND_FRAME = textwrap.dedent(
    """
    import json
    import os
    import time

    import numpy as np
    import pandas as pd

    N = int(os.environ["BENCH_N"])
    OUT = os.environ["BENCH_OUT"]
    SCALE = 1.0 + (1e-12 if os.environ.get("BENCH_MODE") == "perturbed" else 0.0)
    TOL = {"rtol": 1e-9, "atol": 0.0}


    def record(tool, seconds):
        with open(OUT, "a") as handle:
            handle.write(json.dumps({"tool": tool, "seconds": seconds}) + "\\n")


    def values():
        return [float(x) * SCALE for x in np.random.default_rng(1).standard_normal(N)]


    def frame():
        rng = np.random.default_rng(2)
        return pd.DataFrame({c: rng.standard_normal(N) * SCALE for c in ("p", "T", "rho")})


    def test_list_physics(physics_snapshot):
        v = values()
        start = time.perf_counter()
        ok = v == physics_snapshot(**TOL)
        record("list physics_snapshot", time.perf_counter() - start)
        assert ok


    def test_list_ndarrays(ndarrays_regression):
        v = values()
        start = time.perf_counter()
        ndarrays_regression.check({"v": np.asarray(v)}, default_tolerance=TOL)
        record("list ndarrays_regression", time.perf_counter() - start)


    def test_frame_physics(physics_snapshot):
        f = frame()
        start = time.perf_counter()
        ok = f == physics_snapshot(**TOL)
        record("frame physics_snapshot", time.perf_counter() - start)
        assert ok


    def test_frame_dataframe(dataframe_regression):
        f = frame()
        start = time.perf_counter()
        dataframe_regression.check(f, default_tolerance=TOL)
        record("frame dataframe_regression", time.perf_counter() - start)
    """
)


def _sessions(root: Path, mode: str, repeats: int) -> dict[str, float]:
    samples = [run_session(root, 1_000_000, mode) for _ in range(repeats)]
    return {tool: statistics.median(s[tool] for s in samples) for tool in samples[0]}


def list_and_frame_tables(repeats: int) -> list[str]:
    """The 10^6-element list and the 10^6-row DataFrame; returns the targets missed."""
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-list-") as tmp:
        root = Path(tmp)
        (root / "test_bench_list.py").write_text(LIST_AND_FRAME)
        run_session(root, 1_000_000, "same", "--snapshot-update", "--regen-all")
        sizes = {
            "list physics_snapshot": sum(
                p.stat().st_size for p in (root / "__snapshots__").rglob("*") if p.is_file()
            )
        }
        timings = _sessions(root, "perturbed", repeats)
    print("\n10^6-element Python list and 10^6-row DataFrame (3 float columns), within tolerance")
    print(f"{'':<28}{'physics_snapshot':>18}{'pytest-regressions':>22}{'ratio':>9}")
    print("-" * 77)
    for label, ours_key, theirs_key in (
        ("list of 10^6 floats", "list physics_snapshot", "list ndarrays_regression"),
        ("DataFrame 10^6 rows", "frame physics_snapshot", "frame dataframe_regression"),
    ):
        ours, theirs = timings[ours_key], timings[theirs_key]
        print(f"{label:<28}{ours:>16.3f} s{theirs:>20.3f} s{theirs / ours:>8.2f}x")
    golden_mb = sizes["list physics_snapshot"] / 2**20
    print(f"golden files (list and frame together): {golden_mb:.1f} MiB")
    missed = []
    if timings["list physics_snapshot"] > 1.0:
        missed.append(f"list compare {timings['list physics_snapshot']:.2f} s > 1 s")
    if golden_mb > 40:
        missed.append(f"goldens {golden_mb:.1f} MiB > 40 MiB")
    if timings["frame physics_snapshot"] > 2.0:
        missed.append(f"DataFrame compare {timings['frame physics_snapshot']:.2f} s > 2 s")
    return missed


MEMORY = textwrap.dedent(
    """
    import numpy as np
    import pytest


    @pytest.mark.parametrize("i", range(8))
    def test_big(physics_snapshot, i):
        a = np.random.default_rng(i).standard_normal(10_000_000)
        assert {"a": a} == physics_snapshot
    """
)


def _peak_rss(root: Path, *args: str) -> float:
    """Peak RSS (MiB) of one pytest process, measured from a fresh parent."""
    probe = (
        "import resource, subprocess, sys\n"
        "proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', *sys.argv[1:]],"
        " capture_output=True)\n"
        "assert proc.returncode == 0, proc.stdout.decode()[-2000:]\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *LEAN, *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1]) / 1024


def memory_table() -> list[str]:
    """Peak RSS of --snapshot-update over eight 76 MiB arrays; returns the targets missed."""
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-mem-") as tmp:
        root = Path(tmp)
        (root / "test_bench_memory.py").write_text(MEMORY.replace("range(8)", "range(0)"))
        baseline = _peak_rss(root, "--snapshot-update")
        (root / "test_bench_memory.py").write_text(MEMORY)
        write = _peak_rss(root, "--snapshot-update")
        again = _peak_rss(root, "--snapshot-update")
    array_mib = 10_000_000 * 8 / 2**20
    print("\nPeak RSS of a --snapshot-update session over eight 76 MiB arrays, one per test")
    print(f"{'empty session (baseline)':<40}{baseline:>10.0f} MiB")
    print(f"{'writing eight new goldens':<40}{write:>10.0f} MiB")
    print(f"{'all eight within tolerance':<40}{again:>10.0f} MiB")
    limit = baseline + 3 * array_mib
    return [
        f"{label} peak RSS {value:.0f} MiB > {limit:.0f} MiB"
        for label, value in (("writing", write), ("update", again))
        if value > limit
    ]


MANY = textwrap.dedent(
    """
    import json
    import os
    import time

    import numpy as np
    import pytest

    OUT = os.environ["BENCH_OUT"]


    @pytest.mark.parametrize("i", range(int(os.environ["BENCH_N"])))
    def test_many(physics_snapshot, i):
        value = {"energy": -0.5 * i, "state": np.linspace(0.0, 1.0, 8) * i, "steps": i}
        start = time.perf_counter()
        ok = value == physics_snapshot
        with open(OUT, "a") as handle:
            handle.write(json.dumps({"seconds": time.perf_counter() - start}) + "\\n")
        assert ok
    """
)


def _many_session(root: Path, n: int, *args: str) -> tuple[float, float]:
    """(whole process, sum of the assertions) in seconds, for one pytest process."""
    out = root / "timings.jsonl"
    out.unlink(missing_ok=True)
    env = {**os.environ, "BENCH_N": str(n), "BENCH_OUT": str(out)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *LEAN, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the benchmark session failed:\n{proc.stdout}\n{proc.stderr}")
    asserts = sum(json.loads(line)["seconds"] for line in out.read_text().splitlines())
    return wall, asserts


def many_goldens_table(repeats: int, n: int = 500) -> list[str]:
    """--snapshot-update of a module with ``n`` new goldens; returns the targets missed."""
    writes, compares = [], []
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-many-") as tmp:
        root = Path(tmp)
        (root / "test_bench_many.py").write_text(MANY)
        for _ in range(repeats):
            shutil.rmtree(root / "__snapshots__", ignore_errors=True)
            writes.append(_many_session(root, n, "--snapshot-update"))
            compares.append(_many_session(root, n))
    write_wall = statistics.median(w for w, _ in writes)
    write_asserts = statistics.median(a for _, a in writes)
    compare_wall = statistics.median(w for w, _ in compares)
    compare_asserts = statistics.median(a for _, a in compares)
    print(f"\n--snapshot-update of one module with {n} new goldens (median of {repeats})")
    print(f"{'':<40}{'whole process':>16}{'in assertions':>16}")
    for label, wall, asserts in (
        (f"write {n} new goldens", write_wall, write_asserts),
        ("compare them (no writes)", compare_wall, compare_asserts),
    ):
        print(f"{label:<40}{wall:>14.2f} s{asserts:>14.2f} s")
    # One golden file rewritten once per new golden grows as n^2; written once, the writes
    # cost about what the comparisons do.
    limit = 3 * compare_asserts + 0.5
    if write_asserts > limit:
        return [f"{n} new goldens: {write_asserts:.2f} s in assertions > {limit:.2f} s"]
    return []


if __name__ == "__main__":
    main()

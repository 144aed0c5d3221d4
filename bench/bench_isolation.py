"""What isolating consumers costs on a hit of a 10 MiB nested dict (and of a large array).

Every consumer (a test, a downstream stage) gets a copy of a stage's value, so that an in-place
edit reaches nobody else. This prints, medians of --repeats, all measured in this process:

- the hit itself: ``StageRunner.lookup`` (read, verify, decode), as before isolation;
- one hand-out: ``isolate(value)``, what each consumer now pays on top;
- the alternatives weighed: a fresh decode per consumer (``json.loads`` of the payload), and
  ``copy.deepcopy``;
- the same for a 64 MiB array inside a dict (arrays are shared read-only: nearly free).

    python bench/bench_isolation.py            # ~30 s
    python bench/bench_isolation.py --check    # quick: does it run, is a hand-out a copy?
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pytest_physpipe.execute import StageRunner
from pytest_physpipe.isolation import isolate
from pytest_physpipe.records import StageRecord
from pytest_physpipe.store.codecs import CodecRegistry
from pytest_physpipe.store.entries import Store


def nested_dict(target_bytes: int) -> dict[str, Any]:
    """A simulation-like result: runs of records with floats, ints, strings and lists."""
    rows = []
    i = 0
    while True:
        rows.append(
            {
                "step": i,
                "time": i * 1e-3,
                "energy": 1.0 / (i + 1),
                "label": f"step-{i}",
                "probes": [0.1 * i, 0.2 * i, 0.3 * i],
                "flags": {"converged": i % 3 == 0, "iterations": i % 17},
            }
        )
        i += 1
        if i % 2000 == 0 and len(json.dumps(rows)) >= target_bytes:
            break
    return {"meta": {"solver": "cg", "tol": 1e-8}, "rows": rows}


def median_time(func: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class _Instance:
    """The little of a StageInstance that ``StageRunner.lookup`` reads."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.name = "bench"
        self.param_id = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    size = (1 << 20) if args.check else (10 << 20)
    repeats = 3 if args.check else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store", codecs=CodecRegistry())
        store.ensure()
        runner = StageRunner(store=store, run_id="bench")
        floats = (1 << 16) if args.check else (8 << 20)
        values = {
            f"{size >> 20} MiB nested dict": nested_dict(size),
            f"{floats >> 17} MiB array in a dict": {"u": np.random.default_rng(0).random(floats)},
        }
        rows = []
        for index, (what, value) in enumerate(values.items()):
            key = f"{index:032x}"
            codec = store.codecs.choose(value, "auto", stage="bench")
            record = StageRecord(key=key, name="bench")
            store.commit(key, value=value, codec=codec, record=record, run_id="bench")
            instance: Any = _Instance(key)
            served = runner.lookup(instance)
            assert served is not None
            loaded = served.value
            hit = median_time(lambda i=instance: runner.lookup(i), repeats)
            plain = served.record.codec == "json"  # as the session decides per hand-out
            handout = median_time(lambda v=loaded, p=plain: isolate(v, plain=p), repeats)
            deep = median_time(lambda v=loaded: copy.deepcopy(v), repeats)
            payload = Path(store.entry_dir(key))
            files = sorted(
                p for p in payload.iterdir() if p.suffix == ".json" and p.name != "meta.json"
            )
            raw = files[0].read_bytes()
            decode = median_time(lambda r=raw: json.loads(r), repeats)
            rows.append((what, codec.name, hit, handout, decode, deep))
            copied = isolate(loaded, plain=plain)
            if "nested" in what:
                copied["rows"][0]["probes"].append(1.0)
                if loaded["rows"][0]["probes"] == copied["rows"][0]["probes"]:
                    raise SystemExit("a hand-out shares a list with the loaded value")
    print(f"medians of {repeats}; ms")
    header = ("value", "codec", "hit (before)", "+ isolate", "ratio", "fresh decode", "deepcopy")
    print("{:<24}{:>6}{:>14}{:>11}{:>7}{:>14}{:>10}".format(*header))
    for what, codec_name, hit, handout, decode, deep in rows:
        print(
            f"{what:<24}{codec_name:>6}{hit * 1e3:>14.2f}{handout * 1e3:>11.2f}"
            f"{(hit + handout) / hit:>7.2f}{decode * 1e3:>14.2f}{deep * 1e3:>10.2f}"
        )


if __name__ == "__main__":
    main()

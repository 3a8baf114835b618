"""Pickle walker throughput on dense and sparse pickles (prints a table).

    python tests/benchmarks/bench_pickle.py [--scale 1.0] [--repeat 3]

Each workload is pickled in memory (nothing is ever unpickled) and scanned with
``scan_pickle_input`` from a file on disk (page cache), the way ``modelguard scan``
reads it. Reports the best of ``--repeat`` runs in wall time and CPU time (CPU
time is the steadier number on a shared machine), opcodes walked and peak
traced memory of one extra run. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelguard.findings import Location
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.pickle import scan_pickle_input

MB = 1_000_000


def workloads(scale: float) -> dict[str, Callable[[], bytes]]:
    n = max(1, int(2_000_000 * scale))
    return {
        "list of floats (p4)": lambda: pickle.dumps([i * 0.5 for i in range(n)], protocol=4),
        "list of ints (p4)": lambda: pickle.dumps(list(range(n)), protocol=4),
        "str->str dict (p4)": lambda: pickle.dumps(
            {f"key{i}": f"value{i}" for i in range(n // 4)}, protocol=4
        ),
        "nested records (p2)": lambda: pickle.dumps(
            [{"id": i, "name": f"n{i}", "xs": (i, i + 1)} for i in range(n // 8)], protocol=2
        ),
        "protocol 0 text": lambda: pickle.dumps(list(range(n // 4)), protocol=0),
        "state dict, 100 MB arrays": lambda: pickle.dumps(
            collections.OrderedDict(
                (f"layer{i}.weight", np.zeros(int(1_250_000 * scale))) for i in range(10)
            ),
            protocol=4,
        ),
    }


def scan_file(path: Path) -> ScanContext:
    ctx = ScanContext(location=Location(path.name))
    with path.open("rb") as handle:
        scan_pickle_input(Input(handle, os.path.getsize(path), path.name), ctx)
    return ctx


def measure(path: Path, repeat: int) -> tuple[float, float]:
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        ctx = scan_file(path)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        assert not [f for f in ctx.findings if f.rule_id != "MG102"], ctx.findings
    return best_wall, best_cpu


def peak_memory(path: Path) -> int:
    tracemalloc.start()
    scan_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    header = f"{'workload':28} {'MB':>8} {'wall s':>8} {'MB/s':>8} {'cpu s':>8} {'MB/s cpu':>9}"
    print(header + f" {'peak MiB':>9}")
    print("-" * (len(header) + 10))
    with tempfile.TemporaryDirectory() as folder:
        for name, make in workloads(args.scale).items():
            path = Path(folder, "bench.pkl")
            path.write_bytes(make())
            size = path.stat().st_size
            wall, cpu = measure(path, args.repeat)
            peak = peak_memory(path)
            print(
                f"{name:28} {size / MB:8.1f} {wall:8.2f} {size / MB / wall:8.1f} "
                f"{cpu:8.2f} {size / MB / max(cpu, 1e-9):9.1f} {peak / 2**20:9.1f}"
            )


if __name__ == "__main__":
    main()

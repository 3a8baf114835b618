"""Resource bounds: scan time, peak RSS and report size on hostile inputs (prints a table).

    python tests/benchmarks/bench_resources.py [--scale 1.0] [--timeout 600]

The cases (built by ``tests/scan/resource_cases.py``, the same builders the
resource tests use at a smaller size) are those issue 10 measured growing
faster than the file: many distinct imports, fake pickle starts in trailing
data, a zip of highly compressed pickles and a joblib list of empty arrays.
Each is scanned by the CLI in a fresh child (``--no-cache``, SARIF to a file)
and measured with ``/usr/bin/time`` (else ``getrusage``). Not a test: nothing
here asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scan"))
import resource_cases as cases

TIME_BIN = "/usr/bin/time"


def workloads(scale: float) -> dict[str, Callable[[], bytes]]:
    def n(value: int) -> int:
        return max(1, int(value * scale))

    return {
        "198k distinct imports (2 MB pickle)": lambda: cases.distinct_imports(n(198_000)),
        "100 fake pickle starts in trailing data": lambda: cases.fake_pickle_starts(n(100)),
        "zip of 5 deflated 20 MB pickles": lambda: cases.zip_of_dense_pickles(5, n(20_000_000)),
        "joblib list of 18 empty arrays": lambda: cases.joblib_empty_arrays(n(18)),
    }


def measure(cmd: list[str], timeout: float) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MiB, exit code) of one run of ``cmd`` in a fresh child."""
    if os.path.exists(TIME_BIN):
        with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
            start = time.perf_counter()
            proc = subprocess.run(
                [TIME_BIN, "-f", "%U %S %M", "-o", tf.name, *cmd],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
            wall = time.perf_counter() - start
            user, system, rss_kb = Path(tf.name).read_text().split()[-3:]
        return wall, float(user) + float(system), int(rss_kb) / 1024, proc.returncode
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="scale every case's size")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per scan")
    args = parser.parse_args()
    exe = shutil.which("modelguard") or str(Path(sys.executable).parent / "modelguard")
    rows = [
        "| case | file KB | wall s | CPU s | peak RSS MB | SARIF KB | findings | exit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="mg-bench-res-") as tmp:
        folder = Path(tmp)
        for name, build in workloads(args.scale).items():
            target = folder / "case.bin"
            target.write_bytes(build())
            sarif = folder / "out.sarif"
            cmd = [exe, "scan", "--no-cache", "-f", "sarif", "-o", str(sarif)]
            cmd += ["--fail-on", "never", str(target)]
            try:
                wall, cpu, rss, rc = measure(cmd, args.timeout)
            except subprocess.TimeoutExpired:
                rows.append(f"| {name} | {target.stat().st_size / 1e3:,.1f} | timeout | | | | | |")
                continue
            size = sarif.stat().st_size if sarif.exists() else 0
            found = len(json.loads(sarif.read_text())["runs"][0]["results"]) if size else 0
            rows.append(
                f"| {name} | {target.stat().st_size / 1e3:,.1f} | {wall:.2f} | {cpu:.2f} | "
                f"{rss:,.0f} | {size / 1e3:,.1f} | {found:,} | {rc} |"
            )
            sarif.unlink(missing_ok=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()

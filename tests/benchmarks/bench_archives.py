"""Checkpoint scan time against hashing the same file (prints a table).

    python tests/benchmarks/bench_archives.py [--size-mib 1024] [--repeat 3]

Writes PyTorch checkpoints of about ``--size-mib`` of float32 tensors (zip
format, legacy format, and a gzip of a small one) to a temp folder, then times
``modelguard`` scanning each against sha256 of the same file. The target: a zip
checkpoint scans faster than it hashes, because only its central directory and
pickles are read (``read`` shows the bytes the scan read, from /proc/self/io).
Files are in the page cache for every contender. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from modelguard.policy import Policy
from modelguard.scan.engine import Target, scan_file

MiB = 1024 * 1024


def _rchar() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _best(fn: Callable[[], object], repeat: int) -> tuple[float, int]:
    best = float("inf")
    read = 0
    for _ in range(repeat):
        before = _rchar()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        read = _rchar() - before
    return best, read


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _time_sha256sum(path: Path) -> float:
    tool = shutil.which("sha256sum")
    if tool is None:
        return float("nan")
    start = time.perf_counter()
    subprocess.run([tool, str(path)], capture_output=True, check=True)
    return time.perf_counter() - start


def _make(folder: Path, size_mib: int) -> dict[str, Path]:
    import torch

    layers = 64
    per_layer = max(1, size_mib * MiB // 4 // layers)
    state = {f"layer{i}.weight": torch.zeros(per_layer) for i in range(layers)}
    paths = {"zip": folder / "model.pt", "legacy": folder / "legacy.pt"}
    torch.save(state, paths["zip"])
    torch.save(state, paths["legacy"], _use_new_zipfile_serialization=False)
    small = {k: v[: 64 * 1024].clone() for k, v in state.items()}  # clone: a view saves all
    buffer = folder / "small.pt"
    torch.save(small, buffer)
    paths["zip.gz"] = folder / "small.pt.gz"
    paths["zip.gz"].write_bytes(gzip.compress(buffer.read_bytes(), compresslevel=1))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    policy = Policy()
    with tempfile.TemporaryDirectory() as tmp:
        paths = _make(Path(tmp), args.size_mib)
        print(f"{'file':<10} {'size MiB':>9} {'scan s':>8} {'read MiB':>9} "
              f"{'sha256 s':>9} {'sha256sum s':>12} {'findings':>9}")  # fmt: skip
        for label, path in paths.items():
            _sha256(path)  # warm the page cache
            target = Target(str(path), path.name)
            result = scan_file(target, policy)
            findings = len(getattr(result, "findings", ()))
            scan_s, read = _best(lambda t=target: scan_file(t, policy), args.repeat)
            hash_s, _ = _best(lambda p=path: _sha256(p), args.repeat)
            sum_s = _time_sha256sum(path)
            size = path.stat().st_size / MiB
            print(f"{label:<10} {size:>9.1f} {scan_s:>8.3f} {read / MiB:>9.2f} "
                  f"{hash_s:>9.3f} {sum_s:>12.3f} {findings:>9}")  # fmt: skip


if __name__ == "__main__":
    main()

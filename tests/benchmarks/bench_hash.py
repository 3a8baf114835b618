"""Hashing throughput: modelguard vs sha256sum on the same files (prints a table).

    python tests/benchmarks/bench_hash.py [--size-mib 1024] [--files 4] [--dir /tmp]

Measures, with the files already in the page cache (both tools read from memory):
  1. one ~1 GiB file: ``sha256sum`` vs ``modelguard.supply.hashing.hash_file``
     (sha256 of one file is sequential, so this is single-core speed for both);
  2. the same bytes split into N files: ``sha256sum`` run once over all files
     (sequential) vs ``hash_files`` (threads across files; hashlib releases the GIL);
  3. ``hash_file`` with sha256+sha1 in one pass (what a zoo fetch computes).
Best of ``--repeat`` runs. Not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from modelguard.supply.hashing import hash_file, hash_files

MIB = 1024 * 1024


def make_file(path: Path, size: int) -> None:
    block = os.urandom(16 * MIB)
    with path.open("wb") as handle:
        written = 0
        while written < size:
            chunk = block[: min(len(block), size - written)]
            handle.write(chunk)
            written += len(chunk)


def best(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def sha256sum(paths: list[Path]) -> None:
    subprocess.run(["sha256sum", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)


def openssl_dgst(paths: list[Path]) -> None:
    subprocess.run(
        ["openssl", "dgst", "-sha256", *map(str, paths)], check=True, stdout=subprocess.DEVNULL
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    if shutil.which("sha256sum") is None:
        raise SystemExit("sha256sum not found")
    total = args.size_mib * MIB
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        big = folder / "big.bin"
        make_file(big, total)
        parts = []
        for i in range(args.files):
            part = folder / f"part{i}.bin"
            make_file(part, total // args.files)
            parts.append(part)
        # Warm the page cache so both tools measure hashing, not the disk.
        hash_files([big, *parts], workers=1)

        rows = [
            ("1 file, sha256sum", best(lambda: sha256sum([big]), args.repeat), total),
            *(
                [
                    (
                        "1 file, openssl dgst -sha256",
                        best(lambda: openssl_dgst([big]), args.repeat),
                        total,
                    )
                ]
                if shutil.which("openssl")
                else []
            ),
            ("1 file, modelguard hash_file", best(lambda: hash_file(big), args.repeat), total),
            (
                "1 file, modelguard sha256+sha1",
                best(lambda: hash_file(big, ("sha256", "sha1")), args.repeat),
                total,
            ),
            (
                f"{args.files} files, sha256sum (sequential)",
                best(lambda: sha256sum(parts), args.repeat),
                total,
            ),
            (
                f"{args.files} files, modelguard hash_files (threads)",
                best(lambda: hash_files(parts), args.repeat),
                total,
            ),
        ]
    print(
        f"cpu cores: {os.cpu_count()}, data: {total / MIB:.0f} MiB per row, best of {args.repeat}"
    )
    print(f"{'case':<48} {'seconds':>8} {'MB/s':>9}")
    for name, seconds, size in rows:
        print(f"{name:<48} {seconds:>8.3f} {size / seconds / 1e6:>9.1f}")


if __name__ == "__main__":
    main()

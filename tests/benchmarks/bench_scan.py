"""Scan benchmark: modelguard against peer scanners and sha256sum, as a markdown table.

Workloads (generated into a temporary folder):
  1. one large PyTorch zip checkpoint (default ~1 GiB: a state_dict of big random tensors);
  2. a folder of many small files (default 2,000: torch checkpoints, pickles, .npy).

Tools: modelguard (its CLI in a subprocess), picklescan, modelscan, fickling and
modelaudit (installed from PyPI into a separate venv under the cache folder; a
peer that fails to install, has no way to scan the workload or crashes is
reported with a note, not timed), and ``sha256sum`` over the same bytes as the
I/O reference.

Each command runs twice and the second (warm page cache) run is reported (a cold
run over ``--once-over`` seconds is reported instead of repeating it): dropping
the page cache needs root. Wall time and peak RSS come from ``/usr/bin/time``
when present, else from ``getrusage(RUSAGE_CHILDREN)`` in a fresh child per command.

Usage: python tests/benchmarks/bench_scan.py [--size-gib 1] [--files 2000] [--no-peers]
Not a test: it prints a table and asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PEERS = ("picklescan", "modelscan", "fickling", "modelaudit")
# Missing runtime dependencies of a peer's release, installed beside it (noted in
# the README): fickling imports typing_extensions without declaring it.
PEER_EXTRAS = {"fickling": ["typing_extensions"]}
# No telemetry from peers (modelaudit reports usage unless told not to); the
# benchmark machine may have no network, and retries would be timed.
QUIET_ENV = {"PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
TIME_BIN = "/usr/bin/time"


@dataclass
class Result:
    tool: str
    workload: str
    wall_s: float | None
    peak_rss_mb: float | None
    exit_code: int | None
    note: str = ""


# ------------------------------------------------------------------------------------
# workloads
# ------------------------------------------------------------------------------------
def make_large_checkpoint(folder: Path, size_gib: float) -> Path:
    """A torch.save zip of float32 tensors of 64 MiB each, filled fast (not byte by byte)."""
    import torch

    path = folder / "large_checkpoint.pt"
    tensor_bytes = 64 * 2**20
    count = max(1, round(size_gib * 2**30 / tensor_bytes))
    gen = torch.Generator().manual_seed(0)
    state = {}
    for i in range(count):
        state[f"layers.{i}.weight"] = torch.randn(4096, 4096, generator=gen)
        state[f"layers.{i}.bias"] = torch.zeros(4096)
    torch.save(state, path)
    return path


def make_small_folder(folder: Path, count: int) -> Path:
    """``count`` small files: a third torch zip checkpoints, a third pickles, a third .npy."""
    import torch

    root = folder / "many_small"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        kind = i % 3
        if kind == 0:
            state = {"w": torch.from_numpy(rng.standard_normal((32, 16)).astype(np.float32))}
            torch.save(state, root / f"ckpt_{i:05d}.pt")
        elif kind == 1:
            obj = {
                "step": i,
                "lr": 1e-3,
                "hist": rng.standard_normal(64).tolist(),
                "tag": f"run{i}",
            }
            (root / f"state_{i:05d}.pkl").write_bytes(pickle.dumps(obj, protocol=4))
        else:
            buf = io.BytesIO()
            np.save(buf, rng.standard_normal((64, 16)).astype(np.float32))
            (root / f"array_{i:05d}.npy").write_bytes(buf.getvalue())
    return root


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------
# peers
# ------------------------------------------------------------------------------------
def install_peers(cache: Path) -> tuple[Path, dict[str, str]]:
    """A venv under ``cache`` with each peer pip-installed separately; notes for failures."""
    env_dir = cache / "peers"
    bin_dir = env_dir / "bin"
    if not (bin_dir / "python").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    notes: dict[str, str] = {}
    for peer in PEERS:
        marker = env_dir / f".installed-{peer}"
        if marker.exists():
            continue
        proc = subprocess.run(
            [
                str(bin_dir / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                peer,
                *PEER_EXTRAS.get(peer, []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            marker.write_text("ok")
        else:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            notes[peer] = f"pip install failed: {last[:120]}"
    for peer in PEERS:
        exe = bin_dir / peer
        if peer in notes or not exe.exists():
            continue
        smoke = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
        if smoke.returncode != 0:
            last = (smoke.stderr.strip().splitlines() or ["?"])[-1]
            notes[peer] = f"crashes on --help: {last[:120]}"
    return bin_dir, notes


def peer_version(bin_dir: Path, peer: str) -> str:
    proc = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "show", peer],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "?"


def commands(
    tool: str, target: Path, bin_dir: Path | None, out_dir: Path
) -> list[str] | str | None:
    """The command for ``tool`` on ``target``; a string is a reason it cannot run; None: skip."""
    if tool == "modelguard":
        exe = shutil.which("modelguard") or str(Path(sys.executable).parent / "modelguard")
        # JSON to a file: the run measures scanning, not terminal rendering.
        return [exe, "scan", "--no-cache", "--format", "json", "-o", str(out_dir / "mg.json"),
                "--fail-on", "never", str(target)]  # fmt: skip
    if tool == "sha256sum":
        if target.is_file():
            return ["sha256sum", str(target)]
        return ["sh", "-c", f"find '{target}' -type f -print0 | xargs -0 sha256sum > /dev/null"]
    assert bin_dir is not None
    exe = bin_dir / tool
    if not exe.exists():
        return f"no `{tool}` executable after install"
    if tool == "picklescan":
        return [str(exe), "--path", str(target)]
    if tool == "modelscan":
        return [str(exe), "-p", str(target)]
    if tool == "fickling":
        if target.is_dir():
            return "CLI checks one file per call; folder not timed"
        return [str(exe), "--check-safety", str(target)]
    if tool == "modelaudit":
        return [str(exe), "scan", "--no-cache", str(target)]
    return None


# ------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------
RUSAGE_CHILD = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall": wall, "rss_kb": rss_kb, "rc": proc.returncode,
                  "err": proc.stderr.decode(errors="replace")[-300:]}))
"""


def measure(cmd: list[str], timeout: float) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit code, stderr tail) of one run of ``cmd``."""
    if os.path.exists(TIME_BIN):
        with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
            start = time.perf_counter()
            proc = subprocess.run(
                [TIME_BIN, "-f", "%M", "-o", tf.name, *cmd],
                env={**os.environ, **QUIET_ENV},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
            wall = time.perf_counter() - start
            lines = [ln for ln in Path(tf.name).read_text().splitlines() if ln.strip()]
            rss_kb = int(lines[-1]) if lines and lines[-1].strip().isdigit() else 0
        return wall, rss_kb / 1024, proc.returncode, proc.stderr.decode(errors="replace")[-300:]
    out = subprocess.run(
        [sys.executable, "-c", RUSAGE_CHILD, *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        env={**os.environ, **QUIET_ENV},
    )
    data = json.loads(out.stdout)
    return data["wall"], data["rss_kb"] / 1024, data["rc"], data["err"]


# Exit codes that mean "scanned, found something" rather than "crashed".
OK_EXIT = {
    "modelguard": {0, 1},
    "sha256sum": {0},
    "picklescan": {0, 1},
    "modelscan": {0, 1, 2, 3},  # 1: issues found, 2/3: scan/usage trouble (noted)
    "fickling": {0, 1},
    "modelaudit": {0, 1},
}


def run_tool(tool: str, cmd: list[str], workload: str, timeout: float, once_over: float) -> Result:
    """Run twice and keep the warm run; a cold run slower than ``once_over`` is kept instead."""
    note = ""
    try:
        wall, rss, rc, err = measure(cmd, timeout)
        if wall <= once_over:
            wall, rss, rc, err = measure(cmd, timeout)
        else:
            note = f"single cold run (over {once_over:.0f} s, not repeated); "
    except subprocess.TimeoutExpired:
        return Result(tool, workload, None, None, None, f"timed out after {timeout:.0f} s")
    if rc not in OK_EXIT.get(tool, {0}):
        note += f"exit {rc}: {err.strip().splitlines()[-1][:100] if err.strip() else ''}"
    elif tool == "modelscan" and rc in (2, 3):
        note += f"exit {rc} (modelscan: errors or nothing scanned)"
    return Result(tool, workload, wall, rss, rc, note)


# ------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------
def table(results: list[Result], sizes: dict[str, int], counts: dict[str, int]) -> str:
    lines = [
        "| workload | tool | wall s (warm) | MB/s | files/s | peak RSS MB | exit | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        size_mb = sizes[r.workload] / 1e6
        wall = f"{r.wall_s:.2f}" if r.wall_s is not None else "-"
        rate = f"{size_mb / r.wall_s:,.1f}" if r.wall_s else "-"
        files = f"{counts[r.workload] / r.wall_s:,.0f}" if r.wall_s else "-"
        rss = f"{r.peak_rss_mb:,.0f}" if r.peak_rss_mb is not None else "-"
        rc = "" if r.exit_code is None else str(r.exit_code)
        lines.append(
            f"| {r.workload} | {r.tool} | {wall} | {rate} | {files} | {rss} | {rc} | {r.note} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    python = platform.python_version()
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {python}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0, help="large checkpoint size")
    parser.add_argument("--files", type=int, default=2000, help="files in the small-files folder")
    parser.add_argument("--no-peers", action="store_true", help="only modelguard and sha256sum")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="comma-separated peers to run (default: all of them)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelguard-bench",
        help="where the peers' venv lives",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per command run")
    parser.add_argument(
        "--once-over",
        type=float,
        default=120,
        help="a cold run longer than this many seconds is reported instead of repeating it",
    )
    args = parser.parse_args()

    bin_dir: Path | None = None
    notes: dict[str, str] = {}
    versions: dict[str, str] = {}
    tools = ["sha256sum", "modelguard"]
    if not args.no_peers:
        args.cache.mkdir(parents=True, exist_ok=True)
        bin_dir, notes = install_peers(args.cache)
        tools += [p for p in PEERS if p in args.peers.split(",")]
        versions = {p: peer_version(bin_dir, p) for p in PEERS if p not in notes}

    with tempfile.TemporaryDirectory(prefix="modelguard-bench-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        large = make_large_checkpoint(work, args.size_gib)
        small = make_small_folder(work, args.files)
        print(f"generated workloads in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        workloads = {
            f"checkpoint {tree_size(large) / 2**30:.2f} GiB": large,
            f"{args.files} small files": small,
        }
        sizes = {name: tree_size(path) for name, path in workloads.items()}
        counts = {name: 1 if p.is_file() else args.files for name, p in workloads.items()}
        results: list[Result] = []
        for name, target in workloads.items():
            for tool in tools:
                if tool in notes:
                    results.append(Result(tool, name, None, None, None, notes[tool]))
                    continue
                cmd = commands(tool, target, bin_dir, work)
                if cmd is None:
                    continue
                if isinstance(cmd, str):
                    results.append(Result(tool, name, None, None, None, cmd))
                    continue
                print(f"running {tool} on {name} ...", file=sys.stderr)
                results.append(run_tool(tool, cmd, name, args.timeout, args.once_over))

    print(f"Machine: {machine()}")
    print(f"modelguard workers: default (CPU count, at most 8); peers: {versions or 'not run'}")
    print(
        "Each command ran twice; the table shows the second (warm page cache) run,"
        f" except where noted (a cold run over {args.once_over:.0f} s is not repeated).\n"
    )
    print(table(results, sizes, counts))


if __name__ == "__main__":
    main()

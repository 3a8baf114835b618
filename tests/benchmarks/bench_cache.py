"""Scan cache: a pre-commit run over an unchanged tree of large models.

    python tests/benchmarks/bench_cache.py [--models 4] [--size-mb 512]

Writes large torch checkpoints into a temporary git repository and times
`modelguard scan` (the command the pre-commit hook runs) without the cache, on
the first cached run (entries written) and on the next runs (all hits), then
times a real `pre-commit run --all-files` with a local hook calling the same
command (language: system, so no hook environment is installed). Every timing
is a fresh process, interpreter start-up included. CPU seconds are printed too:
on a busy shared machine wall time mostly measures waiting for a core.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOOK_CONFIG = """\
repos:
  - repo: local
    hooks:
      - id: modelguard-scan
        name: modelguard scan
        entry: {modelguard} scan --no-progress --no-color
        language: system
        files: '\\.(pt|pth|bin|ckpt|pkl)$'
        require_serial: true
"""


def write_checkpoint(path: Path, size_mb: int, seed: int) -> None:
    import torch

    width = 2048
    count = max(1, size_mb * 1024 * 1024 // (width * width * 4))
    state = {f"layer{i}.weight": torch.full((width, width), float(seed)) for i in range(count)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user+sys of the child and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    modelguard = shutil.which("modelguard") or sys.exit("modelguard is not on PATH")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        repo = Path(folder) / "repo"
        (repo / "models").mkdir(parents=True)
        for index in range(args.models):
            write_checkpoint(repo / "models" / f"model{index}.pt", args.size_mb, index)
        total = sum(p.stat().st_size for p in (repo / "models").iterdir())
        env = {**os.environ, "MODELGUARD_CACHE_DIR": str(Path(folder) / "cache")}
        env.update(
            GIT_AUTHOR_NAME="b",
            GIT_AUTHOR_EMAIL="b@example.invalid",
            GIT_COMMITTER_NAME="b",
            GIT_COMMITTER_EMAIL="b@example.invalid",
            PRE_COMMIT_HOME=str(Path(folder) / "pre-commit-home"),
        )
        (repo / ".pre-commit-config.yaml").write_text(HOOK_CONFIG.format(modelguard=modelguard))
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
        files = sorted(str(p.relative_to(repo)) for p in (repo / "models").iterdir())
        scan = [modelguard, "scan", "--no-progress", *files]

        pre_commit = [sys.executable, "-m", "pre_commit", "run", "--all-files"]
        runs = [
            ("scan --no-cache", [*scan, "--no-cache"], 3),
            ("scan, first cached run (stores)", scan, 1),
            ("scan, unchanged tree (hits)", scan, args.repeats),
            ("pre-commit run --all-files (hits)", pre_commit, args.repeats),
            ("python -c pass (start-up floor)", [sys.executable, "-c", "pass"], args.repeats),
        ]
        timed(pre_commit, repo, {**env, "MODELGUARD_CACHE_DIR": str(Path(folder) / "warmup")})
        rows: list[tuple[str, list[tuple[float, float]]]] = []
        for label, command, repeats in runs:
            rows.append((label, [timed(command, repo, env) for _ in range(repeats)]))

    print(f"{args.models} torch checkpoints, {total:,} bytes in all; {os.cpu_count()} CPUs")
    print()
    print(f"load average before: {load}")
    print()
    print(f"{'run':<36} {'wall median s':>14} {'wall min s':>11} {'CPU median s':>13} {'runs':>5}")
    for label, samples in rows:
        walls = [w for w, _ in samples]
        cpus = [c for _, c in samples]
        print(
            f"{label:<36} {statistics.median(walls):>14.3f} {min(walls):>11.3f} "
            f"{statistics.median(cpus):>13.3f} {len(samples):>5}"
        )


if __name__ == "__main__":
    main()

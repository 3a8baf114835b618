"""Registry scan throughput on loopback with injected latency.

    python tests/benchmarks/bench_registry.py [--repos 1000] [--latency-ms 50] [--skip-sequential]

Serves ``--repos`` Hub repositories of one organisation from the fake Hub of
tests/registry/conftest.py (one model each: a zip laid out like torch.save's,
one in 40 malicious), adds ``--latency-ms`` to every request, and scans
``hf://acme`` with each executor: the old sequential path (one source after
another through ``remote.scan_remote_sources``), the registry driver with one
process and one thread, the process pool, and Ray with 1 and 2 workers; then a
rerun answered from the results store. It prints artifacts/s, requests and
bytes per artifact, and bytes read as a fraction of the artifacts' size, then
extrapolates to a registry of 1,000,000 models from the measured per-artifact
cost. A last row scans one large checkpoint to show the fraction read at a
realistic size.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "registry_conftest", HERE.parent / "registry" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
fixtures = importlib.util.module_from_spec(_spec)
sys.modules["registry_conftest"] = fixtures  # dataclasses look their module up
_spec.loader.exec_module(fixtures)

from modelguard.policy import Policy  # noqa: E402
from modelguard.registry import RegistryOptions, scan_registry  # noqa: E402
from modelguard.remote.scan import RemoteOptions, scan_remote_sources  # noqa: E402


@dataclass
class Row:
    mode: str
    parallel: str
    seconds: float
    artifacts: int
    requests: int
    bytes_read: int
    size: int
    flagged: int | None

    @property
    def rate(self) -> float:
        return self.artifacts / self.seconds

    def line(self) -> str:
        per = self.bytes_read / max(1, self.artifacts)
        fraction = self.bytes_read / self.size if self.size else 0.0
        return (
            f"| {self.mode:<34} | {self.parallel:>13} | {self.seconds:8.1f} | {self.rate:11.1f} "
            f"| {self.requests / max(1, self.artifacts):8.2f} | {per / 1024:10.1f} "
            f"| {100 * fraction:7.3g} % | {'n/a' if self.flagged is None else self.flagged:>7} |"
        )


HEADER = (
    "| mode                               | workers×thr.  |   wall s | artifacts/s "
    "| req/art. | KiB/artif. | of size  | flagged |\n"
    "|------------------------------------|---------------|----------|-------------"
    "|----------|------------|----------|---------|"
)


def hub_requests(hub: object) -> int:
    counts = hub.counts  # type: ignore[attr-defined]
    return int(sum(counts.values()))


def run_registry(hub: object, mode: str, parallel: str, options: RegistryOptions, size: int) -> Row:
    hub.reset_counts()  # type: ignore[attr-defined]
    started = time.perf_counter()
    run = scan_registry(["hf://acme"], Policy(), options)
    seconds = time.perf_counter() - started
    flagged = sum(1 for a in run.report.artifacts if any(f.rule_id == "MG101" for f in a.findings))
    assert not run.report.errors, run.report.errors[:3]
    return Row(
        mode,
        parallel,
        seconds,
        len(run.report.artifacts),
        hub_requests(hub),
        hub.model_bytes,  # type: ignore[attr-defined]
        size,
        flagged,
    )


def run_sequential_old(hub: object, repos: list[str], size: int) -> Row:
    hub.reset_counts()  # type: ignore[attr-defined]
    started = time.perf_counter()
    report, _ = scan_remote_sources([f"hf://{r}" for r in repos], Policy(), RemoteOptions())
    seconds = time.perf_counter() - started
    flagged = sum(1 for a in report.artifacts if any(f.rule_id == "MG101" for f in a.findings))
    return Row(
        "sequential (remote path, per repo)",
        "1×1",
        seconds,
        len(report.artifacts),
        hub_requests(hub),
        hub.model_bytes,  # type: ignore[attr-defined]
        size,
        flagged,
    )


def start_ray(cpus: int) -> float:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = time.perf_counter()
    ray.init(
        num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    return time.perf_counter() - started


def big_checkpoint_row(hub: object, megabytes: int) -> Row:
    data = fixtures.model_bytes(1, False, megabytes * 1024 * 1024)
    hub.add("big/checkpoint", {"pytorch_model.bin": data})  # type: ignore[attr-defined]
    hub.reset_counts()  # type: ignore[attr-defined]
    started = time.perf_counter()
    run = scan_registry(["hf://big"], Policy(), RegistryOptions(workers=1))
    seconds = time.perf_counter() - started
    return Row(
        f"one {megabytes} MiB checkpoint",
        "1×4",
        seconds,
        len(run.report.artifacts),
        hub_requests(hub),
        hub.model_bytes,  # type: ignore[attr-defined]
        len(data),
        None,
    )


def worker_cpu_per_artifact(hub: object, size: int) -> float:
    """CPU seconds the pool's worker processes spent per artifact (no latency)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = run_registry(hub, "cpu", "2×4", RegistryOptions(workers=2), size)
    time.sleep(2)  # the pool's processes are reaped after the run returns
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return spent / row.artifacts


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def estimate(
    rows: list[Row], cpu: float, latency: float, threads: int, host_rps: float
) -> list[str]:
    """1,000,000 models from the measured per-artifact cost."""
    pool = next(r for r in rows if r.mode.startswith("process pool"))
    requests = pool.requests / pool.artifacts
    per_bytes = pool.bytes_read / pool.artifacts
    lines = [
        "",
        f"Measured per artifact: {requests:.2f} requests, {per_bytes / 1024:.0f} KiB of model "
        f"bytes, {1000 * cpu:.1f} ms of worker CPU (the pool's processes, no latency; the "
        "driver's listing excluded).",
        "Estimate for 1,000,000 models at the same per-artifact cost, each worker one core "
        f"running {threads} scans at once, {1000 * latency:.0f} ms per request:",
        "",
        "| workers | latency-bound | CPU-bound | estimate | transfer |",
        "|--------:|--------------:|----------:|---------:|---------:|",
    ]
    for workers in (1, 8, 64, 256):
        waiting = 1e6 * requests * latency / (workers * threads)
        computing = 1e6 * cpu / workers
        total = max(waiting, computing)
        lines.append(
            f"| {workers} | {_duration(waiting)} | {_duration(computing)} | "
            f"{_duration(total)} | {1e6 * per_bytes / 1024**3:.0f} GiB |"
        )
    lines += [
        "",
        f"A host's rate limit caps every row: {1e6 * requests:,.0f} requests at {host_rps:g} "
        f"requests/s take {_duration(1e6 * requests / host_rps)} however many workers ask.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--padding-kib", type=int, default=256)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--host-rps", type=float, default=100.0, help="for the estimate")
    args = parser.parse_args()

    hub = fixtures.FakeHub()
    os.environ.update({"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"})
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    padding = args.padding_kib * 1024
    for index in range(args.repos):
        evil = index % 40 == 7
        hub.add(
            f"acme/m{index:05d}", {"pytorch_model.bin": fixtures.model_bytes(index, evil, padding)}
        )
    size = sum(len(d) for r in hub.repos.values() for d in r.files.values())
    repos = sorted(hub.repos)
    threads = RegistryOptions().threads
    rows: list[Row] = []

    cpu = worker_cpu_per_artifact(hub, size)
    hub.delay = args.latency_ms / 1000
    if not args.skip_sequential:
        rows.append(run_sequential_old(hub, repos, size))
        print(rows[-1].line(), flush=True)
        rows.append(
            run_registry(
                hub,
                "registry driver, sequential",
                "1×1",
                RegistryOptions(workers=1, threads=1),
                size,
            )
        )
        print(rows[-1].line(), flush=True)
    rows.append(
        run_registry(
            hub, "process pool (default)", f"2×{threads}", RegistryOptions(workers=2), size
        )
    )
    print(rows[-1].line(), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "results.sqlite"
        run_registry(hub, "fill store", "", RegistryOptions(workers=2, results_db=db), size)
        rows.append(
            run_registry(
                hub,
                "rerun, all from the store",
                "2×4",
                RegistryOptions(workers=2, results_db=db),
                size,
            )
        )
    print(rows[-1].line(), flush=True)
    ray_start = {}
    try:
        import ray
    except ModuleNotFoundError:
        ray = None
    if ray is not None:
        for cpus in (1, 2):
            ray_start[cpus] = start_ray(cpus)
            rows.append(
                run_registry(
                    hub,
                    f"Ray, {cpus} worker{'s' * (cpus > 1)}",
                    f"{cpus}×{threads}",
                    RegistryOptions(executor="ray"),
                    size,
                )
            )
            print(rows[-1].line(), flush=True)
            ray.shutdown()
    hub.delay = 0.0
    big = big_checkpoint_row(hub, args.big_mib)

    print()
    print(
        f"{args.repos} repositories, one {size / args.repos / 1024:.0f} KiB model each, "
        f"{args.latency_ms:.0f} ms added to every request (loopback, 2-core machine)"
    )
    print()
    print(HEADER)
    for row in rows:
        print(row.line())
    print(big.line())
    if ray_start:
        print()
        print(
            "Ray cluster start (not in the wall times): "
            + ", ".join(f"{c} CPU: {s:.1f} s" for c, s in ray_start.items())
        )
    for line in estimate(rows, cpu, args.latency_ms / 1000, threads, args.host_rps):
        print(line)
    hub.close()


if __name__ == "__main__":
    main()

"""Ray: a local cluster (2 CPUs); a worker killed mid-run loses and duplicates nothing."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelguard.policy import Policy
from modelguard.registry import RegistryOptions, scan_registry

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback cluster; writes no token to HOME
    ray.init(
        num_cpus=2,
        num_gpus=1,  # declared, not real: lets the test see GPU requests scheduled
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    yield ray
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below ``root`` (Linux /proc)."""
    parents: dict[int, int] = {}
    lines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        lines[pid] = cmdline.strip()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = lines[pid]
                frontier.append(pid)
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds workers through /proc")
def test_killed_worker_loses_and_duplicates_nothing(
    cluster: Any, hub_fleet: Any, same_report: Any
) -> None:
    hub = hub_fleet.hub
    expected = scan_registry(["hf://acme"], Policy(), RegistryOptions(workers=1)).report
    hub.reset_counts()
    hub.delay = 0.01  # long enough a run to kill a worker in the middle of it
    killed: list[tuple[int, str]] = []

    def kill_one_scanning_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if hub.counts["file"] >= 80:
                for pid, cmdline in descendants(os.getpid()).items():
                    if cmdline.startswith("ray::scan_batch"):
                        os.kill(pid, signal.SIGKILL)
                        killed.append((pid, cmdline))
                        break
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_scanning_worker, daemon=True)
    killer.start()
    run = scan_registry(["hf://acme"], Policy(), RegistryOptions(executor="ray"))
    killer.join()
    assert killed, "no scanning Ray worker was found to kill"
    paths = [a.path for a in run.report.artifacts]
    assert len(paths) == len(set(paths)) == 420  # nothing lost, nothing twice
    assert not same_report(run.report, expected)
    assert run.stats.scanned == 420
    assert hub.counts["file"] >= 630  # every file read (those of the re-run task again)


def test_ray_results_equal_the_pool_and_the_store_works(
    cluster: Any, hub_fleet: Any, tmp_path: Path, same_report: Any
) -> None:
    db = tmp_path / "results.sqlite"
    on_ray = scan_registry(["hf://acme"], Policy(), RegistryOptions(executor="ray", results_db=db))
    pool = scan_registry(["hf://acme"], Policy(), RegistryOptions(workers=2))
    assert not same_report(on_ray.report, pool.report)
    hub_fleet.hub.reset_counts()
    again = scan_registry(["hf://acme"], Policy(), RegistryOptions(executor="ray", results_db=db))
    assert again.stats.from_store == 420 and hub_fleet.hub.model_bytes == 0


def test_backdoor_analyses_as_tasks(cluster: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import sys

    from modelguard.backdoor.analysis import analyze_backdoor
    from modelguard.registry.backdoor import BackdoorJob, analyze_many, task_resources

    fixtures = Path(__file__).resolve().parents[2] / "fixtures" / "backdoor"
    sys.path.insert(0, str(fixtures))
    import family  # the backdoor fixtures' data, rebuilt from sklearn

    family.write_data(tmp_path, family.split_digits())
    options = {"defences": False}  # profile only: this tests the executor, not detection
    jobs = [
        BackdoorJob(str(fixtures / name), str(tmp_path / "val.npz"), options)
        for name in ("badnet_0.ts", "badnet_0.onnx")
    ]
    results = analyze_many(jobs, device="cpu", executor="ray")
    assert [Path(r.model).name for r in results] == ["badnet_0.ts", "badnet_0.onnx"]  # in order
    direct = analyze_backdoor(jobs[0].model, jobs[0].data, device="cpu", **options)
    assert results[0].score == direct.score
    assert results[0].report.findings == direct.report.findings
    assert task_resources("cuda") == {"num_cpus": 1, "num_gpus": 1}
    # On the cluster's one (declared) GPU the cuda tasks are scheduled and run; this
    # machine has no CUDA, so the analysis itself says so, per model.
    errors = analyze_many(jobs[:1], device="cuda", executor="ray")
    assert "CUDA" in errors[0] or "cuda" in errors[0]

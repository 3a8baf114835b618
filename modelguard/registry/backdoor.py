"""Backdoor analysis of many models, one executor task per model.

A thin adapter over :func:`modelguard.analyze_backdoor` as it exists: each job
is that call's arguments. On Ray, with ``device="cuda"`` each task asks for one
GPU (``num_gpus=1``), so Ray runs as many analyses at once as the cluster has
GPUs and never two on one; on CPU a task takes one CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelguard.registry.executors import RAY_PREFIX, Executor


@dataclass(frozen=True)
class BackdoorJob:
    """``analyze_backdoor(model, data, **options)``; ``device`` comes from the run."""

    model: str
    data: str
    options: Mapping[str, Any] = field(default_factory=dict)


def task_resources(device: str) -> dict[str, float]:
    """What one analysis asks the cluster for."""
    return {"num_cpus": 1, "num_gpus": 1 if device == "cuda" else 0}


def analyze_jobs(device: str, jobs: Sequence[BackdoorJob]) -> list[Any]:
    """Run in a worker: the analyses of ``jobs`` (errors returned, not raised)."""
    from modelguard import analyze_backdoor
    from modelguard.errors import ModelGuardError

    results: list[Any] = []
    for job in jobs:
        try:
            results.append(analyze_backdoor(job.model, job.data, device=device, **job.options))
        except ModelGuardError as exc:
            results.append(f"{job.model}: {exc}")
    return results


def analyze_many(
    jobs: Sequence[BackdoorJob],
    *,
    device: str = "auto",
    executor: str | None = "ray",
    workers: int | None = None,
) -> list[Any]:
    """The analysis of every job, in order: a ``BackdoorAnalysis``, or an error message.

    Raises:
        UsageError: an unknown executor.
        MissingExtra: Ray is asked for but not installed.
    """
    runner: Executor
    if executor is not None and (executor == "ray" or executor.startswith(RAY_PREFIX)):
        from modelguard.registry.executors.ray import RayExecutor

        address = None if executor == "ray" else executor
        runner = RayExecutor(address, workers, task_retries=1, resources=task_resources(device))
    else:
        from modelguard.registry.executors import make_executor

        runner = make_executor(executor, workers)
    by_model: dict[int, Any] = {}
    indexed = [[(index, job)] for index, job in enumerate(jobs)]
    try:
        for done in runner.map_batches(_indexed_jobs, device, indexed):
            ((index, job),) = done.items
            by_model[index] = done.results[0] if done.results else f"{job.model}: {done.error}"
    finally:
        runner.close()
    return [by_model[index] for index in range(len(jobs))]


def _indexed_jobs(device: str, items: Sequence[tuple[int, BackdoorJob]]) -> list[Any]:
    return analyze_jobs(device, [job for _, job in items])

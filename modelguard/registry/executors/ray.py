"""Ray: one task per batch of artifacts, on a local or remote cluster.

Ray schedules the tasks; this adapter only keeps a bounded number in flight,
streams their results back to the driver as they finish (the driver alone
writes the store and the report), and lets Ray retry a task whose worker
process died (``max_retries``). Application errors are not retried: the scan
turns every content problem into a finding and every read failure into an
error, so an exception escaping a task is a bug, reported per artifact.

``modelguard`` must be installed in the cluster's Python (the same version:
results from workers of another rule set are refused by the driver).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from modelguard.errors import MissingExtra
from modelguard.registry.executors import BatchDone

C = TypeVar("C")
W = TypeVar("W")
R = TypeVar("R")


def import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise MissingExtra("running scans on Ray", "ray", "ray") from None
    return ray


class RayExecutor:
    """Tasks on the cluster at ``address`` (None: ``RAY_ADDRESS``, else a local one).

    A Ray instance already started in this process (``ray.init()``) is used as it is.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        task_retries: int = 3,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        ray = import_ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address is not None:
                kwargs["address"] = address
            elif not os.environ.get("RAY_ADDRESS"):
                kwargs["include_dashboard"] = False
                if workers is not None:
                    kwargs["num_cpus"] = workers
            ray.init(**kwargs)
            self._started = True
        self.task_retries = task_retries
        self.resources = dict(resources or {"num_cpus": 1})
        cpus = float(ray.cluster_resources().get("CPU", 1))
        per_task = float(self.resources.get("num_cpus", 1) or 1)
        self.parallelism = max(1, int(cpus / per_task))

    def map_batches(
        self,
        func: Callable[[C, Sequence[W]], list[R]],
        config: C,
        batches: Iterable[Sequence[W]],
    ) -> Iterator[BatchDone[W, R]]:
        ray = self._ray
        task = ray.remote(max_retries=self.task_retries, retry_exceptions=False, **self.resources)(
            func
        )
        config_ref = ray.put(config)  # sent to the object store once, not with every task
        source = iter(batches)
        pending: dict[Any, Sequence[W]] = {}
        in_flight = 2 * self.parallelism
        try:
            while True:
                while len(pending) < in_flight:
                    batch = next(source, None)
                    if batch is None:
                        break
                    pending[task.remote(config_ref, batch)] = batch
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    batch = pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        yield BatchDone(batch, None, f"Ray task failed: {_first_line(exc)}")
                    else:
                        yield BatchDone(batch, results)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"

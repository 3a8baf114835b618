"""Where the work runs: a local process pool (the default) or a Ray cluster.

An executor maps a module-level function over batches and yields each batch's
results as soon as they arrive, with a bounded number of batches in flight and
a batch whose worker died retried. It schedules nothing itself beyond that: the
pool hands batches to free processes, Ray to its own scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from modelguard.errors import UsageError

C = TypeVar("C")
W = TypeVar("W")
R = TypeVar("R")

RAY_PREFIX = "ray://"


@dataclass(frozen=True)
class BatchDone(Generic[W, R]):
    """A finished batch: its results in order, or why it failed after its retries."""

    items: Sequence[W]
    results: list[R] | None
    error: str | None = None


class Executor(Protocol):
    name: str
    parallelism: int  # batches that run at once

    def map_batches(
        self,
        func: Callable[[C, Sequence[W]], list[R]],
        config: C,
        batches: Iterable[Sequence[W]],
    ) -> Iterator[BatchDone[W, R]]: ...

    def close(self) -> None: ...


def make_executor(spec: str | None, workers: int | None) -> Executor:
    """``None``/``pool``: the local process pool; ``ray`` (local, or ``RAY_ADDRESS``);
    ``ray://HOST:PORT``: a Ray cluster through Ray Client.

    Raises:
        UsageError: an unknown executor.
        MissingExtra: Ray is asked for but not installed.
    """
    if spec in (None, "", "pool"):
        from modelguard.registry.executors.pool import PoolExecutor

        return PoolExecutor(workers)
    if spec == "ray" or spec.startswith(RAY_PREFIX):
        from modelguard.registry.executors.ray import RayExecutor

        return RayExecutor(address=None if spec == "ray" else spec, workers=workers)
    raise UsageError(f"executor {spec!r}: expected 'pool', 'ray' or 'ray://HOST:PORT'")

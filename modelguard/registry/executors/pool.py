"""The default executor: batches in local worker processes (or inline for one worker)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from modelguard.registry.executors import BatchDone

C = TypeVar("C")
W = TypeVar("W")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class PoolExecutor:
    """``workers`` processes; a batch whose process died is retried ``task_retries`` times."""

    name = "pool"

    def __init__(self, workers: int | None = None, task_retries: int = 2) -> None:
        self.parallelism = default_workers() if workers is None else max(1, workers)
        self.task_retries = task_retries

    def map_batches(
        self,
        func: Callable[[C, Sequence[W]], list[R]],
        config: C,
        batches: Iterable[Sequence[W]],
    ) -> Iterator[BatchDone[W, R]]:
        if self.parallelism <= 1:
            for batch in batches:
                yield BatchDone(batch, func(config, batch))
            return
        yield from self._in_processes(func, config, iter(batches))

    def _in_processes(
        self,
        func: Callable[[C, Sequence[W]], list[R]],
        config: C,
        batches: Iterator[Sequence[W]],
    ) -> Iterator[BatchDone[W, R]]:
        in_flight = 2 * self.parallelism
        pool = ProcessPoolExecutor(max_workers=self.parallelism)
        pending: dict[Future[list[R]], tuple[Sequence[W], int, ProcessPoolExecutor]] = {}
        again: deque[tuple[Sequence[W], int]] = deque()
        exhausted = False
        try:
            while True:
                while len(pending) < in_flight and (again or not exhausted):
                    if again:
                        batch, attempt = again.popleft()
                    else:
                        next_batch = next(batches, None)
                        if next_batch is None:
                            exhausted = True
                            continue
                        batch, attempt = next_batch, 0
                    pending[pool.submit(func, config, batch)] = (batch, attempt, pool)
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    batch, attempt, submitted_to = pending.pop(future)
                    try:
                        results = future.result()
                    except BrokenProcessPool as exc:
                        # A worker died (killed, out of memory): every batch it held
                        # fails with it. Start a new pool once and try them again.
                        if submitted_to is pool:
                            pool.shutdown(wait=False, cancel_futures=True)
                            pool = ProcessPoolExecutor(max_workers=self.parallelism)
                        if attempt < self.task_retries:
                            again.append((batch, attempt + 1))
                        else:
                            yield BatchDone(batch, None, f"worker process died ({exc})")
                    except Exception as exc:  # noqa: BLE001 - reported per artifact, never a pass
                        yield BatchDone(batch, None, f"{type(exc).__name__}: {exc}")
                    else:
                        yield BatchDone(batch, results)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Nothing outlives :meth:`map_batches`."""

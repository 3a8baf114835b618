"""Per-host request pacing and back-off, shared by every thread of a process.

A registry scan sends many small range requests to few hosts (the Hub, its CDN,
an object store). Hosts answer overload with 429 or 5xx, often with a
``Retry-After`` header; hammering on would only lengthen the penalty. A
:class:`Throttle` therefore

* spaces requests to one host at most ``rate`` per second (a token bucket, so
  short bursts up to ``burst`` pass at once),
* on a transient failure (429, 5xx, connection lost) holds *every* thread's
  next request to that host until the wait is over: ``Retry-After`` when the
  server gave one (capped at ``max_delay``), else exponential back-off with
  jitter, and
* retries the request up to ``retries`` times before the failure stands.

Each worker process keeps its own throttles (:func:`throttle_for`); a cluster of
N workers therefore shares a host's budget by giving each worker ``rate / N``.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to push one host: pacing, retries and the back-off between them."""

    rate: float | None = None  # requests per second per host; None: unpaced
    burst: int = 8
    retries: int = 8
    base_delay: float = 0.25
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate {self.rate!r}: expected requests per second > 0")
        if self.retries < 0:
            raise ValueError(f"retries {self.retries!r}: expected a count >= 0")


@dataclass
class _HostState:
    tokens: float
    updated: float
    blocked_until: float = 0.0


@dataclass
class Throttle:
    """Paces and retries calls per host; safe to share between threads."""

    policy: RetryPolicy
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    backoffs: int = 0  # waits caused by failures, for progress reports and tests
    _hosts: dict[str, _HostState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(
        self,
        url: str,
        func: Callable[[], T],
        retryable: Callable[[BaseException], float | bool],
    ) -> T:
        """Run ``func`` for ``url``'s host, paced, retrying what ``retryable`` accepts.

        ``retryable(exc)`` returns False for a final failure, True to retry after
        the policy's back-off, or a number of seconds the server asked to wait.
        """
        host = _host(url)
        attempt = 0
        while True:
            self._wait_turn(host)
            try:
                return func()
            except Exception as exc:
                verdict = retryable(exc)
                if verdict is False or attempt >= self.policy.retries:
                    raise
                asked = None if verdict is True else float(verdict)
                self._back_off(host, attempt, asked)
                attempt += 1

    def _wait_turn(self, host: str) -> None:
        while True:
            with self._lock:
                now = self.clock()
                state = self._hosts.get(host)
                if state is None:
                    state = _HostState(tokens=float(self.policy.burst), updated=now)
                    self._hosts[host] = state
                wait = state.blocked_until - now
                if wait <= 0 and self.policy.rate is not None:
                    rate = self.policy.rate
                    state.tokens = min(
                        float(self.policy.burst), state.tokens + (now - state.updated) * rate
                    )
                    state.updated = now
                    if state.tokens >= 1 - 1e-9:  # float sums of rate * elapsed fall short
                        state.tokens -= 1
                        return
                    wait = max((1 - state.tokens) / rate, 1e-3)
                elif wait <= 0:
                    return
            self.sleep(wait)

    def _back_off(self, host: str, attempt: int, asked: float | None) -> None:
        if asked is not None:
            delay = min(max(asked, 0.0), self.policy.max_delay)
        else:
            ceiling = min(self.policy.max_delay, self.policy.base_delay * (2**attempt))
            # Full jitter: workers that failed together do not come back together.
            delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not cryptographic
        with self._lock:
            self.backoffs += 1
            state = self._hosts[host]
            state.blocked_until = max(state.blocked_until, self.clock() + delay)


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_THROTTLES: dict[RetryPolicy, Throttle] = {}
_THROTTLES_LOCK = threading.Lock()


def throttle_for(policy: RetryPolicy) -> Throttle:
    """This process's throttle for ``policy`` (one per policy, shared by threads)."""
    with _THROTTLES_LOCK:
        throttle = _THROTTLES.get(policy)
        if throttle is None:
            throttle = _THROTTLES[policy] = Throttle(policy)
        return throttle

"""429s and pacing: the run backs off, honours Retry-After, and completes."""

from __future__ import annotations

from typing import Any

import pytest

from modelguard.policy import Policy
from modelguard.registry import RegistryOptions, scan_registry
from modelguard.remote.http_range import TransientReadError, retry_verdict
from modelguard.remote.throttle import RetryPolicy, Throttle, parse_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_throttle_waits_what_retry_after_asks_then_succeeds() -> None:
    clock = FakeClock()
    throttle = Throttle(RetryPolicy(retries=3), clock=clock, sleep=clock.sleep)
    answers: list[Exception | str] = [
        TransientReadError("429", 429, retry_after=7.0),
        TransientReadError("503", 503),
        "ok",
    ]

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert throttle.call("https://hub.example/x", call, retry_verdict) == "ok"
    assert clock.slept[0] == 7.0  # exactly what the server asked for
    assert 0.125 <= clock.slept[1] <= 0.5  # then jittered exponential back-off
    assert throttle.backoffs == 2


def test_throttle_gives_up_after_its_retries_and_never_retries_answers() -> None:
    clock = FakeClock()
    throttle = Throttle(RetryPolicy(retries=2), clock=clock, sleep=clock.sleep)
    calls = 0

    def always_503() -> None:
        nonlocal calls
        calls += 1
        raise TransientReadError("503", 503)

    with pytest.raises(TransientReadError):
        throttle.call("https://h/x", always_503, retry_verdict)
    assert calls == 3
    with pytest.raises(ValueError):
        throttle.call("https://h/x", lambda: int("x"), retry_verdict)
    assert calls == 3


def test_throttle_paces_requests_per_host() -> None:
    clock = FakeClock()
    throttle = Throttle(RetryPolicy(rate=10, burst=2), clock=clock, sleep=clock.sleep)
    for _ in range(12):
        throttle.call("https://a/x", lambda: None, retry_verdict)
    throttle.call("https://b/x", lambda: None, retry_verdict)  # another host: its own budget
    # 2 in the burst, then one every 0.1 s on host a; host b waited for nothing.
    assert clock.now == pytest.approx(1.0)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    with pytest.raises(ValueError):
        RetryPolicy(rate=0)


def test_hub_answering_429_for_a_while(hub_fleet: Any) -> None:
    hub = hub_fleet.hub
    hub.answer_429 = 20  # model_info and file requests alike, with Retry-After: 1
    run = scan_registry(["hf://acme"], Policy(), RegistryOptions(workers=1, threads=4))
    assert hub.counts["429"] == 20
    assert run.report.errors == ()
    assert len(run.report.artifacts) == 420
    assert {
        a.path.split("@")[0]
        for a in run.report.artifacts
        if a.findings and any(f.rule_id == "MG101" for f in a.findings)
    } == {f"hf://{r}" for r in hub_fleet.malicious}

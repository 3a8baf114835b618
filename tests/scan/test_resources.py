"""Resource bounds: scan work and report size grow at most linearly with the file.

Each hostile case from issue 10 (``resource_cases.py``) is scanned at two sizes
and the work is counted, not timed: opcodes walked and bytes fetched by every
pickle walk, findings listed, decompressed bytes. The larger case may cost at
most proportionally more (plus a constant); before the fixes these grew
quadratically or exponentially. ``tests/benchmarks/bench_resources.py`` times
the full-size cases.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import resource_cases as cases

import modelguard
from modelguard.findings import Location, Severity
from modelguard.limits import Limits
from modelguard.policy import Policy, ScanSettings
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import dispatch
from modelguard.scan.pickle import reader as pickle_reader
from modelguard.scan.pickle import walker as pickle_walker


@dataclass
class Work:
    opcodes: int = 0
    fetched: int = 0


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Iterator[Work]:
    """Counts what every pickle walk costs: opcodes parsed and bytes read."""
    counted = Work()
    run = pickle_walker.Walker.run
    fill = pickle_reader.Reader._fill

    def counting_run(self: pickle_walker.Walker) -> pickle_walker.PickleStream:
        result = run(self)
        counted.opcodes += result.opcodes
        return result

    def counting_fill(self: pickle_reader.Reader, need: int, opcode_offset: int) -> None:
        before = self.fetched
        try:
            fill(self, need, opcode_offset)
        finally:
            counted.fetched += self.fetched - before

    monkeypatch.setattr(pickle_walker.Walker, "run", counting_run)
    monkeypatch.setattr(pickle_reader.Reader, "_fill", counting_fill)
    yield counted


def scan(data: bytes, limits: Limits | None = None) -> ScanContext:
    ctx = ScanContext(location=Location("case"), settings=ScanSettings(limits or Limits()))
    dispatch(Input(io.BytesIO(data), len(data), "case"), ctx)
    return ctx


def cost(work: Work, data: bytes, limits: Limits | None = None) -> tuple[int, ScanContext]:
    before = work.opcodes + work.fetched
    ctx = scan(data, limits)
    return work.opcodes + work.fetched - before, ctx


def assert_linear(small: tuple[int, int], large: tuple[int, int], slack: int = 1 << 20) -> None:
    """(size, cost) pairs: the large case costs at most its share of the small one, plus slack."""
    (small_size, small_cost), (large_size, large_cost) = small, large
    assert large_cost <= small_cost * large_size / small_size * 1.5 + slack, (small, large)


def test_distinct_imports_are_aggregated_and_capped(work: Work) -> None:
    data = cases.distinct_imports(20_000)
    spent, ctx = cost(work, data)
    findings = ctx.findings
    # one listed finding per import up to the per-rule cap, then one summary
    mg102 = [f for f in findings if f.rule_id == "MG102"]
    assert len(mg102) == Limits().max_findings_per_rule + 1
    summary = mg102[-1]
    assert summary.evidence == "aggregated"
    assert f"{20_000 - Limits().max_findings_per_rule:,} more" in summary.message
    assert summary.severity is Severity.MEDIUM
    assert spent <= 4 * len(data) + (1 << 20)


def test_findings_per_file_cap_is_mg002(work: Work) -> None:
    limits = Limits(max_findings=50, max_findings_per_rule=1_000)
    ctx = scan(cases.distinct_imports(500), limits)
    listed = [f for f in ctx.findings if f.evidence != "aggregated"]
    assert len(listed) <= 51  # the cap, plus the MG002 that says it was reached
    assert any(f.rule_id == "MG002" and f.evidence == "findings in one file" for f in listed)
    summary = next(f for f in ctx.findings if f.evidence == "aggregated")
    assert "450 more" in summary.message or "449 more" in summary.message


def test_report_of_many_imports_stays_small(tmp_path: Path) -> None:
    target = tmp_path / "many.pkl"
    target.write_bytes(cases.distinct_imports(30_000))
    report = modelguard.scan(target, policy=Policy(), workers=1)
    assert len(report.findings) <= Limits().max_findings_per_rule + 2
    assert report.exit_code(Severity.MEDIUM) == 1


def test_fake_pickle_starts_in_trailing_data_cost_linear_work(work: Work) -> None:
    small = cases.fake_pickle_starts(10, 4_000)
    large = cases.fake_pickle_starts(40, 4_000)
    small_cost, _ = cost(work, small)
    large_cost, ctx = cost(work, large)
    assert_linear((len(small), small_cost), (len(large), large_cost))
    # the trailing bytes are reported; the search stops at its budget (MG002), not at the end
    assert "MG106" in {f.rule_id for f in ctx.findings}


def test_trailing_search_budget_is_reported_when_spent(work: Work) -> None:
    ctx = scan(cases.fake_pickle_starts(100, 20_000), Limits(max_search_work=1))
    assert any(f.rule_id == "MG002" and "trailing data" in (f.evidence or "") for f in ctx.findings)


def test_zip_of_dense_pickles_is_bounded_by_its_compressed_size(work: Work) -> None:
    limits = Limits(inflated_work_floor=100_000, max_inflated_work=50)
    small = cases.zip_of_dense_pickles(2, 1_000_000)
    large = cases.zip_of_dense_pickles(8, 1_000_000)
    small_cost, _ = cost(work, small, limits)
    large_cost, ctx = cost(work, large, limits)
    assert work.opcodes <= 50 * (len(small) + len(large)) + 2 * 100_000 + 10
    assert_linear((len(small), small_cost), (len(large), large_cost), slack=4 << 20)
    caps = {f.evidence for f in ctx.findings if f.rule_id == "MG002"}
    assert any("decompressed content" in (c or "") for c in caps)


def test_decompression_is_budgeted_across_members() -> None:
    # each member alone is under the per-member bomb size; together they are a bomb
    limits = Limits(bomb_min_size=4_000_000, max_compression_ratio=100)
    ctx = scan(cases.zip_of_dense_pickles(6, 1_000_000), limits)
    bombs = [f for f in ctx.findings if f.rule_id == "MG204"]
    assert [f.evidence for f in bombs] == ["aggregate-ratio"]


def test_joblib_empty_arrays_cost_linear_work(work: Work) -> None:
    small = cases.joblib_empty_arrays(10)
    large = cases.joblib_empty_arrays(40)
    small_cost, small_ctx = cost(work, small)
    large_cost, large_ctx = cost(work, large)
    assert_linear((len(small), small_cost), (len(large), large_cost), slack=64 << 10)
    assert small_ctx.findings == [] and large_ctx.findings == []


def _run_with_timeout(call: object, seconds: float = 20) -> object:
    done: list[object] = []

    def target() -> None:
        try:
            done.append(call())  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - the test only needs to see it returned
            done.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked on a FIFO"
    return done[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_lock_and_verify_never_block_on_a_fifo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, verify = modelguard.lock, modelguard.verify
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    named = _run_with_timeout(lambda: lock([fifo], scan=False))
    assert not isinstance(named, BaseException) and named.errors  # type: ignore[attr-defined]
    folder = _run_with_timeout(lambda: lock([tmp_path], scan=False))
    assert not isinstance(folder, BaseException) and folder.errors  # type: ignore[attr-defined]
    assert not isinstance(_run_with_timeout(lambda: lock([tmp_path / "model.pkl"])), Exception)
    checked = _run_with_timeout(lambda: verify(tmp_path))  # the folder holds the FIFO
    assert not isinstance(checked, BaseException), checked

"""What a registry run looked like: a live status line, and a table by verdict and group."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelguard.findings import ArtifactResult, Report, Severity

if TYPE_CHECKING:  # the registry engine loads only for registry scans
    from modelguard.registry.run import Progress

VERDICTS = ("fail", "pass", "error")


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@dataclass
class RunTally:
    """Fed with every :class:`Progress` event; knows groups, store hits and the rate."""

    groups: dict[str, str] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)
    bytes_read: int = 0
    done: int = 0
    elapsed: float = 0.0

    def update(self, event: Progress) -> None:
        if event.phase != "scanning":
            return
        self.groups[event.display] = event.group
        if event.from_store:
            self.stored.add(event.display)
        self.bytes_read = event.bytes_read
        self.done = event.done
        self.elapsed = event.elapsed

    def status(self) -> str:
        rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
        return f"{rate:.1f} artifacts/s, {human_bytes(self.bytes_read)} read"


def artifact_verdict(artifact: ArtifactResult, fail_on: Severity | None) -> str:
    failed = fail_on is not None and any(f.severity >= fail_on for f in artifact.findings)
    return "fail" if failed else "pass"


def summary_table(report: Report, tally: RunTally, fail_on: Severity | None) -> str:
    """Artifacts by verdict, then by organisation or prefix (with store hits)."""
    rows: dict[str, Counter[str]] = {}
    for artifact in report.artifacts:
        group = tally.groups.get(artifact.path, "")
        counts = rows.setdefault(group, Counter())
        counts[artifact_verdict(artifact, fail_on)] += 1
        counts["stored"] += artifact.path in tally.stored
    for error in report.errors:
        rows.setdefault(tally.groups.get(error.path, error.path), Counter())["error"] += 1
    totals: Counter[str] = Counter()
    for counts in rows.values():
        totals.update(counts)
    width = max([len("group"), *(len(g) for g in rows)])
    lines = ["verdict  artifacts"]
    lines += [f"{verdict:<8} {totals[verdict]:>9,}" for verdict in VERDICTS]
    lines.append("")
    lines.append(f"{'group':<{width}}  {'fail':>6}  {'pass':>6}  {'error':>6}  {'from store':>10}")
    for group in sorted(rows):
        c = rows[group]
        cells = "  ".join(f"{c[key]:>6,}" for key in VERDICTS)
        lines.append(f"{group:<{width}}  {cells}  {c['stored']:>10,}")
    lines.append(f"{len(report.artifacts):,} artifacts, {tally.status()}")
    return "\n".join(lines)

"""What a format scanner is given: the bytes (``Input``) and a ``ScanContext``.

A scanner reads from ``Input.stream`` (seekable, never executed), reports
findings through ``ScanContext.report`` and hands inner files (archive members,
embedded pickles) to ``modelguard.scan.formats.descend``. It never catches
exceptions broadly: malformed input is reported as a finding at the place it is
detected; anything else is a bug and surfaces as MG004. The context knows
nothing of formats or dispatch: it reports, keeps budgets and makes children.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from modelguard.findings import Finding, Location, Severity
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.rules import get as get_rule
from modelguard.rules.base import Rule
from modelguard.rules.scan import ARCHIVE_BOMB, SCAN_LIMIT_REACHED


@dataclass
class Input:
    """Bytes to scan: a seekable binary stream, its size and a display name.

    ``fs_path`` is the file on disk when the input is a plain file (not an
    archive member); scanners that must reason about neighbouring files (ONNX
    external data) use it. Format is never chosen from ``name``.
    """

    stream: BinaryIO
    size: int
    name: str
    fs_path: Path | None = None

    def read_at(self, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset`` (fewer at end of input)."""
        self.stream.seek(offset)
        return self.stream.read(max(0, min(length, self.size - offset)))


# Distinct (rule, place, evidence) keys remembered for de-duplication; past this
# many, repeats are no longer recognised (they are only counted, never listed).
_MAX_SEEN = 200_000
_EXAMPLES = 5  # evidence examples kept in a summary finding
_EXAMPLE_CHARS = 80
# Summary findings handed out by ScanContext.findings -> the counts they stand for.
_SUMMARIES: weakref.WeakKeyDictionary[Finding, _Overflow] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class _Overflow:
    """Findings of one rule at one place that were counted instead of listed."""

    rule: Rule
    location: Location
    severity: Severity
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.count += 1
        self.severity = max(self.severity, finding.severity)
        example = finding.evidence or finding.message
        if len(self.examples) < _EXAMPLES and example not in self.examples:
            self.examples.append(example[:_EXAMPLE_CHARS])

    def merge(self, other: _Overflow) -> None:
        self.count += other.count
        self.severity = max(self.severity, other.severity)
        for example in other.examples:
            if len(self.examples) < _EXAMPLES and example not in self.examples:
                self.examples.append(example)

    def finding(self, listed: int) -> Finding:
        where = f" in {self.location.member_path}" if self.location.members else ""
        return self.rule.finding(
            f"{self.count:,} more findings of this rule{where} were counted, not listed "
            f"(the first {listed:,} are); e.g. {', '.join(self.examples)}",
            self.location,
            evidence="aggregated",
            severity=self.severity,
        )


@dataclass
class _Shared:
    """State shared by every context of one top-level artifact.

    Findings are listed up to ``max_findings_per_rule`` per rule and place and
    ``max_findings`` in all; the rest are counted into one summary per rule (and
    place, until the overall cap is reached), so a file of a million distinct
    imports costs a million counter increments, not a million findings.
    """

    findings: list[Finding] = field(default_factory=list)
    decompressed: int = 0
    compressed: int = 0
    inflated_work: int = 0  # pickle opcodes walked in decompressed content
    format_label: str | None = None
    # (rule, place, evidence) -> index of the listed finding (-1: only counted)
    seen: dict[tuple[str, Location, str | None], int] = field(default_factory=dict)
    listed: dict[tuple[str, Location], int] = field(default_factory=dict)
    overflow: dict[tuple[str, Location], _Overflow] = field(default_factory=dict)
    capped: bool = False


FindingFilter = Callable[[Finding], bool]


class ScanContext:
    """Reporting, limits and budgets for one (possibly nested) input."""

    def __init__(
        self,
        *,
        location: Location,
        settings: ScanSettings | None = None,
        depth: int = 0,
        shared: _Shared | None = None,
        keep: FindingFilter | None = None,
    ) -> None:
        self.location = location
        self.settings = settings or ScanSettings()
        self.depth = depth
        self._shared = shared or _Shared()
        self._budgets = self._shared  # where decompression and work are counted
        self._keep = keep

    @property
    def limits(self) -> Limits:
        return self.settings.limits

    @property
    def allow_globals(self) -> frozenset[str]:
        return self.settings.allow_globals

    # -- reporting -------------------------------------------------------------------
    @property
    def findings(self) -> list[Finding]:
        """Every finding listed so far, then one summary per group that overflowed."""
        shared = self._shared
        summaries = []
        for key, over in shared.overflow.items():
            summary = over.finding(shared.listed.get(key, 0))
            _SUMMARIES[summary] = over  # so that adopt() can add up what it stands for
            summaries.append(summary)
        return shared.findings + summaries

    def report(
        self,
        rule: Rule,
        message: str,
        *,
        offset: int | None = None,
        evidence: str | None = None,
        severity: Severity | None = None,
        member: str | None = None,
    ) -> None:
        """Record a finding of ``rule`` here (or in ``member`` below here).

        Severity defaults to the rule's. The same rule with the same evidence at
        the same place is recorded once. A finding this context's filter rejects
        is dropped.
        """
        shared = self._shared
        location = self.location.inside(member) if member is not None else self.location
        earlier = shared.seen.get((rule.id, location, evidence)) if evidence is not None else None
        if earlier is not None and (
            earlier < 0 or (severity or rule.severity) <= shared.findings[earlier].severity
        ):
            return  # cheap exit before a Finding is built: repeats are common
        finding = rule.finding(message, location.at(offset), evidence=evidence, severity=severity)
        if self._keep is not None and not self._keep(finding):
            return
        self._record(rule, location, finding)

    def _record(self, rule: Rule, location: Location, finding: Finding) -> None:
        """Record ``finding`` (of ``rule`` at ``location``) once: the gravest copy wins."""
        shared = self._shared
        key = (rule.id, location, finding.evidence)
        earlier = shared.seen.get(key) if finding.evidence is not None else None
        if earlier is not None:
            if earlier >= 0 and finding.severity > shared.findings[earlier].severity:
                # The same finding again, graver (another reading saw it): keep the gravest.
                shared.findings[earlier] = finding
            return
        listed = self._list_or_count(rule, location, finding)
        if finding.evidence is not None and len(shared.seen) < _MAX_SEEN:
            shared.seen[key] = len(shared.findings) - 1 if listed else -1

    def _list_or_count(self, rule: Rule, location: Location, finding: Finding) -> bool:
        """List ``finding`` or count it into its group's summary; True when listed."""
        shared = self._shared
        limits = self.limits
        group = (rule.id, location)
        listed = shared.listed.get(group, 0)
        if rule is SCAN_LIMIT_REACHED or (
            listed < limits.max_findings_per_rule and len(shared.findings) < limits.max_findings
        ):
            shared.listed[group] = listed + 1
            shared.findings.append(finding)
            return True
        if len(shared.findings) >= limits.max_findings and not shared.capped:
            shared.capped = True
            self.limit_reached("findings in one file", limits.max_findings)
        if shared.capped and group not in shared.overflow:
            # Past the overall cap, count per rule only: places can be countless.
            group = (rule.id, Location(location.path))
        over = shared.overflow.get(group)
        if over is None:
            over = shared.overflow[group] = _Overflow(rule, group[1], finding.severity)
        over.add(finding)
        return False

    def mark(self) -> int:
        """A point in this artifact's findings, for ``worst_since``."""
        return len(self._shared.findings) + sum(o.count for o in self._shared.overflow.values())

    def worst_since(self, mark: int) -> Severity | None:
        """The highest severity among findings reported since ``mark`` (None: none)."""
        shared = self._shared
        if self.mark() == mark:
            return None
        listed = shared.findings[mark:] if mark <= len(shared.findings) else []
        counted = [o.severity for o in shared.overflow.values()]
        return max([f.severity for f in listed] + counted, default=None)

    def limit_reached(self, what: str, limit: int, *, offset: int | None = None) -> None:
        """Report MG002: a cap was hit and the rest of this input was not inspected."""
        self.report(
            SCAN_LIMIT_REACHED,
            f"{what} exceeds the cap of {limit:,}; the rest was not inspected",
            offset=offset,
            evidence=what,
        )

    def set_format(self, label: str) -> None:
        """Name the top-level artifact's format more precisely (e.g. 'pytorch-zip')."""
        if self.depth == 0:
            self._shared.format_label = label

    @property
    def format_label(self) -> str | None:
        return self._shared.format_label

    # -- budgets ---------------------------------------------------------------------
    def consume_decompressed(self, nbytes: int, compressed: int = 0) -> bool:
        """Account ``nbytes`` decompressed from ``compressed`` input bytes.

        Every member of the artifact draws on one budget, by bytes and by ratio:
        more than ``max_total_decompressed`` in all is MG002; more than
        ``bomb_min_size`` at over ``max_compression_ratio`` times the compressed
        bytes read so far, summed over all members, is a bomb (MG204), however
        the output is split between members. Returns False (after reporting once)
        when decompression must stop.
        """
        shared = self._budgets
        shared.decompressed += nbytes
        shared.compressed += compressed
        limits = self.limits
        if shared.decompressed > limits.max_total_decompressed:
            self.limit_reached("decompressed bytes", limits.max_total_decompressed)
            return False
        if (
            shared.decompressed >= limits.bomb_min_size
            and shared.decompressed > limits.max_compression_ratio * max(1, shared.compressed)
        ):
            self.report(
                ARCHIVE_BOMB,
                f"members decompress to more than {shared.decompressed:,} bytes from "
                f"{shared.compressed:,} compressed (ratio over "
                f"{limits.max_compression_ratio} across the whole file); decompression stopped",
                evidence="aggregate-ratio",
            )
            return False
        return True

    def inflated_work_allowed(self) -> int:
        """Opcodes parsers may walk in this file's decompressed content (see ``Limits``)."""
        limits = self.limits
        return max(limits.inflated_work_floor, limits.max_inflated_work * self._budgets.compressed)

    def inflated_work_left(self) -> int:
        return self.inflated_work_allowed() - self._budgets.inflated_work

    def spend_inflated_work(self, opcodes: int) -> None:
        self._budgets.inflated_work += opcodes

    # -- readings judged after the fact ------------------------------------------------
    def speculative(self) -> ScanContext:
        """A context at this same place whose findings are kept apart.

        A reading that may turn out not to hold (a pickle whose first opcode is
        valid but that goes nowhere) is scanned here; ``adopt`` then takes over
        what counts.
        """
        made = ScanContext(
            location=self.location,
            settings=self.settings,
            depth=self.depth,
            shared=_Shared(),
            keep=self._keep,
        )
        made._budgets = self._budgets  # decompression and work budgets stay shared
        return made

    def adopt(self, findings: list[Finding]) -> None:
        """Record findings made in a speculative context (once each, as ``report`` does)."""
        shared = self._shared
        for finding in findings:
            counted = _SUMMARIES.get(finding)
            if counted is None:
                self._record(get_rule(finding.rule_id), finding.location.at(None), finding)
                continue
            key = (finding.rule_id, finding.location)
            over = shared.overflow.get(key)
            if over is None:
                over = shared.overflow[key] = _Overflow(
                    counted.rule, finding.location, Severity.INFO
                )
            over.merge(counted)

    # -- nesting ---------------------------------------------------------------------
    def child(self, member: str, *, keep: FindingFilter | None = None) -> ScanContext:
        """A context for ``member`` nested one level below this one.

        It shares this artifact's findings and budgets; ``keep`` narrows what it
        (and everything below it) may report, on top of this context's filter.
        """
        outer = self._keep
        combined = keep if outer is None else outer if keep is None else _both(outer, keep)
        made = ScanContext(
            location=self.location.inside(member),
            settings=self.settings,
            depth=self.depth + 1,
            shared=self._shared,
            keep=combined,
        )
        made._budgets = self._budgets
        return made


def _both(first: FindingFilter, second: FindingFilter) -> FindingFilter:
    return lambda finding: first(finding) and second(finding)

"""What a format scanner is given: the bytes (``Input``) and a ``ScanContext``.

A scanner reads from ``Input.stream`` (seekable, never executed), reports
findings through ``ScanContext.report`` and hands inner files (archive members,
embedded pickles) to ``modelguard.scan.formats.descend``. It never catches
exceptions broadly: malformed input is reported as a finding at the place it is
detected; anything else is a bug and surfaces as MG004. The context knows
nothing of formats or dispatch: it reports, keeps budgets and makes children.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from modelguard.findings import Finding, Location, Severity
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.rules.base import Rule
from modelguard.rules.scan import SCAN_LIMIT_REACHED


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


@dataclass
class _Shared:
    """State shared by every context of one top-level artifact."""

    findings: list[Finding] = field(default_factory=list)
    decompressed: int = 0
    format_label: str | None = None
    seen: set[tuple[str, Location, str | None]] = field(default_factory=set)


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
        return self._shared.findings

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
        location = self.location.inside(member) if member is not None else self.location
        key = (rule.id, location, evidence)
        if evidence is not None and key in self._shared.seen:
            return
        finding = rule.finding(message, location.at(offset), evidence=evidence, severity=severity)
        if self._keep is not None and not self._keep(finding):
            return
        self._shared.seen.add(key)
        self._shared.findings.append(finding)

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
    def consume_decompressed(self, nbytes: int) -> bool:
        """Account decompressed bytes against the per-artifact budget.

        Returns False (after reporting MG002 once) when the budget is exhausted.
        """
        self._shared.decompressed += nbytes
        if self._shared.decompressed > self.limits.max_total_decompressed:
            self.limit_reached("decompressed bytes", self.limits.max_total_decompressed)
            return False
        return True

    # -- readings judged after the fact ------------------------------------------------
    def speculative(self) -> ScanContext:
        """A context at this same place whose findings are kept apart.

        A reading that may turn out not to hold (a pickle whose first opcode is
        valid but that goes nowhere) is scanned here; ``adopt`` then takes over
        what counts.
        """
        return ScanContext(
            location=self.location,
            settings=self.settings,
            depth=self.depth,
            shared=_Shared(decompressed=self._shared.decompressed),
            keep=self._keep,
        )

    def adopt(self, findings: list[Finding]) -> None:
        """Record findings made in a speculative context (once each, as ``report`` does)."""
        for finding in findings:
            key = (finding.rule_id, finding.location.at(None), finding.evidence)
            if finding.evidence is not None and key in self._shared.seen:
                continue
            self._shared.seen.add(key)
            self._shared.findings.append(finding)

    # -- nesting ---------------------------------------------------------------------
    def child(self, member: str, *, keep: FindingFilter | None = None) -> ScanContext:
        """A context for ``member`` nested one level below this one.

        It shares this artifact's findings and budgets; ``keep`` narrows what it
        (and everything below it) may report, on top of this context's filter.
        """
        outer = self._keep
        combined = keep if outer is None else outer if keep is None else _both(outer, keep)
        return ScanContext(
            location=self.location.inside(member),
            settings=self.settings,
            depth=self.depth + 1,
            shared=self._shared,
            keep=combined,
        )


def _both(first: FindingFilter, second: FindingFilter) -> FindingFilter:
    return lambda finding: first(finding) and second(finding)

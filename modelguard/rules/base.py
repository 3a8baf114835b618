"""A rule: the stable id, name, default severity and documentation of one kind of finding."""

from __future__ import annotations

from dataclasses import dataclass

from modelguard.findings import Finding, Location, Severity

HELP_BASE = "https://github.com/modelguard/modelguard/blob/main/docs/rules.md"


@dataclass(frozen=True)
class Rule:
    id: str
    name: str  # kebab-case, stable
    severity: Severity  # default severity of its findings
    summary: str  # one line: what was seen
    description: str  # what it means and why it matters
    fix: str  # how to resolve it
    tags: tuple[str, ...] = ("security",)

    @property
    def help_uri(self) -> str:
        return f"{HELP_BASE}#{self.id.lower()}-{self.name}"

    def finding(
        self,
        message: str,
        location: Location,
        *,
        evidence: str | None = None,
        severity: Severity | None = None,
    ) -> Finding:
        """A finding of this rule, at the rule's severity unless one is given."""
        return Finding(
            rule_id=self.id,
            severity=severity if severity is not None else self.severity,
            message=message,
            location=location,
            evidence=evidence,
        )

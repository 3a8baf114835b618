"""Human-readable report: findings grouped by file, a summary line and a verdict.

Everything a scanned file controls (its name, member names, evidence, messages
quoting it) is passed through :func:`printable` first, so a hostile file cannot
move the cursor, recolour the terminal or forge lines of the report.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import click

from modelguard.findings import ArtifactResult, Finding, Report, Severity, count_by_severity
from modelguard.report.interface import RenderOptions
from modelguard.report.verdict import Verdict, verdict_for
from modelguard.rules import all_rules

EVIDENCE_MAX_CHARS = 200
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_INDENT = "    "

_SEVERITY_STYLE: dict[Severity, dict[str, object]] = {
    Severity.CRITICAL: {"fg": "red", "bold": True},
    Severity.HIGH: {"fg": "red"},
    Severity.MEDIUM: {"fg": "yellow"},
    Severity.LOW: {"fg": "cyan"},
    Severity.INFO: {"fg": "bright_black"},
}
_VERDICT_STYLE: dict[Verdict, dict[str, object]] = {
    Verdict.PASS: {"fg": "green", "bold": True},
    Verdict.FAIL: {"fg": "red", "bold": True},
    Verdict.ERROR: {"fg": "red", "bold": True},
}


def printable(text: str) -> str:
    """Escape what could steer a terminal or hide text as ``\\xNN`` / ``\\uNNNN``.

    Control characters, line and paragraph separators, format characters (bidi
    overrides, zero-width joiners: "Trojan Source" spoofing) and the surrogates
    Python uses for undecodable file names.
    """
    out: list[str] = []
    for char in text:
        if unicodedata.category(char) in _UNPRINTABLE:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class _Writer:
    """Collects lines; styling is a no-op unless colour was asked for."""

    def __init__(self, color: bool) -> None:
        self.lines: list[str] = []
        self._color = color

    def style(self, text: str, **kwargs: object) -> str:
        return click.style(text, **kwargs) if self._color else text  # type: ignore[arg-type]

    def line(self, text: str = "") -> None:
        self.lines.append(text)


def _finding_lines(
    out: _Writer, finding: Finding, reason: str | None, rule_names: dict[str, str]
) -> None:
    severity = finding.severity
    label = out.style(f"{severity.label.upper():<8}", **_SEVERITY_STYLE[severity])
    head = f"  {label} {finding.rule_id}"
    if finding.rule_id in rule_names:
        head += " " + rule_names[finding.rule_id]
    if reason is not None:
        head += " " + out.style("[suppressed]", dim=True)
    out.line(f"{head}  {printable(finding.message)}")
    loc = finding.location
    where: list[str] = []
    if loc.members:
        where.append("in " + printable(loc.member_path))
    if loc.offset is not None:
        where.append(f"at offset {loc.offset}")
    if where:
        out.line(f"  {_INDENT}{', '.join(where)}")
    if finding.evidence is not None:
        evidence = _shorten(printable(finding.evidence), EVIDENCE_MAX_CHARS)
        out.line(f"  {_INDENT}evidence: {evidence}")
    if reason is not None:
        out.line(f"  {_INDENT}reason: {printable(reason)}")


def _artifact_lines(
    out: _Writer,
    artifact: ArtifactResult,
    visible: Callable[[Finding], bool],
    verbose: bool,
    rule_names: dict[str, str],
) -> None:
    shown = [f for f in artifact.findings if visible(f)]
    suppressed = list(artifact.suppressed) if verbose else []
    if not shown and not suppressed and not verbose:
        return
    header = out.style(printable(artifact.path), bold=True)
    out.line(f"{header}  ({artifact.format}, {artifact.size:,} bytes)")
    for link in artifact.links:
        out.line(f"  {_INDENT}also reached as {printable(link)} (symbolic link)")
    if not shown and not suppressed:
        out.line("  no findings")
    for finding in shown:
        _finding_lines(out, finding, None, rule_names)
    for item in suppressed:
        _finding_lines(out, item.finding, item.reason, rule_names)
    out.line()


def summary_line(report: Report) -> str:
    """``3 files scanned: 1 critical, 0 high, ...; 1 suppressed; 0 errors``."""
    counts = count_by_severity(report.findings)
    by_severity = ", ".join(f"{counts[s]} {s.label}" for s in sorted(Severity, reverse=True))
    line = (
        f"{_plural(len(report.artifacts), 'file')} scanned: {by_severity}; "
        f"{len(report.suppressed)} suppressed; {_plural(len(report.errors), 'error')}"
    )
    if report.skipped:
        line += f"; {len(report.skipped)} not model files skipped"
    return line


def verdict_line(report: Report, fail_on: Severity | None) -> tuple[Verdict, str]:
    verdict = verdict_for(report, fail_on)
    if fail_on is None:
        findings = "findings do not fail this run (--fail-on never)"
    else:
        failing = sum(1 for _ in report.at_or_above(fail_on))
        findings = f"{_plural(failing, 'finding')} at or above {fail_on.label} (--fail-on)"
    if verdict is Verdict.ERROR:
        # unreadable input decides the exit code, but the findings still matter
        findings = f"{_plural(len(report.errors), 'input')} could not be read; {findings}"
    return verdict, f"{verdict.value.upper()}: {findings}"


def render_text(report: Report, options: RenderOptions) -> str:
    """Render ``report`` for a terminal; deterministic for a given Report and options."""
    out = _Writer(options.color)

    def visible(finding: Finding) -> bool:
        return options.verbose or finding.severity > Severity.INFO

    rule_names = {rule.id: rule.name for rule in all_rules()}
    for artifact in report.artifacts:
        _artifact_lines(out, artifact, visible, options.verbose, rule_names)

    if report.errors:
        out.line(out.style("unreadable inputs", bold=True))
        for error in report.errors:
            out.line(f"  {printable(error.path)}: {printable(error.message)}")
        out.line()

    if options.verbose and report.skipped:
        out.line(out.style("skipped (not model files)", bold=True))
        for skipped in report.skipped:
            out.line(f"  {printable(skipped.path)}: {printable(skipped.reason)}")
        out.line()

    hidden_info = sum(1 for f in report.findings if not visible(f))
    hidden_suppressed = 0 if options.verbose else len(report.suppressed)
    hidden_skipped = 0 if options.verbose else len(report.skipped)
    out.line(summary_line(report))
    if hidden_info or hidden_suppressed or hidden_skipped:
        parts = []
        if hidden_info:
            parts.append(_plural(hidden_info, "info finding"))
        if hidden_suppressed:
            parts.append(f"{hidden_suppressed} suppressed")
        if hidden_skipped:
            parts.append(f"{hidden_skipped} skipped")
        listed = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 2 else parts)
        out.line(f"({listed} not shown; use --verbose to list them)")
    verdict, text = verdict_line(report, options.fail_on)
    out.line(out.style(text, **_VERDICT_STYLE[verdict]))
    return "\n".join(out.lines) + "\n"

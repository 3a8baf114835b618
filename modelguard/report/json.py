"""Machine-readable report, schema ``modelguard-report`` version 1.

The shape is documented in docs/json-report.md and pinned by the JSON Schema
shipped beside this module (``schema/report-v1.schema.json``). Adding optional
fields keeps version 1; renaming, removing or retyping a field bumps it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from modelguard.findings import ArtifactResult, Finding, Report, Severity, count_by_severity
from modelguard.report.interface import RenderOptions
from modelguard.report.verdict import verdict_for
from modelguard.rules import Rule, all_rules

SCHEMA_NAME = "modelguard-report"
SCHEMA_VERSION = 1
SCHEMA_FILE = "report-v1.schema.json"


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every rendered report validates against."""
    path = resources.files("modelguard.report") / "schema" / SCHEMA_FILE
    text = path.read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _label(severity: Severity | None) -> str | None:
    return None if severity is None else severity.label


def finding_to_dict(finding: Finding, rules: dict[str, Rule]) -> dict[str, Any]:
    rule = rules.get(finding.rule_id)
    loc = finding.location
    return {
        "rule_id": finding.rule_id,
        "rule": rule.name if rule is not None else None,
        "severity": finding.severity.label,
        "message": finding.message,
        "location": {"path": loc.path, "members": list(loc.members), "offset": loc.offset},
        "evidence": finding.evidence,
        "fingerprint": finding.fingerprint(),
        "help_uri": rule.help_uri if rule is not None else None,
    }


def artifact_to_dict(artifact: ArtifactResult, rules: dict[str, Rule]) -> dict[str, Any]:
    out = {
        "path": artifact.path,
        "format": artifact.format,
        "size": artifact.size,
        "max_severity": _label(artifact.max_severity),
        "findings": [finding_to_dict(f, rules) for f in artifact.findings],
        "links": list(artifact.links),
        "suppressed": [
            {**finding_to_dict(s.finding, rules), "reason": s.reason} for s in artifact.suppressed
        ],
    }
    if artifact.backdoor is not None:  # only where the backdoor analyzer ran
        out["backdoor"] = dict(artifact.backdoor)
    return out


def report_to_dict(report: Report, options: RenderOptions) -> dict[str, Any]:
    """The report as plain JSON-ready data (what :func:`render_json` serialises)."""
    rules = {rule.id: rule for rule in all_rules()}
    counts = count_by_severity(report.findings)
    return {
        "schema": SCHEMA_NAME,
        "version": SCHEMA_VERSION,
        "tool": {"name": "modelguard", "version": report.tool_version},
        "root": report.root,
        "fail_on": _label(options.fail_on),
        "verdict": verdict_for(report, options.fail_on).value,
        "exit_code": report.exit_code(options.fail_on),
        "summary": {
            "files": len(report.artifacts),
            "findings": len(report.findings),
            "by_severity": {s.label: counts[s] for s in sorted(Severity, reverse=True)},
            "max_severity": _label(report.max_severity),
            "suppressed": len(report.suppressed),
            "errors": len(report.errors),
            "skipped": len(report.skipped),
        },
        "artifacts": [artifact_to_dict(a, rules) for a in report.artifacts],
        "errors": [{"path": e.path, "message": e.message} for e in report.errors],
        "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
    }


def render_json(report: Report, options: RenderOptions) -> str:
    """Every finding, info and suppressed ones included (``verbose`` does not apply).

    ASCII-only output: file names that are not valid UTF-8 (surrogate-escaped by
    Python) still serialise instead of failing the run.
    """
    return json.dumps(report_to_dict(report, options), indent=2, ensure_ascii=True) + "\n"

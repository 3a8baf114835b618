"""SARIF 2.1.0 for GitHub code scanning (and any other SARIF consumer).

Follows GitHub's SARIF support rules: every rule carries shortDescription,
fullDescription and help text; ``properties.security-severity`` is a number in
a string, on rules tagged ``security`` (GitHub ignores it otherwise); results
point at files by URIs relative to ``%SRCROOT%`` (the scan root) with a
``region.startLine`` (model files have no lines: line 1 stands for the whole
file); ``partialFingerprints`` come from :meth:`Finding.fingerprint` so GitHub
does not try to hash lines of a binary file. The archive member a finding lies
in is a logical location, since SARIF URIs cannot name it.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

from modelguard.findings import Finding, Report, Severity
from modelguard.report.interface import RenderOptions
from modelguard.rules import Rule, all_rules

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SARIF_VERSION = "2.1.0"
INFORMATION_URI = "https://github.com/modelguard/modelguard"
SRCROOT = "%SRCROOT%"
FINGERPRINT_KEY = "modelguardFingerprint/v1"

LEVELS: dict[Severity, str] = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# GitHub maps >= 9.0 to critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low;
# info rules carry none, so GitHub does not rank them as security alerts.
SECURITY_SEVERITY: dict[Severity, str] = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
}


def _precision(rule: Rule) -> str:
    # The catalogue has no confidence field yet. Static rules state facts about
    # the bytes (an import, a malformed header); backdoor analysis (MG5xx) is a
    # statistical judgement.
    return "medium" if rule.id.startswith("MG5") else "high"


def rule_descriptor(rule: Rule) -> dict[str, Any]:
    """A SARIF reportingDescriptor with everything GitHub shows on an alert."""
    tags = set(rule.tags)
    properties: dict[str, Any] = {"precision": _precision(rule)}
    if rule.severity in SECURITY_SEVERITY:
        properties["security-severity"] = SECURITY_SEVERITY[rule.severity]
        # GitHub uses security-severity only for rules tagged "security"; a
        # coverage gap (file not inspected) is a security matter for a scanner.
        tags.add("security")
    properties["tags"] = sorted(tags)
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.description},
        "help": {
            "text": f"{rule.description}\n\nFix: {rule.fix}\n\nDocumentation: {rule.help_uri}",
            "markdown": (
                f"**{rule.summary}**\n\n{rule.description}\n\n**Fix:** {rule.fix}\n\n"
                f"[{rule.id} {rule.name}]({rule.help_uri})"
            ),
        },
        "helpUri": rule.help_uri,
        "defaultConfiguration": {"level": LEVELS[rule.severity]},
        "properties": properties,
    }


def _placeholder_rule(rule_id: str) -> Rule:
    # A finding whose rule is missing from the catalogue is a bug elsewhere, but
    # the report must still be valid SARIF that names the rule it used.
    return Rule(
        rule_id,
        "unknown-rule",
        Severity.HIGH,
        f"Rule {rule_id} is not in the modelguard catalogue.",
        f"A check emitted rule id {rule_id}, which has no catalogue entry.",
        "Report this to the modelguard developers.",
    )


def _path_bytes(path: str) -> bytes:
    """The file name's bytes: undecodable names (os.fsdecode) get their original bytes back."""
    try:
        return path.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from the file system
        return path.encode("utf-8", errors="surrogatepass")


def _is_absolute(path: str) -> bool:
    return PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute()


def _file_uri(path: str) -> str:
    """``file://`` URI for an absolute POSIX or Windows path, percent-encoded."""
    if PurePosixPath(path).is_absolute():
        return "file://" + quote(_path_bytes(path), safe="/")
    return "file:///" + quote(_path_bytes(PureWindowsPath(path).as_posix()), safe="/:")


def artifact_location(path: str) -> dict[str, Any]:
    """Relative to %SRCROOT% when inside the scan root, else an absolute file URI."""
    if _is_absolute(path):
        return {"uri": _file_uri(path)}
    return {"uri": quote(_path_bytes(path), safe="/"), "uriBaseId": SRCROOT}


def _location(finding: Finding) -> dict[str, Any]:
    loc = finding.location
    # GitHub shows an alert only with region.startLine. Known cost: because of it,
    # codeql-action/upload-sarif reads each flagged file once to add its own
    # primaryLocationLineHash (it skips results without a startLine).
    region: dict[str, Any] = {"startLine": 1}
    if not loc.members and loc.offset is not None:
        region["byteOffset"] = loc.offset
    location: dict[str, Any] = {
        "physicalLocation": {"artifactLocation": artifact_location(loc.path), "region": region}
    }
    if loc.members:
        location["logicalLocations"] = [
            {"name": loc.members[-1], "fullyQualifiedName": loc.member_path, "kind": "member"}
        ]
    return location


def _result(
    finding: Finding, rule_index: int, suppression_reason: str | None = None
) -> dict[str, Any]:
    properties: dict[str, Any] = {"severity": finding.severity.label}
    if finding.severity in SECURITY_SEVERITY:
        # Per result too: a check may raise or lower a finding's severity from
        # the rule's default, and GitHub accepts the property on results as well.
        properties["security-severity"] = SECURITY_SEVERITY[finding.severity]
    if finding.evidence is not None:
        properties["evidence"] = finding.evidence
    if finding.location.offset is not None:
        properties["offset"] = finding.location.offset
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": LEVELS[finding.severity],
        "message": {"text": finding.message},
        "locations": [_location(finding)],
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint()},
        "properties": properties,
    }
    if suppression_reason is not None:
        result["suppressions"] = [
            {"kind": "external", "status": "accepted", "justification": suppression_reason}
        ]
    return result


def _original_uri_base_ids(root: str) -> dict[str, Any]:
    if not _is_absolute(root):
        # A relative root (a Report built by hand) has no meaningful file URI.
        return {SRCROOT: {"description": {"text": "The folder modelguard scanned from."}}}
    uri = _file_uri(root)
    return {SRCROOT: {"uri": uri if uri.endswith("/") else uri + "/"}}


def report_to_sarif(report: Report, options: RenderOptions) -> dict[str, Any]:
    """The SARIF log as plain data (what :func:`render_sarif` serialises)."""
    rules = all_rules()
    index = {rule.id: i for i, rule in enumerate(rules)}
    referenced = [f.rule_id for f in report.findings] + [
        s.finding.rule_id for s in report.suppressed
    ]
    for rule_id in referenced:
        if rule_id not in index:
            index[rule_id] = len(rules)
            rules.append(_placeholder_rule(rule_id))

    results: list[dict[str, Any]] = []
    for artifact in report.artifacts:
        results.extend(_result(f, index[f.rule_id]) for f in artifact.findings)
        results.extend(
            _result(s.finding, index[s.finding.rule_id], s.reason) for s in artifact.suppressed
        )

    notifications = [
        {
            "level": "error",
            "message": {"text": f"{error.path}: {error.message}"},
            "locations": [
                {"physicalLocation": {"artifactLocation": artifact_location(error.path)}}
            ],
            "descriptor": {"id": "input-error"},
        }
        for error in report.errors
    ]
    invocation: dict[str, Any] = {
        "executionSuccessful": not report.errors,
        "exitCode": report.exit_code(options.fail_on),
        "toolExecutionNotifications": notifications,
    }
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "modelguard",
                "version": report.tool_version,
                "semanticVersion": report.tool_version,
                "informationUri": INFORMATION_URI,
                "rules": [rule_descriptor(rule) for rule in rules],
            }
        },
        "invocations": [invocation],
        "originalUriBaseIds": _original_uri_base_ids(report.root),
        "columnKind": "unicodeCodePoints",
        "results": results,
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def render_sarif(report: Report, options: RenderOptions) -> str:
    """Every finding becomes a result; suppressed ones carry a SARIF suppression."""
    return json.dumps(report_to_sarif(report, options), indent=2, ensure_ascii=True) + "\n"

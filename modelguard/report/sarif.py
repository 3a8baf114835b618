"""SARIF 2.1.0 for GitHub code scanning (and any other SARIF consumer).

Follows GitHub's SARIF support rules and limits:

* every rule carries shortDescription, fullDescription and help text;
  ``properties.security-severity`` is a number in a string, on rules tagged
  ``security`` (GitHub ignores it otherwise);
* results point at files by URIs relative to ``%SRCROOT%`` (the scan root) with
  a ``region.startLine`` (GitHub shows an alert only with one; model files have
  no lines, so line 1 stands for the whole file). The archive member a finding
  lies in is a logical location, since SARIF URIs cannot name it. Remote
  artifacts use the ``HF`` (``hf://``) or ``HTTPS`` (``https://``) base instead,
  so no one mistakes them for files of the repository;
* a file reached through symbolic links is reported under its own path (GitHub
  cannot show a link's target), the links as ``relatedLocations``;
* ``partialFingerprints``: GitHub builds an alert's identity from the rule, the
  file path and ``primaryLocationLineHash`` only (other keys are stored but not
  used). For text files upload-sarif computes that hash from the flagged line;
  for a model file "line 1" is binary noise shared by every finding in the
  file, so two payloads in two members would merge into one alert and a byte
  changed in a header would reopen it. modelguard therefore sets
  ``primaryLocationLineHash`` to :meth:`Finding.fingerprint` (rule, path,
  member chain, evidence), which upload-sarif keeps (it logs that its own
  line hash differs), and repeats it under ``modelguardFingerprint/v1``;
* at most 25,000 results per run and 1,000 locations per result (GitHub rejects
  a file above either): past 25,000, findings of one rule in one file become one
  result listing the others as related locations; if that is still too many,
  the most severe 25,000 are kept. Both are deterministic and announced by a
  run-level notification; the JSON report always has everything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

from modelguard.findings import ArtifactResult, Finding, Report, Severity
from modelguard.report.interface import RenderOptions
from modelguard.rules import Rule, all_rules

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SARIF_VERSION = "2.1.0"
INFORMATION_URI = "https://github.com/modelguard/modelguard"
SRCROOT = "%SRCROOT%"
FINGERPRINT_KEY = "modelguardFingerprint/v1"
GITHUB_FINGERPRINT_KEY = "primaryLocationLineHash"
# Bases for artifacts that are not files under the scan root.
REMOTE_BASES: dict[str, str] = {"hf://": "HF", "https://": "HTTPS", "http://": "HTTP"}
# GitHub code scanning's documented hard limits (an upload above one is rejected).
MAX_RESULTS = 25_000
MAX_LOCATIONS = 1_000
MAX_TAGS = 20

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


def _remote_base(path: str) -> tuple[str, str] | None:
    for prefix, base in REMOTE_BASES.items():
        if path.startswith(prefix):
            return prefix, base
    return None


def artifact_location(path: str) -> dict[str, Any]:
    """Relative to %SRCROOT% inside the scan root, to HF/HTTPS when remote, else a file URI."""
    remote = _remote_base(path)
    if remote is not None:
        prefix, base = remote
        # Already a URL (the user's, or hf://owner/repo@rev/file): keep its escapes.
        rest = quote(_path_bytes(path[len(prefix) :]), safe="/@:%!$&'()*+,;=~")
        return {"uri": rest, "uriBaseId": base}
    if _is_absolute(path):
        return {"uri": _file_uri(path)}
    return {"uri": quote(_path_bytes(path), safe="/"), "uriBaseId": SRCROOT}


def _location(finding: Finding) -> dict[str, Any]:
    loc = finding.location
    # GitHub shows an alert only with region.startLine (see the module docstring).
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


@dataclass(frozen=True)
class _Entry:
    """One finding to report, with what the result needs besides the finding."""

    finding: Finding
    artifact: ArtifactResult
    suppression_reason: str | None = None

    @property
    def rank(self) -> tuple[int, int, str, str, str]:
        # Most severe first, standing before suppressed; then a stable order.
        f = self.finding
        suppressed = 1 if self.suppression_reason is not None else 0
        return (-int(f.severity), suppressed, f.location.path, f.rule_id, f.fingerprint())


def _entries(report: Report) -> Iterator[_Entry]:
    for artifact in report.artifacts:
        for finding in artifact.findings:
            yield _Entry(finding, artifact)
        for item in artifact.suppressed:
            yield _Entry(item.finding, artifact, item.reason)


def _link_locations(artifact: ArtifactResult, first_id: int, room: int) -> list[dict[str, Any]]:
    return [
        {
            "id": first_id + i,
            "physicalLocation": {"artifactLocation": artifact_location(link)},
            "message": {"text": f"symbolic link to {artifact.path}"},
        }
        for i, link in enumerate(artifact.links[:room])
    ]


def _result(
    entry: _Entry,
    rule_index: int,
    *,
    fingerprint: str | None = None,
    message: str | None = None,
    related: list[dict[str, Any]] | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    finding = entry.finding
    props: dict[str, Any] = {"severity": finding.severity.label}
    if finding.severity in SECURITY_SEVERITY:
        # Per result too: a check may raise or lower a finding's severity from
        # the rule's default, and GitHub accepts the property on results as well.
        props["security-severity"] = SECURITY_SEVERITY[finding.severity]
    if finding.evidence is not None:
        props["evidence"] = finding.evidence
    if finding.location.offset is not None:
        props["offset"] = finding.location.offset
    props.update(properties or {})
    key = fingerprint or finding.fingerprint()
    links = related if related is not None else []
    links = links + _link_locations(entry.artifact, len(links), MAX_LOCATIONS - 1 - len(links))
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": LEVELS[finding.severity],
        "message": {"text": message or finding.message},
        "locations": [_location(finding)],
        "partialFingerprints": {GITHUB_FINGERPRINT_KEY: key, FINGERPRINT_KEY: key},
        "properties": props,
    }
    if links:
        result["relatedLocations"] = links
    if entry.suppression_reason is not None:
        result["suppressions"] = [
            {"kind": "external", "status": "accepted", "justification": entry.suppression_reason}
        ]
    return result


def _aggregate_key(entry: _Entry) -> tuple[str, str, bool]:
    return (entry.finding.location.path, entry.finding.rule_id, entry.suppression_reason is None)


def _aggregated(group: list[_Entry], rule_index: int) -> dict[str, Any]:
    """One result for every finding of one rule in one file: the most severe leads."""
    ordered = sorted(group, key=lambda e: e.rank)
    lead = ordered[0]
    others = ordered[1:]
    related = [
        {
            "id": i,
            **_location(e.finding),
            "message": {"text": e.finding.message},
        }
        for i, e in enumerate(others[: MAX_LOCATIONS - 1])
    ]
    path, rule_id, standing = _aggregate_key(lead)
    identity = f"{rule_id}\x1f{path}\x1f{'standing' if standing else 'suppressed'}"
    fingerprint = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    message = (
        f"{len(group)} findings of {rule_id} in this file; the most severe: {lead.finding.message}"
    )
    if len(others) > len(related):
        message += f" ({len(others) - len(related)} more not listed; see the JSON report)"
    return _result(
        lead,
        rule_index,
        fingerprint=fingerprint,
        message=message,
        related=related,
        properties={"aggregated": len(group)},
    )


def _notification(descriptor: str, text: str) -> dict[str, Any]:
    return {"level": "warning", "message": {"text": text}, "descriptor": {"id": descriptor}}


def _results(
    report: Report, index: dict[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The results and the notifications that say how they were fitted to the limits."""
    entries = list(_entries(report))
    if len(entries) <= MAX_RESULTS:
        return [_result(e, index[e.finding.rule_id]) for e in entries], []

    notes: list[dict[str, Any]] = []
    groups: dict[tuple[str, str, bool], list[_Entry]] = {}
    for entry in entries:
        groups.setdefault(_aggregate_key(entry), []).append(entry)
    notes.append(
        _notification(
            "results-aggregated",
            f"{len(entries)} findings exceed GitHub's {MAX_RESULTS:,} results per run: "
            f"findings of one rule in one file are one result ({len(groups)} results).",
        )
    )
    leads = sorted(groups.values(), key=lambda g: min(e.rank for e in g))
    if len(leads) > MAX_RESULTS:
        dropped = leads[MAX_RESULTS:]
        counts: dict[str, int] = {}
        for group in dropped:
            label = min(group, key=lambda e: e.rank).finding.severity.label
            counts[label] = counts.get(label, 0) + len(group)
        by_severity = ", ".join(f"{n} {label}" for label, n in counts.items())
        notes.append(
            _notification(
                "results-truncated",
                f"only the {MAX_RESULTS:,} most severe results are included; "
                f"{sum(counts.values())} findings left out ({by_severity}). "
                "Use --format json for the full report.",
            )
        )
        leads = leads[:MAX_RESULTS]
    results = [
        _result(g[0], index[g[0].finding.rule_id])
        if len(g) == 1
        else _aggregated(g, index[g[0].finding.rule_id])
        for g in leads
    ]
    return results, notes


def _original_uri_base_ids(root: str, report: Report) -> dict[str, Any]:
    bases: dict[str, Any]
    if not _is_absolute(root):
        # A relative root (a Report built by hand) has no meaningful file URI.
        bases = {SRCROOT: {"description": {"text": "The folder modelguard scanned from."}}}
    else:
        uri = _file_uri(root)
        bases = {SRCROOT: {"uri": uri if uri.endswith("/") else uri + "/"}}
    used = {_remote_base(a.path) for a in report.artifacts} | {
        _remote_base(e.path) for e in report.errors
    }
    for prefix, base in sorted(b for b in used if b is not None):
        bases[base] = {
            "uri": prefix,
            "description": {"text": f"Remote artifacts scanned from {prefix} sources."},
        }
    return bases


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

    results, limit_notes = _results(report, index)
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
    ] + limit_notes
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
        "originalUriBaseIds": _original_uri_base_ids(report.root, report),
        "columnKind": "unicodeCodePoints",
        "results": results,
    }
    if report.skipped:
        run["properties"] = {"skippedNotModels": len(report.skipped)}
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def render_sarif(report: Report, options: RenderOptions) -> str:
    """Every finding becomes a result (within GitHub's limits; see the module docstring)."""
    return json.dumps(report_to_sarif(report, options), indent=2, ensure_ascii=True) + "\n"

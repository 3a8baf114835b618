"""CycloneDX 1.6 ML-BOM: the model artifacts of a Report, as components, and their findings.

Built with cyclonedx-python-lib (the ``bom`` extra). The renderer reads nothing:
what it says beyond the Report (digests, lock pins, sources, package URLs,
signature state) comes from :mod:`modelguard.supply.inventory`, passed in
``RenderOptions.inventory`` (the CLI gathers it; without one the BOM has what
the Report alone says). Per component:

* type: ``machine-learning-model`` for a file in a model format,
  ``data`` for configuration and tokenizer files beside a model, ``file`` for
  archives and model-named files no reader recognised; files that are not
  models (READMEs, code, the lock file) are not components;
* ``purl``: ``pkg:huggingface/owner/repo@commit#file`` for a Hub source,
  ``pkg:generic/name?checksum=…&download_url=…`` otherwise;
* hashes, version (the pinned revision), the download URL actually used
  (``externalReferences[distribution]``), and ``modelguard:*`` properties for
  format, size, source, revision, lock file, lock digest match, signature;
* vulnerabilities: one per finding above info (the scan's verdict, not its
  notes), rated with modelguard's severity, its rule as the id; a
  policy-suppressed finding carries an analysis of ``not_affected`` with the
  policy's reason.

Everything a scanned file controls ends up only in JSON string values, which the
serializer escapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelguard.errors import MissingExtra
from modelguard.findings import ArtifactResult, Finding, Report, Severity
from modelguard.report.interface import RenderOptions
from modelguard.rules import Rule, all_rules
from modelguard.supply.inventory import ArtifactFacts, ComponentKind, Inventory, gather

if TYPE_CHECKING:  # pragma: no cover
    from cyclonedx.model import Property, XsUri
    from cyclonedx.model.component import Component
    from cyclonedx.model.vulnerability import Vulnerability, VulnerabilitySeverity

PROPERTY_PREFIX = "modelguard"


def _prop(name: str, value: str) -> Property:
    from cyclonedx.model import Property

    return Property(name=f"{PROPERTY_PREFIX}:{name}", value=value)


def _xs_uri(url: str) -> XsUri:
    from cyclonedx.model import XsUri

    return XsUri(url)


def _severity(severity: Severity) -> VulnerabilitySeverity:
    from cyclonedx.model.vulnerability import VulnerabilitySeverity

    return VulnerabilitySeverity(severity.label)


def is_vulnerability(finding: Finding) -> bool:
    """A finding that judges the artifact; info findings are notes (verified, skipped)."""
    return finding.severity > Severity.INFO


def _vulnerability(
    finding: Finding, ref: str, index: int, rule: Rule | None, reason: str | None
) -> Vulnerability:
    from cyclonedx.model.impact_analysis import ImpactAnalysisState
    from cyclonedx.model.vulnerability import (
        BomTarget,
        Vulnerability,
        VulnerabilityAnalysis,
        VulnerabilityRating,
        VulnerabilityScoreSource,
        VulnerabilitySource,
    )

    detail = rule.description if rule is not None else None
    if finding.evidence:
        detail = f"{detail}\nEvidence: {finding.evidence}" if detail else None
    return Vulnerability(
        bom_ref=f"{ref}#finding-{index}",
        id=finding.rule_id,
        source=VulnerabilitySource(
            name="modelguard", url=_xs_uri(rule.help_uri) if rule is not None else None
        ),
        ratings=[
            VulnerabilityRating(
                source=VulnerabilitySource(name="modelguard"),
                severity=_severity(finding.severity),
                method=VulnerabilityScoreSource.OTHER,
                justification="modelguard rule severity",
            )
        ],
        description=finding.message,
        detail=detail,
        recommendation=rule.fix if rule is not None else None,
        analysis=(
            VulnerabilityAnalysis(state=ImpactAnalysisState.NOT_AFFECTED, detail=reason)
            if reason is not None
            else None
        ),
        affects=[BomTarget(ref=ref)],
        properties=[
            _prop("location", str(finding.location)),
            _prop("fingerprint", finding.fingerprint()),
        ],
    )


def _component(facts: ArtifactFacts, artifact: ArtifactResult | None) -> Component:
    from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    hashes = []
    if facts.sha256:
        hashes.append(HashType(alg=HashAlgorithm.SHA_256, content=facts.sha256))
    if facts.sha1:
        hashes.append(HashType(alg=HashAlgorithm.SHA_1, content=facts.sha1))
    properties = [_prop("path", facts.path), _prop("size", str(facts.size))]
    if artifact is not None:
        judged = [f for f in artifact.findings if is_vulnerability(f)]
        worst = max((f.severity for f in judged), default=None)
        properties += [
            _prop("format", artifact.format),
            _prop("findings", str(len(judged))),
            _prop("max-severity", worst.label if worst is not None else "none"),
        ]
    properties.append(_prop("signature", facts.signature.value))
    for name, value in (
        ("source", facts.source),
        ("revision", facts.revision),
        ("lock-file", facts.lock_file),
    ):
        if value:
            properties.append(_prop(name, value))
    if facts.lock_digest_match is not None:
        properties.append(_prop("lock-digest-match", str(facts.lock_digest_match).lower()))
    references = (
        [
            ExternalReference(
                type=ExternalReferenceType.DISTRIBUTION, url=_xs_uri(facts.download_url)
            )
        ]
        if facts.download_url
        else []
    )
    return Component(
        type=ComponentType(facts.kind.value),
        name=facts.path,
        version=facts.revision or None,
        bom_ref=_ref(facts),
        hashes=hashes,
        purl=PackageURL.from_string(facts.purl) if facts.purl else None,
        external_references=references,
        properties=properties,
    )


def _ref(facts: ArtifactFacts) -> str:
    prefix = "model" if facts.kind is ComponentKind.MODEL else facts.kind.value
    return f"{prefix}:{facts.path}"


def render_cyclonedx(report: Report, options: RenderOptions) -> str:
    """The report as a CycloneDX 1.6 JSON ML-BOM."""
    try:
        from cyclonedx.model.bom import Bom
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.output.json import JsonV1Dot6
    except ImportError:
        raise MissingExtra("CycloneDX output", "bom", "cyclonedx-python-lib") from None

    from modelguard._version import __version__

    inventory: Inventory = options.inventory or gather(report, read_files=False)
    rules = {r.id: r for r in all_rules()}
    artifacts = {a.path: a for a in report.artifacts}
    bom = Bom()
    bom.metadata.tools.components.add(
        Component(
            type=ComponentType.APPLICATION,
            name="modelguard",
            version=report.tool_version or __version__,
            bom_ref="modelguard-tool",
        )
    )
    for error in report.errors:
        bom.metadata.properties.add(_prop("input-error", str(error)))
    for note in inventory.notes:
        bom.metadata.properties.add(_prop("inventory-note", note))
    if options.fail_on is not None:
        bom.metadata.properties.add(_prop("fail-on", options.fail_on.label))
    bom.metadata.properties.add(_prop("hub-endpoint", inventory.hub_endpoint))
    if report.skipped:
        bom.metadata.properties.add(_prop("skipped-not-models", str(len(report.skipped))))

    for facts in inventory.artifacts:
        artifact = artifacts.get(facts.path)
        bom.components.add(_component(facts, artifact))
        if artifact is None:
            continue
        ref = _ref(facts)
        entries: list[tuple[Finding, str | None]] = [(f, None) for f in artifact.findings]
        entries += [(s.finding, s.reason) for s in artifact.suppressed]
        judged = [(f, reason) for f, reason in entries if is_vulnerability(f)]
        for index, (finding, reason) in enumerate(judged):
            bom.vulnerabilities.add(
                _vulnerability(finding, ref, index, rules.get(finding.rule_id), reason)
            )

    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    return text + "\n"

"""CycloneDX 1.6 ML-BOM: each artifact a ``machine-learning-model`` component.

Built with cyclonedx-python-lib (the ``bom`` extra). Per artifact:

* hashes: SHA-256 of the file (SHA-1 too when a lock entry pins one), read from
  the scan root; an artifact that is gone by render time gets none;
* source and pinned revision: from ``modelguard.lock`` in the scan root, when it
  has an entry for the artifact (``source`` becomes a distribution external
  reference, ``revision`` the component version); a remotely scanned artifact
  (``hf://owner/repo@<commit>/file``, ``https://…``) is its own source, and a
  Hub artifact's commit is its revision (no hash: its bytes were not all read);
* signature status: from provenance findings in the report (a report that
  merged ``verify --key`` results), else whether a signature bundle lies beside
  the artifact (``present-unverified``) or not (``not-checked``);
* findings: one ``vulnerability`` per finding, rated with modelguard's severity,
  its rule as the id, affecting the component; policy-suppressed findings carry
  an analysis of ``not_affected`` with the policy's reason.

Everything a scanned file controls ends up only in JSON string values, which the
serializer escapes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from modelguard.errors import MissingExtra
from modelguard.findings import ArtifactResult, Finding, Report, Severity
from modelguard.remote import is_remote
from modelguard.report.interface import RenderOptions
from modelguard.rules import all_rules, provenance

if TYPE_CHECKING:  # pragma: no cover
    from cyclonedx.model import XsUri
    from cyclonedx.model.vulnerability import VulnerabilitySeverity

    from modelguard.supply.lockfile import LockEntry

PROPERTY_PREFIX = "modelguard"
LOCK_NAME = "modelguard.lock"
SIGNATURE_BUNDLE = "model.sig"
_HASH_CHUNK = 1 << 20

# The provenance rules that speak about signatures.
_SIGNATURE_STATUS_BY_RULE = {
    provenance.UNSIGNED.id: "unsigned",
    provenance.SIGNATURE_INVALID.id: "invalid",
    provenance.SIGNATURE_WRONG_KEY.id: "wrong-key",
    provenance.BUNDLE_MALFORMED.id: "bundle-malformed",
}
_SIGNATURE_VERIFIED_RULE = provenance.VERIFIED.id


def _file_sha256(path: Path) -> str | None:
    """SHA-256 of a regular file, or None when it cannot be read."""
    h = hashlib.sha256()
    if not os.path.isfile(path):  # never open a FIFO or device named like an artifact
        return None
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _lock_entries(root: Path) -> dict[str, LockEntry]:
    """Entries of ``modelguard.lock`` in the scan root, by path; empty when unusable."""
    lock_path = root / LOCK_NAME
    if not lock_path.is_file():
        return {}
    try:
        from modelguard.errors import ModelGuardError
        from modelguard.supply.lockfile import read_lock
    except ImportError:  # the provenance subsystem is not installed
        return {}
    try:
        return read_lock(lock_path).by_path()
    except (ModelGuardError, OSError, ValueError):
        # A broken lock file is verify's business; the BOM just has no pins.
        return {}


def _signature_status(artifact: ArtifactResult, report: Report, root: Path) -> str:
    """What the report says about this artifact's signature, most severe first."""
    folders = {str(p) for p in PurePosixPath(artifact.path).parents}
    relevant = [
        f
        for a in report.artifacts
        if a.path == artifact.path or a.path in folders
        for f in a.findings
    ]
    for rule_id, status in _SIGNATURE_STATUS_BY_RULE.items():
        if any(f.rule_id == rule_id for f in relevant):
            return status
    if any(
        f.rule_id == _SIGNATURE_VERIFIED_RULE and f.message.startswith("signature")
        for f in relevant
    ):
        return "verified"
    file_path = root / artifact.path
    if Path(f"{file_path}.sig").is_file() or (file_path.parent / SIGNATURE_BUNDLE).is_file():
        return "present-unverified"
    return "not-checked"


def _severity(severity: Severity) -> VulnerabilitySeverity:
    from cyclonedx.model.vulnerability import VulnerabilitySeverity

    return VulnerabilitySeverity(severity.label)


def render_cyclonedx(report: Report, options: RenderOptions) -> str:
    """The report as a CycloneDX 1.6 JSON ML-BOM."""
    try:
        from cyclonedx.model import ExternalReference, ExternalReferenceType, HashType, Property
        from cyclonedx.model import HashAlgorithm as CdxHashAlgorithm
        from cyclonedx.model.bom import Bom
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.model.impact_analysis import ImpactAnalysisState
        from cyclonedx.model.vulnerability import (
            BomTarget,
            Vulnerability,
            VulnerabilityAnalysis,
            VulnerabilityRating,
            VulnerabilityScoreSource,
            VulnerabilitySource,
        )
        from cyclonedx.output.json import JsonV1Dot6
    except ImportError:
        raise MissingExtra("CycloneDX output", "bom", "cyclonedx-python-lib") from None

    from modelguard._version import __version__

    def prop(name: str, value: str) -> Property:
        return Property(name=f"{PROPERTY_PREFIX}:{name}", value=value)

    rules = {r.id: r for r in all_rules()}
    root = Path(report.root)
    locked = _lock_entries(root)
    bom = Bom()
    tool = Component(
        type=ComponentType.APPLICATION,
        name="modelguard",
        version=report.tool_version or __version__,
        bom_ref="modelguard-tool",
    )
    bom.metadata.tools.components.add(tool)
    for error in report.errors:
        bom.metadata.properties.add(prop("input-error", str(error)))
    if options.fail_on is not None:
        bom.metadata.properties.add(prop("fail-on", options.fail_on.label))

    def vulnerability(finding: Finding, ref: str, index: int, reason: str | None) -> Vulnerability:
        rule = rules.get(finding.rule_id)
        properties = [
            prop("location", str(finding.location)),
            prop("fingerprint", finding.fingerprint()),
        ]
        return Vulnerability(
            bom_ref=f"{ref}#finding-{index}",
            id=finding.rule_id,
            source=VulnerabilitySource(
                name="modelguard", url=_xs_uri(rule.help_uri) if rule else None
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
            detail=(f"{rule.description}\nEvidence: {finding.evidence}" if rule else None)
            if finding.evidence
            else (rule.description if rule else None),
            recommendation=rule.fix if rule else None,
            analysis=(
                VulnerabilityAnalysis(state=ImpactAnalysisState.NOT_AFFECTED, detail=reason)
                if reason is not None
                else None
            ),
            affects=[BomTarget(ref=ref)],
            properties=properties,
        )

    for artifact in report.artifacts:
        ref = f"model:{artifact.path}"
        entry = locked.get(artifact.path)
        remote = is_remote(artifact.path)
        if remote:
            # A remote scan: the artifact names its own source (and Hub commit).
            entry = _remote_entry(artifact)
        hashes: list[HashType] = []
        digest = None if remote else _file_sha256(root / artifact.path)
        if digest is not None:
            hashes.append(HashType(alg=CdxHashAlgorithm.SHA_256, content=digest))
        if entry is not None and entry.sha1:
            hashes.append(HashType(alg=CdxHashAlgorithm.SHA_1, content=entry.sha1))
        properties = [
            prop("path", artifact.path),
            prop("format", artifact.format),
            prop("size", str(artifact.size)),
            prop("signature", _signature_status(artifact, report, root)),
            prop("findings", str(len(artifact.findings))),
            prop(
                "max-severity",
                artifact.max_severity.label if artifact.max_severity is not None else "none",
            ),
        ]
        if entry is not None and digest is not None and entry.sha256:
            properties.append(prop("lock-digest-match", str(entry.sha256 == digest).lower()))
        references: list[ExternalReference] = []
        if entry is not None and entry.source:
            properties.append(prop("source", entry.source))
            url = _source_url(entry.source)
            if url is not None:
                references.append(
                    ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=_xs_uri(url))
                )
        if entry is not None and entry.revision:
            properties.append(prop("revision", entry.revision))
        component = Component(
            type=ComponentType.MACHINE_LEARNING_MODEL,
            name=artifact.path,
            version=entry.revision if entry is not None and entry.revision else None,
            bom_ref=ref,
            hashes=hashes,
            external_references=references,
            properties=properties,
        )
        bom.components.add(component)
        index = 0
        for finding in artifact.findings:
            bom.vulnerabilities.add(vulnerability(finding, ref, index, None))
            index += 1
        for suppressed in artifact.suppressed:
            bom.vulnerabilities.add(
                vulnerability(suppressed.finding, ref, index, suppressed.reason)
            )
            index += 1

    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    return text + "\n"


def _remote_entry(artifact: ArtifactResult) -> LockEntry:
    """Source and pinned revision of a remotely scanned artifact, from its name."""
    from modelguard.supply.lockfile import LockEntry

    revision = None
    if artifact.path.startswith("hf://"):
        _, _, tail = artifact.path.partition("@")
        candidate = tail.partition("/")[0]
        revision = candidate or None
    return LockEntry(
        path=artifact.path, size=artifact.size, source=artifact.path, revision=revision
    )


def _source_url(source: str) -> str | None:
    """A browsable URL for a lock ``source`` (hf://owner/repo@rev/file or https://…)."""
    if source.startswith(("https://", "http://")):
        return source
    if source.startswith("hf://"):
        rest = source.removeprefix("hf://")
        repo, _, tail = rest.partition("@")
        revision, _, file_name = tail.partition("/")
        if not revision:
            return f"https://huggingface.co/{repo}"
        return f"https://huggingface.co/{repo}/blob/{revision}/{file_name}".rstrip("/")
    return None


def _xs_uri(url: str) -> XsUri:
    from cyclonedx.model import XsUri

    return XsUri(url)

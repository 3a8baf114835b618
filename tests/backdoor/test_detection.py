"""Detection without trigger data on the checked-in fixture models (eval family):
backdoored ones are flagged with their target named, clean ones are not."""

from __future__ import annotations

import re

import pytest

from modelguard.findings import Severity
from modelguard.rules.backdoor import BACKDOOR_DETECTED, NO_BACKDOOR_EVIDENCE

from .conftest import BACKDOORED, CLEAN, target_of


@pytest.mark.parametrize("name", BACKDOORED)
def test_backdoored_fixture_is_flagged_and_its_target_named(detected, name: str) -> None:
    analysis = detected(name)
    detection = analysis.detection
    assert detection is not None and detection.detected
    assert detection.score >= detection.threshold
    assert detection.target == target_of(name)
    findings = [f for f in analysis.report.findings if f.rule_id == BACKDOOR_DETECTED.id]
    assert len(findings) == 1 and findings[0].severity is Severity.HIGH
    assert f"class {target_of(name)}" in findings[0].message
    assert f"threshold {detection.threshold:g}" in findings[0].message
    assert analysis.report.exit_code(Severity.HIGH) == 1
    # the recovered trigger works on held-out inputs it was not optimised on
    assert analysis.held_out_flip[target_of(name)] > 0.9


@pytest.mark.parametrize("name", CLEAN)
def test_clean_fixture_is_not_flagged_and_the_report_says_what_was_tested(
    detected, name: str
) -> None:
    analysis = detected(name)
    assert analysis.detection is not None and not analysis.detection.detected
    (finding,) = [f for f in analysis.report.findings if f.rule_id == NO_BACKDOOR_EVIDENCE.id]
    assert finding.severity is Severity.INFO
    assert "no evidence of a backdoor" in finding.message
    assert "Not tested" in finding.message
    assert re.search(r"\bclean\b", finding.message, re.IGNORECASE) is None  # never "clean"
    assert analysis.report.exit_code(Severity.LOW) == 0


def test_per_class_evidence_and_json_block(detected) -> None:
    analysis = detected("badnet_0")
    block = analysis.json_block()
    assert block["detected"] is True and block["target"] == target_of("badnet_0")
    assert block["threshold"] == 1.0 and block["score"] >= 1.0
    assert [c["label"] for c in block["classes"]] == list(range(10))
    suspect = block["classes"][target_of("badnet_0")]
    assert suspect["suspected"] and suspect["anomaly_index"] > 2
    smallest = min(block["classes"], key=lambda c: c["l1_norm"])
    assert smallest["label"] == target_of("badnet_0")
    assert block["held_out"]["count"] == analysis.held_out_count > 0
    assert block["repair"] is None  # nothing was asked to be repaired
    assert block["samples_per_second"] > 0

"""Core types: severity order and parsing, locations, fingerprints, exit codes, merging."""

from __future__ import annotations

import pytest

from modelguard.findings import (
    ArtifactResult,
    Finding,
    InputError,
    Location,
    Report,
    Severity,
    count_by_severity,
)


def _finding(rule: str = "MG101", sev: Severity = Severity.CRITICAL, **loc: object) -> Finding:
    location = Location(str(loc.get("path", "m.pt")), tuple(loc.get("members", ())))  # type: ignore[arg-type]
    return Finding(rule, sev, "msg", location, evidence=str(loc.get("evidence", "os.system")))


def test_severity_order_and_parse() -> None:
    assert Severity.INFO < Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert Severity.parse(" High ") is Severity.HIGH
    with pytest.raises(ValueError, match="unknown severity 'severe'"):
        Severity.parse("severe")


def test_location_rendering_and_nesting() -> None:
    loc = Location("dir/model.pt").inside("archive/data.pkl").at(17)
    assert str(loc) == "dir/model.pt!/archive/data.pkl@17"
    assert loc.inside("x").offset is None
    assert loc.inside("x").members == ("archive/data.pkl", "x")


def test_fingerprint_ignores_wording_and_offset_but_not_identity() -> None:
    a = _finding()
    b = Finding("MG101", Severity.CRITICAL, "other words", a.location.at(99), evidence="os.system")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != _finding(evidence="posix.system").fingerprint()
    assert a.fingerprint() != _finding(members=("archive/data.pkl",)).fingerprint()
    assert a.fingerprint() != _finding(path="other.pt").fingerprint()


@pytest.mark.parametrize(
    ("severities", "fail_on", "expected"),
    [
        ((), Severity.HIGH, 0),
        ((Severity.MEDIUM,), Severity.HIGH, 0),
        ((Severity.HIGH,), Severity.HIGH, 1),
        ((Severity.CRITICAL,), Severity.HIGH, 1),
        ((Severity.LOW,), Severity.LOW, 1),
        ((Severity.CRITICAL,), None, 0),
    ],
)
def test_exit_code_follows_fail_on(
    severities: tuple[Severity, ...], fail_on: Severity | None, expected: int
) -> None:
    findings = tuple(_finding(sev=s) for s in severities)
    report = Report(artifacts=(ArtifactResult("m.pt", "pickle", 10, findings),))
    assert report.exit_code(fail_on) == expected


def test_unreadable_input_wins_exit_code() -> None:
    report = Report(errors=(InputError("missing.pt", "no such file or directory"),))
    assert report.exit_code(Severity.HIGH) == 2
    assert report.exit_code(None) == 2


def test_merge_combines_findings_per_path() -> None:
    scan = Report(artifacts=(ArtifactResult("m.pt", "pytorch-zip", 10, (_finding(),)),))
    verify = Report(
        artifacts=(
            ArtifactResult("m.pt", "unknown", 10, (_finding("MG999", Severity.HIGH),)),
            ArtifactResult("n.pt", "unknown", 5),
        ),
        errors=(InputError("x", "gone"),),
    )
    merged = scan.merged(verify)
    assert [a.path for a in merged.artifacts] == ["m.pt", "n.pt"]
    assert merged.artifacts[0].format == "pytorch-zip"
    assert {f.rule_id for f in merged.artifacts[0].findings} == {"MG101", "MG999"}
    assert merged.errors == (InputError("x", "gone"),)
    counts = count_by_severity(merged.findings)
    assert counts[Severity.CRITICAL] == 1 and counts[Severity.HIGH] == 1

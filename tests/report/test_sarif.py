"""SARIF reporter: valid SARIF 2.1.0 (official schema) that meets GitHub code scanning's rules."""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jsonschema
import pytest

from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.report.interface import RenderOptions, render
from modelguard.report.sarif import (
    FINGERPRINT_KEY,
    GITHUB_FINGERPRINT_KEY,
    MAX_LOCATIONS,
    MAX_RESULTS,
    render_sarif,
)
from modelguard.rules import all_rules

ReportFactory = Callable[..., Report]
ROOT = "/work/project"  # the root make_report uses

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "sarif-schema-2.1.0.json"
URI_CHARS = set(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft4Validator  # the draft the official schema declares
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _sarif(report: Report, **options: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(render_sarif(report, RenderOptions(**options)))
    return data


def _results_by_rule(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["ruleId"]: r for r in run["results"]}


def test_validates_against_the_official_schema(
    sarif_validator: jsonschema.Validator, make_report: ReportFactory
) -> None:
    for report in (make_report(), make_report(errors=False), Report(root="/r"), Report()):
        errors = list(sarif_validator.iter_errors(_sarif(report)))
        assert not errors, [e.message for e in errors[:5]]


def test_schema_validation_is_not_vacuous(
    sarif_validator: jsonschema.Validator, make_report: ReportFactory
) -> None:
    bad = _sarif(make_report())
    bad["runs"][0]["results"][0]["level"] = "critical"
    assert not sarif_validator.is_valid(bad)


def test_log_header_and_driver(make_report: ReportFactory) -> None:
    log = _sarif(make_report())
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-schema-2.1.0.json")
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "modelguard"
    assert driver["version"] == "9.9.9"
    assert driver["informationUri"].startswith("https://")
    assert [r["id"] for r in driver["rules"]] == [r.id for r in all_rules()]


def test_every_rule_descriptor_has_what_github_shows() -> None:
    rules = {r.id: r for r in all_rules()}
    descriptors = _sarif(Report(root="/r"))["runs"][0]["tool"]["driver"]["rules"]
    expected_level = {"critical": "error", "high": "error", "medium": "warning"}
    score_range = {
        "critical": (9.0, 10.0),
        "high": (7.0, 8.9),
        "medium": (4.0, 6.9),
        "low": (0.1, 3.9),
    }
    for descriptor in descriptors:
        rule = rules[descriptor["id"]]
        assert descriptor["name"] == rule.name
        assert descriptor["shortDescription"]["text"] == rule.summary
        assert descriptor["fullDescription"]["text"] == rule.description
        assert rule.fix in descriptor["help"]["text"]
        assert rule.fix in descriptor["help"]["markdown"]
        assert descriptor["helpUri"] == rule.help_uri
        label = rule.severity.label
        assert descriptor["defaultConfiguration"]["level"] == expected_level.get(label, "note")
        props = descriptor["properties"]
        assert props["tags"] and all(isinstance(t, str) for t in props["tags"])
        assert len(props["tags"]) <= 20
        assert props["precision"] in {"very-high", "high", "medium", "low"}
        if label == "info":
            assert "security-severity" not in props
        else:
            score = props["security-severity"]
            assert isinstance(score, str)  # GitHub wants a number in a string
            assert "security" in props["tags"]  # else GitHub ignores security-severity
            low, high = score_range[label]
            assert low <= float(score) <= high


def test_results_levels_messages_and_rule_indexes(make_report: ReportFactory) -> None:
    run = _sarif(make_report())["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    by_rule = _results_by_rule(run)
    assert set(by_rule) == {"MG101", "MG106", "MG107", "MG102", "MG001"}
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["message"]["text"]
        assert 1 <= len(result["locations"]) <= 10
    assert by_rule["MG101"]["level"] == "error"
    assert by_rule["MG102"]["level"] == "warning"
    assert by_rule["MG106"]["level"] == "note"
    assert by_rule["MG001"]["level"] == "note"
    assert by_rule["MG101"]["message"]["text"] == "pickle imports os.system"
    assert by_rule["MG101"]["properties"]["evidence"] == "os.system"
    high = Finding("MG103", Severity.HIGH, "calls x", Location("a.pkl"), evidence="x")
    medium_as_high = Finding("MG102", Severity.HIGH, "raised by policy", Location("a.pkl"))
    report = Report(artifacts=(ArtifactResult("a.pkl", "pickle", 3, (high, medium_as_high)),))
    results = _sarif(report)["runs"][0]["results"]
    # the finding's severity, not the rule default
    assert [r["level"] for r in results] == ["error", "error"]
    assert [r["properties"]["security-severity"] for r in results] == ["8.0", "8.0"]
    info = _results_by_rule(_sarif(make_report())["runs"][0])["MG001"]
    assert "security-severity" not in info["properties"]


def test_locations_are_relative_to_srcroot_with_a_region(make_report: ReportFactory) -> None:
    log = _sarif(make_report())
    run = log["runs"][0]
    assert run["originalUriBaseIds"] == {"%SRCROOT%": {"uri": "file:///work/project/"}}
    mg101 = _results_by_rule(run)["MG101"]
    [location] = mg101["locations"]
    physical = location["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "models/evil.pt", "uriBaseId": "%SRCROOT%"}
    assert physical["region"]["startLine"] == 1
    assert location["logicalLocations"] == [
        {"name": "archive/data.pkl", "fullyQualifiedName": "archive/data.pkl", "kind": "member"}
    ]
    # no absolute path of a file under the root appears anywhere in results
    results_text = json.dumps(run["results"]) + json.dumps(run["invocations"])
    assert ROOT not in results_text
    for result in run["results"]:
        artifact = result["locations"][0]["physicalLocation"]["artifactLocation"]
        uri = artifact["uri"]
        assert set(uri) <= URI_CHARS, uri
        if urlsplit(uri).scheme:
            assert urlsplit(uri).scheme == "file" and "uriBaseId" not in artifact
        else:
            assert not uri.startswith("/") and artifact["uriBaseId"] == "%SRCROOT%"


def test_files_outside_the_root_get_percent_encoded_file_uris(make_report: ReportFactory) -> None:
    run = _sarif(make_report())["runs"][0]
    artifact = _results_by_rule(run)["MG001"]["locations"][0]["physicalLocation"][
        "artifactLocation"
    ]
    assert artifact == {"uri": "file:///elsewhere/outside%20model.bin"}


def test_nested_members_and_offsets() -> None:
    loc = Location("bundle.tar").inside("ckpt.pt").inside("archive/data.pkl").at(5)
    nested = Finding("MG101", Severity.CRITICAL, "os.system", loc, evidence="os.system")
    top = Finding("MG106", Severity.LOW, "trailing", Location("bundle.tar", (), 99))
    report = Report(artifacts=(ArtifactResult("bundle.tar", "tar", 100, (nested, top)),))
    results = _sarif(report)["runs"][0]["results"]
    assert results[0]["locations"][0]["logicalLocations"][0] == {
        "name": "archive/data.pkl",
        "fullyQualifiedName": "ckpt.pt!/archive/data.pkl",
        "kind": "member",
    }
    assert results[0]["properties"]["offset"] == 5
    assert "byteOffset" not in results[0]["locations"][0]["physicalLocation"]["region"]
    # a plain-file offset is a byte offset into the file itself
    assert results[1]["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 1,
        "byteOffset": 99,
    }
    assert "logicalLocations" not in results[1]["locations"][0]


def test_partial_fingerprints_are_the_finding_fingerprints(make_report: ReportFactory) -> None:
    report = make_report()
    run = _sarif(report)["runs"][0]
    expected = {f.fingerprint() for f in report.findings} | {
        s.finding.fingerprint() for s in report.suppressed
    }
    assert {r["partialFingerprints"][FINGERPRINT_KEY] for r in run["results"]} == expected
    # GitHub builds an alert's identity from primaryLocationLineHash alone (with rule and
    # path): it must be ours, or every finding of a binary file shares line 1's hash.
    for result in run["results"]:
        fingerprints = result["partialFingerprints"]
        assert fingerprints[GITHUB_FINGERPRINT_KEY] == fingerprints[FINGERPRINT_KEY]


def test_two_payloads_in_one_file_are_two_github_alerts() -> None:
    where = Location("m.pt")
    findings = tuple(
        Finding("MG101", Severity.CRITICAL, f"imports {g}", where.inside(m), evidence=g)
        for m, g in (("a/data.pkl", "os.system"), ("b/data.pkl", "posix.system"))
    )
    report = Report(artifacts=(ArtifactResult("m.pt", "pytorch-zip", 9, findings),), root="/r")
    results = _sarif(report)["runs"][0]["results"]
    identities = {
        (r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
         r["partialFingerprints"][GITHUB_FINGERPRINT_KEY])
        for r in results
    }  # fmt: skip
    assert len(identities) == 2


def test_policy_suppressions_become_external_suppressions(make_report: ReportFactory) -> None:
    run = _sarif(make_report())["runs"][0]
    by_rule = _results_by_rule(run)
    assert by_rule["MG102"]["suppressions"] == [
        {"kind": "external", "status": "accepted", "justification": "vetted by security review"}
    ]
    assert all("suppressions" not in r for r in run["results"] if r["ruleId"] != "MG102")


def test_invocation_reports_unreadable_inputs(make_report: ReportFactory) -> None:
    [invocation] = _sarif(make_report())["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    assert invocation["exitCode"] == 2
    [note] = invocation["toolExecutionNotifications"]
    assert note["level"] == "error"
    assert note["message"]["text"] == "gone.pt: no such file or directory"
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "gone.pt"
    [clean] = _sarif(make_report(errors=False), fail_on=None)["runs"][0]["invocations"]
    assert clean["executionSuccessful"] is True
    assert clean["toolExecutionNotifications"] == []
    assert clean["exitCode"] == 0


def test_unknown_rule_gets_a_descriptor(sarif_validator: jsonschema.Validator) -> None:
    finding = Finding("MG999", Severity.HIGH, "from a future check", Location("m.pt"))
    report = Report(artifacts=(ArtifactResult("m.pt", "pickle", 1, (finding,)),), root="/r")
    log = _sarif(report)
    assert sarif_validator.is_valid(log)
    run = log["runs"][0]
    [result] = run["results"]
    assert run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == "MG999"


def test_undecodable_file_names_keep_their_bytes_in_the_uri() -> None:
    name = "m\udcffodel.pt"  # os.fsdecode(b"m\xffodel.pt")
    finding = Finding("MG001", Severity.INFO, "skipped", Location(name), evidence="unknown")
    report = Report(artifacts=(ArtifactResult(name, "unknown", 1, (finding,)),), root="/r")
    text = render_sarif(report, RenderOptions())
    assert text.isascii()
    uri = json.loads(text)["runs"][0]["results"][0]["locations"][0]["physicalLocation"][
        "artifactLocation"
    ]["uri"]
    assert uri == "m%FFodel.pt"
    assert unquote(uri, errors="surrogateescape") == name


def test_windows_style_root_and_deterministic_output(make_report: ReportFactory) -> None:
    run = _sarif(make_report(root="C:/work/project"))["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == "file:///C:/work/project/"
    report = make_report()
    assert render(report, "sarif") == render_sarif(report, RenderOptions())
    assert render_sarif(report, RenderOptions()) == render_sarif(make_report(), RenderOptions())


# -- GitHub's limits, symbolic links, remote artifacts ------------------------------------


def _many(files: int, per_file: int, severity: Severity = Severity.HIGH) -> Report:
    artifacts = []
    for i in range(files):
        path = f"models/m{i:05d}.pkl"
        findings = tuple(
            Finding("MG102", severity, f"imports pkg{j}.X", Location(path), evidence=f"pkg{j}.X")
            for j in range(per_file)
        )
        artifacts.append(ArtifactResult(path, "pickle", 10, findings))
    return Report(artifacts=tuple(artifacts), root="/r")


def _notes(run: dict[str, Any]) -> dict[str, str]:
    notes = run["invocations"][0]["toolExecutionNotifications"]
    return {n["descriptor"]["id"]: n["message"]["text"] for n in notes}


def test_at_the_limit_every_finding_is_a_result() -> None:
    run = _sarif(_many(MAX_RESULTS // 5, 5))["runs"][0]
    assert len(run["results"]) == MAX_RESULTS
    assert _notes(run) == {}


@pytest.mark.slow
def test_past_the_limit_findings_of_a_rule_in_a_file_become_one_result(
    sarif_validator: jsonschema.Validator,
) -> None:
    report = _many(6_000, 5)  # 30,000 findings
    first = _sarif(report)
    assert sarif_validator.is_valid(first)
    run = first["runs"][0]
    assert len(run["results"]) == 6_000
    result = run["results"][0]
    assert result["properties"]["aggregated"] == 5
    assert len(result["relatedLocations"]) == 4
    assert result["message"]["text"].startswith("5 findings of MG102 in this file")
    assert "results-aggregated" in _notes(run)
    assert "30000 findings" in _notes(run)["results-aggregated"]
    assert first == _sarif(report)  # deterministic


@pytest.mark.slow
def test_far_past_the_limit_the_most_severe_are_kept() -> None:
    low = _many(MAX_RESULTS + 10, 1, Severity.LOW)
    critical_path = "models/zz-evil.pkl"
    evil = Finding("MG101", Severity.CRITICAL, "imports os.system", Location(critical_path))
    report = Report(
        artifacts=(*low.artifacts, ArtifactResult(critical_path, "pickle", 9, (evil,))), root="/r"
    )
    run = _sarif(report)["runs"][0]
    assert len(run["results"]) == MAX_RESULTS
    assert run["results"][0]["ruleId"] == "MG101"  # the one critical finding arrives
    notes = _notes(run)
    assert "11 findings left out (11 low)" in notes["results-truncated"]


def test_locations_per_result_stay_under_githubs_limit() -> None:
    path = "models/big.pkl"
    findings = tuple(
        Finding("MG102", Severity.MEDIUM, f"imports p{j}.X", Location(path), evidence=f"p{j}")
        for j in range(3_000)
    )
    links = tuple(f"links/l{i}.pkl" for i in range(2_000))
    art = ArtifactResult(path, "pickle", 9, findings, links=links)
    padding = _many(MAX_RESULTS, 1, Severity.LOW).artifacts
    run = _sarif(Report(artifacts=(art, *padding), root="/r"))["runs"][0]
    top = run["results"][0]
    assert top["properties"]["aggregated"] == 3_000
    assert 1 + len(top["relatedLocations"]) <= MAX_LOCATIONS
    assert "more not listed" in top["message"]["text"]
    assert all(1 + len(r.get("relatedLocations", [])) <= MAX_LOCATIONS for r in run["results"])


def test_symbolic_links_are_related_locations_of_the_target() -> None:
    finding = Finding("MG101", Severity.CRITICAL, "os.system", Location("models/real.pt"))
    art = ArtifactResult("models/real.pt", "pickle", 9, (finding,), links=("latest.pt",))
    [result] = _sarif(Report(artifacts=(art,), root="/r"))["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "models/real.pt"
    )
    [link] = result["relatedLocations"]
    assert link["physicalLocation"]["artifactLocation"] == {
        "uri": "latest.pt",
        "uriBaseId": "%SRCROOT%",
    }
    assert link["message"]["text"] == "symbolic link to models/real.pt"


def test_remote_artifacts_use_a_remote_base_not_a_repository_path(
    sarif_validator: jsonschema.Validator,
) -> None:
    hub = "hf://acme/resnet@0123abcd/model.bin"
    url = "https://example.org/models/m%20x.pt"
    artifacts = tuple(
        ArtifactResult(p, "pickle", 9, (Finding("MG101", Severity.HIGH, "x", Location(p)),))
        for p in (hub, url)
    )
    log = _sarif(Report(artifacts=artifacts, root="/r"))
    assert sarif_validator.is_valid(log)
    run = log["runs"][0]
    locations = [r["locations"][0]["physicalLocation"]["artifactLocation"] for r in run["results"]]
    assert locations == [
        {"uri": "acme/resnet@0123abcd/model.bin", "uriBaseId": "HF"},
        {"uri": "example.org/models/m%20x.pt", "uriBaseId": "HTTPS"},
    ]
    bases = run["originalUriBaseIds"]
    assert bases["HF"]["uri"] == "hf://"
    assert bases["HTTPS"]["uri"] == "https://"
    for location in locations:  # base + uri gives back the artifact's name
        assert bases[location["uriBaseId"]]["uri"] + location["uri"] in (hub, url)


def test_rule_descriptors_fit_githubs_limits() -> None:
    rules = _sarif(Report(root="/r"))["runs"][0]["tool"]["driver"]["rules"]
    assert len(rules) <= 25_000
    assert all(len(r["properties"]["tags"]) <= 10 for r in rules)  # 10 shown, 20 accepted

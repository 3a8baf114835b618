"""JSON reporter: schema-valid, versioned, complete, and documented."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.report.interface import RenderOptions, render
from modelguard.report.json import load_schema, render_json

ReportFactory = Callable[..., Report]
ROOT = "/work/project"  # the root make_report uses

DOC = Path(__file__).resolve().parents[2] / "docs" / "json-report.md"


def _validator() -> jsonschema.protocols.Validator:
    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _render(report: Report, **options: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(render_json(report, RenderOptions(**options)))
    return data


def test_output_validates_against_the_shipped_schema(make_report: ReportFactory) -> None:
    validator = _validator()
    for report in (make_report(), make_report(errors=False), Report(root="/r")):
        for fail_on in (Severity.HIGH, None):
            validator.validate(_render(report, fail_on=fail_on))


def test_schema_rejects_what_the_documentation_forbids(make_report: ReportFactory) -> None:
    validator = _validator()
    good = _render(make_report())
    for mutate in (
        lambda d: d.update(version=2),
        lambda d: d.update(schema="other"),
        lambda d: d["summary"]["by_severity"].pop("info"),
        lambda d: d["artifacts"][0]["findings"][0].update(severity="severe"),
        lambda d: d["artifacts"][0]["findings"][0].pop("fingerprint"),
        lambda d: d["artifacts"][0]["suppressed"][0].pop("reason"),
        lambda d: d["artifacts"][0]["findings"][0]["location"].update(offset=-1),
    ):
        bad = json.loads(json.dumps(good))
        mutate(bad)
        assert not validator.is_valid(bad), mutate


def test_header_summary_and_verdict(make_report: ReportFactory) -> None:
    data = _render(make_report())
    assert data["schema"] == "modelguard-report"
    assert data["version"] == 1
    assert data["tool"] == {"name": "modelguard", "version": "9.9.9"}
    assert data["root"] == ROOT
    assert data["fail_on"] == "high"
    assert (data["verdict"], data["exit_code"]) == ("error", 2)
    assert data["summary"] == {
        "files": 3,
        "findings": 4,
        "by_severity": {"critical": 1, "high": 0, "medium": 0, "low": 1, "info": 2},
        "max_severity": "critical",
        "suppressed": 1,
        "errors": 1,
        "skipped": 0,
    }
    assert data["errors"] == [{"path": "gone.pt", "message": "no such file or directory"}]
    no_errors = make_report(errors=False)
    assert _render(no_errors)["verdict"] == "fail"
    never = _render(no_errors, fail_on=None)
    assert (never["fail_on"], never["verdict"], never["exit_code"]) == (None, "pass", 0)


def test_findings_carry_rule_location_evidence_and_fingerprint(make_report: ReportFactory) -> None:
    report = make_report()
    data = _render(report)
    evil = data["artifacts"][0]
    assert (evil["path"], evil["format"], evil["size"], evil["max_severity"]) == (
        "models/evil.pt",
        "pytorch-zip",
        1234,
        "critical",
    )
    first = evil["findings"][0]
    assert first == {
        "rule_id": "MG101",
        "rule": "pickle-dangerous-import",
        "severity": "critical",
        "message": "pickle imports os.system",
        "location": {"path": "models/evil.pt", "members": ["archive/data.pkl"], "offset": 17},
        "evidence": "os.system",
        "fingerprint": report.artifacts[0].findings[0].fingerprint(),
        "help_uri": "https://github.com/modelguard/modelguard/blob/main/docs/rules.md"
        "#mg101-pickle-dangerous-import",
    }
    # info findings are always present in JSON, whatever verbose says
    assert [f["rule_id"] for f in evil["findings"]] == ["MG101", "MG106", "MG107"]
    assert evil["findings"][2]["location"] == {
        "path": "models/evil.pt",
        "members": [],
        "offset": None,
    }
    [suppressed] = evil["suppressed"]
    assert suppressed["rule_id"] == "MG102"
    assert suppressed["reason"] == "vetted by security review"
    clean = data["artifacts"][1]
    assert clean["max_severity"] is None and clean["findings"] == [] and clean["suppressed"] == []


def test_unknown_rule_id_still_renders() -> None:
    finding = Finding("MG999", Severity.HIGH, "from a future check", Location("m.pt"))
    report = Report(artifacts=(ArtifactResult("m.pt", "pickle", 1, (finding,)),), root="/r")
    data = _render(report)
    _validator().validate(data)
    assert data["artifacts"][0]["findings"][0]["rule"] is None


def test_undecodable_and_hostile_names_serialise_as_ascii_json() -> None:
    name = "mod\udcffel\x1b.pt"
    finding = Finding("MG001", Severity.INFO, "skipped", Location(name), evidence="unknown")
    report = Report(artifacts=(ArtifactResult(name, "unknown", 1, (finding,)),), root="/r")
    text = render_json(report, RenderOptions())
    assert text.isascii() and "\x1b" not in text
    assert json.loads(text)["artifacts"][0]["path"] == name


def test_output_is_deterministic_and_reachable_through_the_registry(
    make_report: ReportFactory,
) -> None:
    report = make_report()
    assert (
        render(report, "json")
        == render_json(report, RenderOptions())
        == render_json(make_report(), RenderOptions())
    )


def _doc_examples() -> list[str]:
    return re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_documented_example_is_valid() -> None:
    [example] = _doc_examples()
    _validator().validate(json.loads(example))


@pytest.mark.parametrize("field", ["fail_on", "verdict", "exit_code", "summary", "fingerprint"])
def test_documentation_mentions_every_field(field: str) -> None:
    assert f"`{field}`" in DOC.read_text(encoding="utf-8")


def test_documentation_lists_every_schema_property() -> None:
    schema = load_schema()
    doc = DOC.read_text(encoding="utf-8")
    names = set(schema["properties"]) | set(schema["$defs"]["artifact"]["properties"])
    names |= set(schema["$defs"]["finding"]["properties"])
    names |= set(schema["properties"]["summary"]["properties"])
    missing = sorted(n for n in names if f"`{n}`" not in doc and f"`location.{n}`" not in doc)
    assert not missing, f"docs/json-report.md does not describe: {missing}"

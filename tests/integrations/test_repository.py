"""A real-looking repository scanned end to end: results only for models, SARIF that GitHub
accepts and lines up, a strict-valid ML-BOM with purls."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from modelguard.cli import cli

SARIF_SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "sarif-schema-2.1.0.json").read_text()
)


@pytest.fixture
def in_repo(repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(repository)
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return repository


def _scan(*args: str) -> Result:
    return CliRunner().invoke(cli, ["scan", ".", "--no-progress", *args])


def _json(*args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_scan("-f", "json", *args).stdout)
    return data


def test_results_only_for_model_files(in_repo: Path, repository_layout: SimpleNamespace) -> None:
    report = _json()
    assert sorted(a["path"] for a in report["artifacts"]) == sorted(repository_layout.models)
    assert report["exit_code"] == 1  # the malicious checkpoint
    rules = {f["rule_id"] for a in report["artifacts"] for f in a["findings"]}
    assert rules == {"MG101"}
    skipped = {s["path"] for s in report["skipped"]}
    # code, docs and configs are looked at and skipped; the venv, node_modules,
    # .git and the git-ignored build folder are not walked at all.
    assert len([p for p in skipped if p.startswith("src/")]) == repository_layout.code_files
    assert {"README.md", "pyproject.toml", ".gitignore", *repository_layout.data} <= skipped
    walked = skipped | {a["path"] for a in report["artifacts"]}
    assert not [p for p in walked if p.split("/")[0] in {".git", ".venv", "node_modules", "build"}]


def test_the_symlink_is_reported_under_its_target(in_repo: Path) -> None:
    report = _json()
    [evil] = [a for a in report["artifacts"] if a["path"] == "models/evil.pt"]
    assert evil["links"] == ["latest.pt"]
    assert "latest.pt" not in {a["path"] for a in report["artifacts"]}


def test_sarif_is_valid_and_within_githubs_limits(
    in_repo: Path, sarif_problems: SimpleNamespace
) -> None:
    result = _scan("-f", "sarif", "-o", "out.sarif")
    assert result.exit_code == 1
    text = (in_repo / "out.sarif").read_text()
    log = json.loads(text)
    jsonschema.validate(log, SARIF_SCHEMA)
    assert sarif_problems.check(text) == []
    [result_] = log["runs"][0]["results"]
    location = result_["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": "models/evil.pt", "uriBaseId": "%SRCROOT%"}
    [link] = result_["relatedLocations"]
    assert link["physicalLocation"]["artifactLocation"]["uri"] == "latest.pt"
    assert log["runs"][0]["properties"]["skippedNotModels"] > 40


def test_ml_bom_is_strict_valid_with_purls(
    in_repo: Path, repository_layout: SimpleNamespace
) -> None:
    result = _scan("-f", "cyclonedx", "-o", "bom.json")
    assert result.exit_code == 1, result.output
    text = (in_repo / "bom.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    kinds = {c["name"]: c["type"] for c in bom["components"]}
    assert kinds == {
        **dict.fromkeys(repository_layout.models, "machine-learning-model"),
        **dict.fromkeys(repository_layout.data, "data"),
    }
    assert all(c["purl"].startswith("pkg:generic/") for c in bom["components"])
    assert all(c["hashes"][0]["alg"] == "SHA-256" for c in bom["components"])
    [vuln] = bom["vulnerabilities"]
    assert (vuln["id"], vuln["affects"]) == ("MG101", [{"ref": "model:models/evil.pt"}])


def test_many_source_files_never_crowd_out_the_finding(
    in_repo: Path, sarif_problems: SimpleNamespace
) -> None:
    """The issue's case: thousands of .py files and one malicious pickle."""
    for i in range(3_000):
        (in_repo / "src" / "app" / f"generated{i:04d}.py").write_text("x = 1\n")
    result = _scan("-f", "sarif", "-o", "out.sarif", "--workers", "1")
    text = (in_repo / "out.sarif").read_text()
    assert sarif_problems.check(text) == []
    assert [r["ruleId"] for r in json.loads(text)["runs"][0]["results"]] == ["MG101"]
    assert result.exit_code == 1

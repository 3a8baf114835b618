"""CycloneDX 1.6 ML-BOM output, validated with cyclonedx-python-lib's own validator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from modelguard.api import scan
from modelguard.cli.main import cli
from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.policy import IgnoreRule, Policy
from modelguard.report.cyclonedx import render_cyclonedx
from modelguard.report.interface import RenderOptions, render

VALIDATOR = JsonStrictValidator(SchemaVersion.V1_6)


def bom_of(report: Report, options: RenderOptions | None = None) -> dict[str, Any]:
    text = render_cyclonedx(report, options or RenderOptions())
    errors = VALIDATOR.validate_str(text)
    assert errors is None, errors
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def props(obj: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in obj.get("properties", [])}


@pytest.fixture
def project(models: SimpleNamespace, tmp_path: Path) -> Path:
    models.write(tmp_path / "models" / "good.pkl", models.benign_pickle())
    models.write(tmp_path / "models" / "evil.pt", models.torch_like_zip(models.malicious_pickle()))
    return tmp_path


def test_every_artifact_is_an_ml_model_component_with_its_hash(project: Path) -> None:
    report = scan(project / "models", policy=Policy(), root=project)
    bom = bom_of(report)
    assert bom["specVersion"] == "1.6"
    assert bom["bomFormat"] == "CycloneDX"
    components = {c["name"]: c for c in bom["components"]}
    assert set(components) == {"models/good.pkl", "models/evil.pt"}
    for name, component in components.items():
        assert component["type"] == "machine-learning-model"
        expected = hashlib.sha256((project / name).read_bytes()).hexdigest()
        assert component["hashes"] == [{"alg": "SHA-256", "content": expected}]
        assert props(component)["modelguard:signature"] == "not-checked"
    assert props(components["models/evil.pt"])["modelguard:max-severity"] == "critical"
    assert props(components["models/good.pkl"])["modelguard:max-severity"] == "none"
    tools = bom["metadata"]["tools"]["components"]
    assert tools[0]["name"] == "modelguard"


def test_findings_are_vulnerabilities_affecting_their_component(project: Path) -> None:
    report = scan(project / "models", policy=Policy(), root=project)
    bom = bom_of(report)
    (vuln,) = bom["vulnerabilities"]
    assert vuln["id"] == "MG101"
    assert vuln["ratings"][0]["severity"] == "critical"
    assert vuln["affects"] == [{"ref": "model:models/evil.pt"}]
    assert "system" in vuln["description"]
    assert vuln["recommendation"]
    assert vuln["source"]["url"].endswith("#mg101-pickle-dangerous-import")
    assert props(vuln)["modelguard:location"].startswith("models/evil.pt!/archive/data.pkl")
    assert "analysis" not in vuln


def test_suppressed_findings_carry_the_policy_reason(project: Path) -> None:
    policy = Policy(ignores=(IgnoreRule("MG101", "sandboxed loader, reviewed"),))
    report = scan(project / "models", policy=policy, root=project)
    (vuln,) = bom_of(report)["vulnerabilities"]
    assert vuln["analysis"] == {"state": "not_affected", "detail": "sandboxed loader, reviewed"}


def test_lock_file_supplies_source_revision_and_sha1(project: Path) -> None:
    good = project / "models" / "good.pkl"
    sha256 = hashlib.sha256(good.read_bytes()).hexdigest()
    revision = "0123456789abcdef0123456789abcdef01234567"
    (project / "modelguard.lock").write_text(
        "version = 1\n\n[[artifact]]\n"
        'path = "models/good.pkl"\n'
        f"size = {good.stat().st_size}\n"
        f'sha256 = "{sha256}"\n'
        'sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"\n'
        f'source = "hf://acme/tiny@{revision}/good.pkl"\n'
        f'revision = "{revision}"\n'
        'scan = "clean"\n'
    )
    report = scan(project / "models", policy=Policy(), root=project)
    components = {c["name"]: c for c in bom_of(report)["components"]}
    good_component = components["models/good.pkl"]
    assert good_component["version"] == revision
    assert {h["alg"] for h in good_component["hashes"]} == {"SHA-256", "SHA-1"}
    assert good_component["externalReferences"] == [
        {
            "type": "distribution",
            "url": f"https://huggingface.co/acme/tiny/blob/{revision}/good.pkl",
        }
    ]
    good_props = props(good_component)
    assert good_props["modelguard:source"] == f"hf://acme/tiny@{revision}/good.pkl"
    assert good_props["modelguard:revision"] == revision
    assert good_props["modelguard:lock-digest-match"] == "true"
    assert "version" not in components["models/evil.pt"]  # not locked: no pin claimed


def test_lock_digest_mismatch_is_shown(project: Path) -> None:
    (project / "modelguard.lock").write_text(
        f'version = 1\n\n[[artifact]]\npath = "models/good.pkl"\nsize = 1\nsha256 = "{"0" * 64}"\n'
    )
    report = scan(project / "models", policy=Policy(), root=project)
    components = {c["name"]: c for c in bom_of(report)["components"]}
    assert props(components["models/good.pkl"])["modelguard:lock-digest-match"] == "false"


def test_broken_lock_file_gives_a_bom_without_pins(project: Path) -> None:
    (project / "modelguard.lock").write_text("this is [not toml")
    report = scan(project / "models", policy=Policy(), root=project)
    components = bom_of(report)["components"]
    assert all("version" not in c for c in components)


def _artifact(path: str, *findings: Finding) -> ArtifactResult:
    return ArtifactResult(path=path, format="pickle", size=1, findings=findings)


@pytest.mark.parametrize(
    ("finding", "status"),
    [
        (Finding("MG405", Severity.HIGH, "no signature bundle", Location("m")), "unsigned"),
        (Finding("MG406", Severity.CRITICAL, "bad signature", Location("m")), "invalid"),
        (Finding("MG407", Severity.CRITICAL, "other key", Location("m")), "wrong-key"),
        (Finding("MG408", Severity.HIGH, "bundle garbage", Location("m")), "bundle-malformed"),
        (
            Finding(
                "MG400", Severity.INFO, "signature m/model.sig verified: 1 file", Location("m")
            ),
            "verified",
        ),
        (
            Finding("MG400", Severity.INFO, "sha256 abc matches x.lock", Location("m")),
            "not-checked",
        ),
    ],
)
def test_signature_status_from_provenance_findings(
    tmp_path: Path, finding: Finding, status: str
) -> None:
    """verify's findings on the model folder give each file in it a signature status."""
    report = Report(
        artifacts=(_artifact("m/weights.pkl"), _artifact("m", finding)),
        root=tmp_path.as_posix(),
    )
    components = {c["name"]: c for c in bom_of(report)["components"]}
    assert props(components["m/weights.pkl"])["modelguard:signature"] == status


def test_signature_bundle_present_but_not_verified(models: SimpleNamespace, tmp_path: Path) -> None:
    models.write(tmp_path / "m" / "weights.pkl", models.benign_pickle())
    models.write(tmp_path / "m" / "model.sig", b"{}")
    report = Report(artifacts=(_artifact("m/weights.pkl"),), root=tmp_path.as_posix())
    (component,) = bom_of(report)["components"]
    assert props(component)["modelguard:signature"] == "present-unverified"


def test_missing_file_and_input_errors(tmp_path: Path) -> None:
    from modelguard.findings import InputError

    report = Report(
        artifacts=(_artifact("gone.pkl"),),
        errors=(InputError("unreadable.pt", "permission denied"),),
        root=tmp_path.as_posix(),
    )
    bom = bom_of(report)
    (component,) = bom["components"]
    assert "hashes" not in component
    assert props(bom["metadata"])["modelguard:input-error"] == "unreadable.pt: permission denied"


def test_hostile_names_stay_inside_json_strings(tmp_path: Path) -> None:
    name = 'evil"\n</script>\x1b[31m.pkl'
    report = Report(
        artifacts=(
            _artifact(
                name,
                Finding("MG101", Severity.CRITICAL, 'imports "os.system"\n', Location(name)),
            ),
        ),
        root=tmp_path.as_posix(),
    )
    bom = bom_of(report)
    assert bom["components"][0]["name"] == name


def test_cli_format_cyclonedx(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(project / ".cache"))
    result = CliRunner().invoke(
        cli, ["scan", "models", "--format", "cyclonedx", "-o", "bom.json", "--no-progress"]
    )
    assert result.exit_code == 1, result.output
    text = (project / "bom.json").read_text()
    assert VALIDATOR.validate_str(text) is None
    assert render is not None  # the interface maps "cyclonedx" to this renderer
    assert len(json.loads(text)["components"]) == 2


def test_remote_artifacts_carry_source_and_commit(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub = f"hf://acme/tiny@{commit}/model.bin"
    url = "https://example.org/models/model.pt"
    report = Report(artifacts=(_artifact(hub), _artifact(url)), root=tmp_path.as_posix())
    components = {c["name"]: c for c in bom_of(report)["components"]}
    assert components[hub]["version"] == commit
    assert components[hub]["externalReferences"][0]["url"] == (
        f"https://huggingface.co/acme/tiny/blob/{commit}/model.bin"
    )
    assert props(components[hub])["modelguard:source"] == hub
    assert "version" not in components[url]
    assert components[url]["externalReferences"][0]["url"] == url
    assert "hashes" not in components[url]

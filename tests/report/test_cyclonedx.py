"""CycloneDX 1.6 ML-BOM, validated with cyclonedx-python-lib's strict validator."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from modelguard.api import scan
from modelguard.cli import cli
from modelguard.findings import ArtifactResult, Finding, InputError, Location, Report, Severity
from modelguard.policy import IgnoreRule, Policy
from modelguard.report.cyclonedx import render_cyclonedx
from modelguard.report.interface import RenderOptions, render
from modelguard.supply.inventory import gather

VALIDATOR = JsonStrictValidator(SchemaVersion.V1_6)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# GLOBAL os.system ... REDUCE: what a malicious pickle does.
EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
BENIGN_PICKLE = pickle.dumps({"weights": [0.5, -1.25], "epoch": 7}, protocol=4)


def bom_of(report: Report, **options: Any) -> dict[str, Any]:
    text = render_cyclonedx(report, RenderOptions(**options))
    errors = VALIDATOR.validate_str(text)
    assert errors is None, errors
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def props(obj: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in obj.get("properties", [])}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    models = tmp_path / "models"
    models.mkdir()
    (models / "good.pkl").write_bytes(BENIGN_PICKLE)
    (models / "evil.pkl").write_bytes(EVIL_PICKLE)
    (models / "config.json").write_text('{"hidden_size": 8}\n')
    (models / "README.md").write_text("# a model\n")
    return tmp_path


def _bom(project: Path, policy: Policy | None = None) -> dict[str, Any]:
    report = scan(project / "models", policy=policy or Policy(), root=project)
    return bom_of(report, inventory=gather(report))


def test_only_models_are_ml_model_components_and_configs_are_data(project: Path) -> None:
    bom = _bom(project)
    assert (bom["specVersion"], bom["bomFormat"]) == ("1.6", "CycloneDX")
    kinds = {c["name"]: c["type"] for c in bom["components"]}
    assert kinds == {
        "models/good.pkl": "machine-learning-model",
        "models/evil.pkl": "machine-learning-model",
        "models/config.json": "data",  # README.md is no component at all
    }
    for component in bom["components"]:
        expected = hashlib.sha256((project / component["name"]).read_bytes()).hexdigest()
        assert component["hashes"] == [{"alg": "SHA-256", "content": expected}]
        assert component["purl"].startswith("pkg:generic/")
        assert f"checksum=sha256:{expected}" in component["purl"]
    assert props(bom["metadata"])["modelguard:skipped-not-models"] == "2"


def test_vulnerabilities_only_for_real_findings(project: Path) -> None:
    (project / "models" / "weights.bin").write_bytes(b"\x00\x01 not a format")  # MG001, info
    bom = _bom(project)
    [vuln] = bom["vulnerabilities"]
    assert vuln["id"] == "MG101"
    assert vuln["ratings"][0]["severity"] == "critical"
    assert vuln["affects"] == [{"ref": "model:models/evil.pkl"}]
    assert vuln["source"]["url"].endswith("#mg101-pickle-dangerous-import")
    assert vuln["recommendation"]
    assert "analysis" not in vuln
    weights = next(c for c in bom["components"] if c["name"] == "models/weights.bin")
    assert weights["type"] == "file"
    assert props(weights)["modelguard:findings"] == "0"


def test_suppressed_findings_carry_the_policy_reason(project: Path) -> None:
    policy = Policy(ignores=(IgnoreRule("MG101", "sandboxed loader, reviewed"),))
    [vuln] = _bom(project, policy)["vulnerabilities"]
    assert vuln["analysis"] == {"state": "not_affected", "detail": "sandboxed loader, reviewed"}


def test_a_locked_hub_file_has_purl_version_source_and_download_url(project: Path) -> None:
    good = project / "models" / "good.pkl"
    sha256 = hashlib.sha256(good.read_bytes()).hexdigest()
    (project / "models" / "modelguard.lock").write_text(
        "version = 1\n\n[[artifact]]\n"
        'path = "good.pkl"\n'
        f"size = {good.stat().st_size}\n"
        f'sha256 = "{sha256}"\n'
        f'source = "hf://acme/tiny@{COMMIT}/good.pkl"\n'
        f'revision = "{COMMIT}"\n'
        'scan = "clean"\n'
    )
    bom = _bom(project)
    components = {c["name"]: c for c in bom["components"]}
    assert "models/modelguard.lock" not in components  # the lock is not a model
    good_component = components["models/good.pkl"]
    assert good_component["purl"] == f"pkg:huggingface/acme/tiny@{COMMIT}#good.pkl"
    assert good_component["version"] == COMMIT
    assert good_component["externalReferences"] == [
        {
            "type": "distribution",
            "url": f"https://huggingface.co/acme/tiny/resolve/{COMMIT}/good.pkl",
        }
    ]
    good_props = props(good_component)
    assert good_props["modelguard:source"] == f"hf://acme/tiny@{COMMIT}/good.pkl"
    assert good_props["modelguard:revision"] == COMMIT
    assert good_props["modelguard:lock-file"] == "models/modelguard.lock"
    assert good_props["modelguard:lock-digest-match"] == "true"
    assert "version" not in components["models/evil.pkl"]  # not locked: no pin claimed


def test_remote_artifacts_from_a_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example.org")
    hub = f"hf://acme/tiny@{COMMIT}/model.bin"
    url = "https://example.org/models/model.pt"
    report = Report(
        artifacts=(ArtifactResult(hub, "pickle", 1), ArtifactResult(url, "pickle", 1)),
        root=tmp_path.as_posix(),
    )
    bom = bom_of(report, inventory=gather(report))
    components = {c["name"]: c for c in bom["components"]}
    assert components[hub]["version"] == COMMIT
    assert components[hub]["externalReferences"][0]["url"] == (
        f"https://mirror.example.org/acme/tiny/resolve/{COMMIT}/model.bin"
    )
    assert components[hub]["purl"] == (
        f"pkg:huggingface/acme/tiny@{COMMIT}?repository_url=https://mirror.example.org#model.bin"
    )
    assert props(bom["metadata"])["modelguard:hub-endpoint"] == "https://mirror.example.org"
    assert components[url]["externalReferences"][0]["url"] == url
    assert components[url]["purl"].startswith("pkg:generic/model.pt?download_url=")
    assert "hashes" not in components[url]


def test_without_an_inventory_the_renderer_reads_nothing(project: Path) -> None:
    report = scan(project / "models", policy=Policy(), root=project)
    bom = bom_of(report)
    assert all("hashes" not in c for c in bom["components"])
    via_interface = json.loads(render(report, "cyclonedx"))
    direct = json.loads(render_cyclonedx(report, RenderOptions()))
    for bom_ in (via_interface, direct):  # the only parts that differ per run
        del bom_["serialNumber"], bom_["metadata"]["timestamp"]
    assert via_interface == direct


def test_input_errors_and_inventory_notes_are_metadata(tmp_path: Path) -> None:
    (tmp_path / "modelguard.lock").write_text("this is [not toml")
    report = Report(
        artifacts=(ArtifactResult("gone.pkl", "pickle", 1),),
        errors=(InputError("unreadable.pt", "permission denied"),),
        root=tmp_path.as_posix(),
    )
    bom = bom_of(report, inventory=gather(report))
    [component] = bom["components"]
    assert "hashes" not in component
    meta = props(bom["metadata"])
    assert meta["modelguard:input-error"] == "unreadable.pt: permission denied"
    assert "invalid TOML" in meta["modelguard:inventory-note"]


def test_hostile_names_stay_inside_json_strings(tmp_path: Path) -> None:
    name = 'evil"\n</script>\x1b[31m.pkl'
    finding = Finding("MG101", Severity.CRITICAL, 'imports "os.system"\n', Location(name))
    report = Report(
        artifacts=(ArtifactResult(name, "pickle", 1, (finding,)),), root=tmp_path.as_posix()
    )
    bom = bom_of(report, inventory=gather(report))
    assert bom["components"][0]["name"] == name


def test_cli_gathers_the_inventory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(project / ".cache"))
    result = CliRunner().invoke(
        cli, ["scan", "models", "-f", "cyclonedx", "-o", "bom.json", "--no-progress"]
    )
    assert result.exit_code == 1, result.output  # the malicious pickle
    text = (project / "bom.json").read_text()
    assert VALIDATOR.validate_str(text) is None
    bom = json.loads(text)
    assert len(bom["components"]) == 3
    assert all("hashes" in c for c in bom["components"])

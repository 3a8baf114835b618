"""The documented pipeline gate (README, "A pipeline gate"), minus the network and the GPU:
lock -> verify -> scan -> merge -> ML-BOM -> decide, through the public API only."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

import modelguard
from modelguard import Severity
from modelguard.report.interface import RenderOptions, render
from modelguard.supply.inventory import gather


def gate(models_dir: Path, lock_file: Path, bom_out: Path) -> tuple[int, modelguard.Report]:
    verified = modelguard.verify(models_dir, lockfile=lock_file)
    scanned = modelguard.scan(models_dir)
    report = verified.merged(scanned)
    inventory = gather(report, lock=lock_file)
    bom_out.write_text(render(report, "cyclonedx", RenderOptions(inventory=inventory)))
    return report.exit_code(Severity.HIGH), report


def test_gate_passes_clean_locked_models_and_rejects_tampering(
    models: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # as the README runs it: every path from one folder
    models_dir = Path("models")
    models.write(models_dir / "weights.pkl", models.benign_pickle())
    models.write(models_dir / "ckpt.pt", models.torch_like_zip(models.benign_pickle()))
    lock_file = Path("models/modelguard.lock")
    modelguard.lock(models_dir, lockfile=lock_file)

    code, report = gate(models_dir, lock_file, tmp_path / "bom.json")
    assert code == 0, [str(f.location) + f.message for f in report.findings]
    bom_text = (tmp_path / "bom.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom_text) is None
    components = {c["name"]: c for c in json.loads(bom_text)["components"]}
    # the two models, each once (verify and scan merged), and not the lock file
    assert set(components) == {"models/weights.pkl", "models/ckpt.pt"}
    assert {c["type"] for c in components.values()} == {"machine-learning-model"}
    for component in components.values():
        pins = {p["name"]: p["value"] for p in component["properties"]}
        assert pins["modelguard:lock-file"] == "models/modelguard.lock"
        assert pins["modelguard:lock-digest-match"] == "true"

    # A malicious checkpoint swapped in: the digest no longer matches and the scan flags it.
    models.write(models_dir / "ckpt.pt", models.torch_like_zip(models.malicious_pickle()))
    code, report = gate(models_dir, lock_file, tmp_path / "bom.json")
    assert code == 1
    rules = {f.rule_id for f in report.at_or_above(Severity.HIGH)}
    assert "MG101" in rules  # os.system in the pickle
    assert rules & {"MG401", "MG404"}  # digest or size mismatch against the lock


def test_public_api_surface_is_documented_and_typed() -> None:
    root = Path(modelguard.__file__).parent
    assert (root / "py.typed").is_file()
    for name in ("scan", "verify", "fetch", "lock", "sign", "analyze_backdoor"):
        func = getattr(modelguard, name)
        assert callable(func) and func.__doc__, name
        hints = inspect.signature(func)
        assert hints.return_annotation is not inspect.Signature.empty, name
    for name in ("Report", "Finding", "Severity", "Location", "ArtifactResult"):
        assert getattr(modelguard, name).__doc__, name
    for name in ("ModelGuardError", "UsageError", "FetchError", "VerificationError"):
        assert issubclass(getattr(modelguard, name), Exception)
    assert set(modelguard.__all__) >= {"scan", "verify", "fetch", "lock", "sign"}

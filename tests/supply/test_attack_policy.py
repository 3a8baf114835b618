"""Attack: the checked files choose their own policy.

Before: a tampered signed folder that adds a pyproject.toml with
``fail-on = "never"`` made ``modelguard verify . --key pub.pem`` exit 0 beside a
critical digest mismatch, and ``exclude = ["*.bin"]`` made ``scan .`` skip a
malicious pickle. Now a policy file inside the checked tree is ignored with a
warning (MG412), and a fail-on read from any file never lets a critical
verification failure pass; only an ignore with a reason, outside the tree, can.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

import modelguard
from modelguard.cli import cli

if TYPE_CHECKING:
    from conftest import KeyPair

EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
NEVER = '[tool.modelguard]\nfail-on = "never"\n'


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def findings(output: str) -> dict[str, list[tuple[str, str]]]:
    """rule id -> [(path, severity)] from a JSON report."""
    out: dict[str, list[tuple[str, str]]] = {}
    for art in json.loads(output)["artifacts"]:
        for f in art["findings"]:
            out.setdefault(f["rule_id"], []).append((art["path"], f["severity"]))
    return out


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))


def test_pyproject_added_to_a_signed_folder_cannot_pass_verify(
    model_dir: Path, keys: dict[str, KeyPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    modelguard.sign(model_dir, keys["alice"].private)
    flip_a_byte(model_dir / "weights.bin")
    (model_dir / "pyproject.toml").write_text(NEVER)
    monkeypatch.chdir(model_dir)
    result = run("verify", ".", "--key", str(keys["alice"].public), "-f", "json")
    assert result.exit_code == 1, result.output
    found = findings(result.stdout)
    assert found["MG401"] == [("weights.bin", "critical")]
    assert ("pyproject.toml", "medium") in found["MG412"]  # ignored, and said so
    assert ("pyproject.toml", "high") in found["MG403"]  # and it was not signed either


def test_exclude_inside_the_scanned_tree_does_not_hide_a_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.modelguard]\nfail-on = "never"\nexclude = ["*.bin"]\n'
    )
    (tmp_path / "weights.bin").write_bytes(EVIL_PICKLE)
    monkeypatch.chdir(tmp_path)
    result = run("scan", ".", "-f", "json", "--no-cache")
    assert result.exit_code == 1, result.output
    found = findings(result.stdout)
    assert ("weights.bin", "critical") in found["MG101"]
    assert found["MG412"] == [("pyproject.toml", "medium")]
    # The same file given explicitly is the caller's choice, and applies.
    explicit = run("scan", ".", "--config", "pyproject.toml", "--no-cache")
    assert explicit.exit_code == 0, explicit.output


def test_policy_above_the_tree_still_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.modelguard]\nfail-on = "critical"\n')
    models = tmp_path / "models"
    models.mkdir()
    (models / "pyproject.toml").write_text('[tool.modelguard]\nfail-on = "info"\n')
    (models / "notes.txt").write_text("not a model\n")
    monkeypatch.chdir(models)
    # cwd is inside the tree: its pyproject is skipped, the project's one is used.
    policy = modelguard.load_policy(checked=["."])
    assert policy.source == str(tmp_path / "pyproject.toml")
    assert policy.ignored_files == (str(models / "pyproject.toml"),)
    assert policy.fail_on == modelguard.Severity.CRITICAL


def _locked_and_tampered(tmp_path: Path, policy: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(policy)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(bytes(range(256)) * 4)
    modelguard.lock(["model"], lockfile=tmp_path / "modelguard.lock")
    flip_a_byte(model / "weights.bin")
    return model


def test_fail_on_never_in_a_file_cannot_pass_a_critical_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _locked_and_tampered(tmp_path, NEVER)  # the project's own policy, outside the tree
    result = run("verify", "model", "-f", "json")
    assert result.exit_code == 1, result.output
    assert findings(result.stdout)["MG401"] == [("model/weights.bin", "critical")]
    assert "FAIL" in run("verify", "model").output  # the verdict agrees with the exit code
    # A high finding is still the file's to pass or fail...
    (tmp_path / "model" / "added.py").write_text("import os\n")
    (tmp_path / "model" / "weights.bin").write_bytes(bytes(range(256)) * 4)  # restored
    assert run("verify", "model").exit_code == 0
    # ...and the caller may always choose explicitly.
    flip_a_byte(tmp_path / "model" / "weights.bin")
    assert run("verify", "model", "--fail-on", "never").exit_code == 0


def test_only_an_ignore_with_a_reason_outside_the_tree_suppresses_a_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = _locked_and_tampered(
        tmp_path,
        '[[tool.modelguard.ignore]]\nrule = "MG401"\npaths = ["model/weights.bin"]\n'
        'reason = "re-exported by the training job, re-lock pending (TICKET-12)"\n',
    )
    result = run("verify", "model", "-f", "json")
    assert result.exit_code == 0, result.output
    (art,) = [
        a for a in json.loads(result.stdout)["artifacts"] if a["path"].endswith("weights.bin")
    ]
    assert [s["reason"] for s in art["suppressed"]] == [
        "re-exported by the training job, re-lock pending (TICKET-12)"
    ]
    # The same ignore inside the verified tree is not honoured.
    (model / "pyproject.toml").write_text((tmp_path / "pyproject.toml").read_text())
    (tmp_path / "pyproject.toml").unlink()
    monkeypatch.chdir(model)
    assert run("verify", ".", "--lock", str(tmp_path / "modelguard.lock")).exit_code == 1


def test_fetch_never_takes_policy_from_the_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(NEVER)
    monkeypatch.chdir(tmp_path)
    policy = modelguard.load_policy(checked=["."])
    assert policy.source is None and policy.fail_on == modelguard.Severity.HIGH
    assert policy.ignored_files == (str(tmp_path / "pyproject.toml"),)

"""Signing and signature verification, including interop with OpenSSF ``model_signing``.

Bundles modelguard writes must verify with ``model_signing verify key``, and
bundles ``model_signing sign key`` writes must verify with modelguard; every
tamper case maps to its own finding.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import modelguard
from modelguard.cli.main import cli
from modelguard.errors import UsageError
from modelguard.supply import signing

if TYPE_CHECKING:
    from conftest import KeyPair


def model_signing_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rule_ids(report: modelguard.Report) -> list[str]:
    return sorted(f.rule_id for f in report.findings)


def verify(model: Path, bundle: Path, key: KeyPair) -> modelguard.Report:
    return modelguard.verify(model, signature=bundle, key=key.public)


# ---- interop ------------------------------------------------------------------------------


def test_modelguard_bundle_verifies_with_model_signing(
    model_dir: Path, keys: dict[str, KeyPair]
) -> None:
    bundle = modelguard.sign(model_dir, keys["alice"].private)
    assert bundle == model_dir / "model.sig"
    done = model_signing_cli(
        "verify", "key", str(model_dir), "--signature", str(bundle),
        "--public_key", str(keys["alice"].public),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Verification succeeded" in done.stdout


def test_model_signing_bundle_verifies_with_modelguard(
    model_dir: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    bundle = tmp_path / "upstream.sig"
    done = model_signing_cli(
        "sign", "key", str(model_dir), "--private_key", str(keys["alice"].private),
        "--signature", str(bundle),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = verify(model_dir, bundle, keys["alice"])
    assert rule_ids(report) == ["MG400"]
    assert report.exit_code(modelguard.Severity.HIGH) == 0
    # ... and modelguard detects tampering in an upstream-signed model too.
    (model_dir / "config.json").write_text('{"hidden": 9}\n')
    assert rule_ids(verify(model_dir, bundle, keys["alice"])) == ["MG401"]


def test_model_signing_bundle_inside_folder_is_ignored(
    model_dir: Path, keys: dict[str, KeyPair]
) -> None:
    bundle = model_dir / "model.sig"
    done = model_signing_cli(
        "sign", "key", str(model_dir), "--private_key", str(keys["p384"].private),
        "--signature", str(bundle),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert rule_ids(modelguard.verify(model_dir, key=keys["p384"].public)) == ["MG400"]


def test_single_file_interop_both_ways(model_dir: Path, keys: dict[str, KeyPair]) -> None:
    weights = model_dir / "weights.bin"
    ours = modelguard.sign(weights, keys["alice"].private)
    assert ours == model_dir / "weights.bin.sig"
    done = model_signing_cli(
        "verify", "key", str(weights), "--signature", str(ours),
        "--public_key", str(keys["alice"].public),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    theirs = model_dir.parent / "theirs.sig"
    done = model_signing_cli(
        "sign", "key", str(weights), "--private_key", str(keys["alice"].private),
        "--signature", str(theirs),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert rule_ids(verify(weights, theirs, keys["alice"])) == ["MG400"]


def test_model_signing_rejects_tampering_we_also_reject(
    model_dir: Path, keys: dict[str, KeyPair]
) -> None:
    bundle = modelguard.sign(model_dir, keys["alice"].private)
    (model_dir / "extra.py").write_text("import os\n")
    done = model_signing_cli(
        "verify", "key", str(model_dir), "--signature", str(bundle),
        "--public_key", str(keys["alice"].public),
    )  # fmt: skip
    assert done.returncode != 0
    assert rule_ids(verify(model_dir, bundle, keys["alice"])) == ["MG403"]


# ---- bundle format --------------------------------------------------------------------------


def test_bundle_structure_matches_model_signing(model_dir: Path, keys: dict[str, KeyPair]) -> None:
    bundle = json.loads(modelguard.sign(model_dir, keys["alice"].private).read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == signing.key_hint(
        signing.load_public_key(keys["alice"].public)
    )
    envelope = bundle["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == ["config.json", "sub/tokenizer.txt", "weights.bin"]
    assert "model.sig" in statement["predicate"]["serialization"]["ignore_paths"]


def test_resource_order_is_component_wise(tmp_path: Path, keys: dict[str, KeyPair]) -> None:
    # "a-b/x" sorts before "a/x" as a string but after it component-wise, as model_signing does.
    model = tmp_path / "m"
    (model / "a").mkdir(parents=True)
    (model / "a-b").mkdir()
    (model / "a" / "x").write_text("1")
    (model / "a-b" / "x").write_text("2")
    bundle = modelguard.sign(model, keys["alice"].private, output=tmp_path / "m.sig")
    statement = json.loads(
        base64.b64decode(json.loads(bundle.read_text())["dsseEnvelope"]["payload"])
    )
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["a/x", "a-b/x"]
    done = model_signing_cli(
        "verify", "key", str(model), "--signature", str(bundle),
        "--public_key", str(keys["alice"].public),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# ---- tamper cases: each a distinct finding ---------------------------------------------------


@pytest.fixture
def signed(model_dir: Path, keys: dict[str, KeyPair]) -> Path:
    modelguard.sign(model_dir, keys["alice"].private)
    return model_dir


def test_clean_model_verifies(signed: Path, keys: dict[str, KeyPair]) -> None:
    report = modelguard.verify(signed, key=keys["alice"].public)
    assert rule_ids(report) == ["MG400"]


def test_one_byte_flipped(signed: Path, keys: dict[str, KeyPair]) -> None:
    weights = signed / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01
    weights.write_bytes(bytes(data))
    report = modelguard.verify(signed, key=keys["alice"].public)
    assert rule_ids(report) == ["MG401"]
    finding = report.findings[0]
    assert finding.location.path.endswith("model/weights.bin")
    assert finding.severity == modelguard.Severity.CRITICAL


def test_truncated_file(signed: Path, keys: dict[str, KeyPair]) -> None:
    weights = signed / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    assert rule_ids(modelguard.verify(signed, key=keys["alice"].public)) == ["MG401"]


def test_extra_file(signed: Path, keys: dict[str, KeyPair]) -> None:
    (signed / "sub" / "evil.py").write_text("import os\n")
    report = modelguard.verify(signed, key=keys["alice"].public)
    assert rule_ids(report) == ["MG403"]
    assert "sub/evil.py" in report.findings[0].message


def test_removed_file(signed: Path, keys: dict[str, KeyPair]) -> None:
    (signed / "config.json").unlink()
    assert rule_ids(modelguard.verify(signed, key=keys["alice"].public)) == ["MG402"]


def test_renamed_file(signed: Path, keys: dict[str, KeyPair]) -> None:
    (signed / "weights.bin").rename(signed / "weights2.bin")
    report = modelguard.verify(signed, key=keys["alice"].public)
    assert rule_ids(report) == ["MG402", "MG403"]


def test_wrong_key(signed: Path, keys: dict[str, KeyPair]) -> None:
    report = modelguard.verify(signed, key=keys["mallory"].public)
    assert rule_ids(report) == ["MG407"]


def test_wrong_key_without_hint_is_bad_signature(signed: Path, keys: dict[str, KeyPair]) -> None:
    bundle_path = signed / "model.sig"
    bundle = json.loads(bundle_path.read_text())
    del bundle["verificationMaterial"]["publicKey"]["hint"]
    bundle_path.write_text(json.dumps(bundle))
    assert rule_ids(modelguard.verify(signed, key=keys["alice"].public)) == ["MG400"]
    assert rule_ids(modelguard.verify(signed, key=keys["mallory"].public)) == ["MG406"]


def _edit_statement(bundle_path: Path, edit: object) -> None:
    bundle = json.loads(bundle_path.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    edit(statement)  # type: ignore[operator]
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    bundle_path.write_text(json.dumps(bundle))


def test_edited_bundle_payload(signed: Path, keys: dict[str, KeyPair]) -> None:
    # An attacker swaps in the digest of their own weights: the signature no longer covers it.
    def swap(statement: dict) -> None:  # type: ignore[type-arg]
        statement["predicate"]["resources"][2]["digest"] = "0" * 64

    _edit_statement(signed / "model.sig", swap)
    assert rule_ids(modelguard.verify(signed, key=keys["alice"].public)) == ["MG406"]


def test_edited_signature_bytes(signed: Path, keys: dict[str, KeyPair]) -> None:
    bundle_path = signed / "model.sig"
    bundle = json.loads(bundle_path.read_text())
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 0xFF
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    bundle_path.write_text(json.dumps(bundle))
    assert rule_ids(modelguard.verify(signed, key=keys["alice"].public)) == ["MG406"]


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b"[]",
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}',
        b'{"mediaType": "something/else", "dsseEnvelope": {}}',
    ],
)
def test_malformed_bundle(signed: Path, keys: dict[str, KeyPair], content: bytes) -> None:
    (signed / "model.sig").write_bytes(content)
    report = modelguard.verify(signed, key=keys["alice"].public)
    assert rule_ids(report) == ["MG408"]


def test_bundle_with_bad_base64(signed: Path, keys: dict[str, KeyPair]) -> None:
    bundle_path = signed / "model.sig"
    bundle = json.loads(bundle_path.read_text())
    bundle["dsseEnvelope"]["payload"] = "%%%not-base64%%%"
    bundle_path.write_text(json.dumps(bundle))
    assert rule_ids(modelguard.verify(signed, key=keys["alice"].public)) == ["MG408"]


def test_inconsistent_manifest_signed_by_key_is_malformed(
    model_dir: Path, keys: dict[str, KeyPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signer that writes a subject digest not matching its resources.
    monkeypatch.setattr(signing, "root_digest", lambda resources: "f" * 64)
    modelguard.sign(model_dir, keys["alice"].private)
    monkeypatch.undo()
    assert rule_ids(modelguard.verify(model_dir, key=keys["alice"].public)) == ["MG408"]


def test_unsigned(model_dir: Path, keys: dict[str, KeyPair]) -> None:
    report = modelguard.verify(model_dir, key=keys["alice"].public)
    assert rule_ids(report) == ["MG405"]
    assert "model.sig" in report.findings[0].message


def test_ed25519_key_is_refused_with_reason(model_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "ed.pem"
    key.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(UsageError, match="ECDSA only"):
        modelguard.sign(model_dir, key)


def test_symlink_refused_when_signing(model_dir: Path, keys: dict[str, KeyPair]) -> None:
    (model_dir / "link.bin").symlink_to(model_dir / "weights.bin")
    with pytest.raises(UsageError, match=r"only regular files .*link\.bin \(symbolic link"):
        modelguard.sign(model_dir, keys["alice"].private)


def test_signature_without_key_is_usage_error(signed: Path) -> None:
    with pytest.raises(UsageError, match="`signature` needs `key`"):
        modelguard.verify(signed, signature=signed / "model.sig")
    result = CliRunner().invoke(cli, ["verify", str(signed), "--signature", str(signed / "x")])
    assert result.exit_code == 2
    assert "--signature needs --key" in result.output  # the CLI names its flags


# ---- CLI ------------------------------------------------------------------------------------


def test_cli_sign_and_verify(model_dir: Path, keys: dict[str, KeyPair], tmp_path: Path) -> None:
    runner = CliRunner()
    bundle = tmp_path / "out.sig"
    result = runner.invoke(
        cli, ["sign", str(model_dir), "--key", str(keys["alice"].private), "--output", str(bundle)]
    )
    assert result.exit_code == 0, result.output
    assert bundle.is_file()
    ok = runner.invoke(
        cli,
        ["verify", str(model_dir), "--signature", str(bundle), "--key", str(keys["alice"].public)],
    )
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output
    (model_dir / "weights.bin").write_bytes(b"evil")
    bad = runner.invoke(
        cli,
        [
            "verify", str(model_dir), "--signature", str(bundle),
            "--key", str(keys["alice"].public), "--format", "json",
        ],
    )  # fmt: skip
    assert bad.exit_code == 1
    payload = json.loads(bad.stdout)
    found = [f["rule_id"] for a in payload["artifacts"] for f in a["findings"]]
    assert found == ["MG401"]


def test_cli_wrong_key_exits_1_and_says_so(signed: Path, keys: dict[str, KeyPair]) -> None:
    result = CliRunner().invoke(cli, ["verify", str(signed), "--key", str(keys["mallory"].public)])
    assert result.exit_code == 1
    assert "signature-wrong-key" in result.output
    assert "different key" in result.output


def test_cli_missing_key_file_exits_2(model_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sign", str(model_dir), "--key", str(tmp_path / "nope.pem")])
    assert result.exit_code == 2
    assert "nope.pem" in result.output


def test_cli_sign_encrypted_key(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, KeyPair]
) -> None:
    private = serialization.load_pem_private_key(keys["alice"].private.read_bytes(), None)
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    monkeypatch.setenv("MG_KEY_PASSWORD", "s3cret")
    result = CliRunner().invoke(
        cli, ["sign", str(model_dir), "--key", str(encrypted), "--password-env", "MG_KEY_PASSWORD"]
    )
    assert result.exit_code == 0, result.output
    assert rule_ids(modelguard.verify(model_dir, key=keys["alice"].public)) == ["MG400"]


def test_model_signing_is_installed() -> None:
    # The interop tests above are meaningless if the reference implementation is absent.
    assert shutil.which("model_signing") or model_signing_cli("--help").returncode == 0


def _upstream_sign(model: Path, key: Path, bundle: Path, hashing_config: object) -> None:
    from model_signing import signing as ms_signing

    (
        ms_signing.Config()
        .use_elliptic_key_signer(private_key=key)
        .set_hashing_config(hashing_config)
        .sign(model, bundle)
    )


def test_model_signing_shard_bundle_verifies_and_locates_tamper(
    model_dir: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    from model_signing import hashing as ms_hashing

    (model_dir / "empty.bin").write_bytes(b"")  # shard mode lists no resource for it
    bundle = tmp_path / "shards.sig"
    config = ms_hashing.Config().use_shard_serialization(shard_size=4096)
    _upstream_sign(model_dir, keys["alice"].private, bundle, config)
    report = verify(model_dir, bundle, keys["alice"])
    assert rule_ids(report) == ["MG400", "MG403"]
    (uncovered,) = [f for f in report.findings if f.rule_id == "MG403"]
    # reported (nothing vouches for it), at info: model signing itself leaves it out
    assert uncovered.location.path.endswith("empty.bin")
    assert uncovered.severity == modelguard.Severity.INFO
    assert "shard-serialized manifest lists no empty file" in uncovered.message
    weights = model_dir / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[10_000] ^= 0x01  # inside the third 4096-byte shard
    weights.write_bytes(bytes(data))
    report = verify(model_dir, bundle, keys["alice"])
    assert rule_ids(report) == ["MG401", "MG403"]
    assert "first at bytes 8192-12288" in report.findings[0].message


def test_model_signing_blake2_bundle_verifies(
    model_dir: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    from model_signing import hashing as ms_hashing

    bundle = tmp_path / "blake2.sig"
    config = ms_hashing.Config().use_file_serialization(hashing_algorithm="blake2")
    _upstream_sign(model_dir, keys["alice"].private, bundle, config)
    assert rule_ids(verify(model_dir, bundle, keys["alice"])) == ["MG400"]
    (model_dir / "config.json").write_text("{}\n")
    assert rule_ids(verify(model_dir, bundle, keys["alice"])) == ["MG401"]


def test_unsupported_hash_type_is_malformed(signed: Path, keys: dict[str, KeyPair]) -> None:
    # Re-sign a statement claiming blake3 with alice's key: the signature is fine, the
    # serialization is not one modelguard can check, so it must not pass.
    from cryptography.hazmat.primitives.asymmetric import ec

    bundle_path = signed / "model.sig"
    bundle = json.loads(bundle_path.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["serialization"]["hash_type"] = "blake3"
    payload = json.dumps(statement).encode()
    key = signing.load_private_key(keys["alice"].private)
    sig = key.sign(signing.pae(payload), ec.ECDSA(signing._ec_hash("secp256r1")))
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    bundle_path.write_text(json.dumps(bundle))
    report = modelguard.verify(signed, key=keys["alice"].public)
    assert rule_ids(report) == ["MG408"]
    assert "blake3" in report.findings[0].message

"""supply.inventory: per-artifact facts for the BOM, gathered from the disk and the lock files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity, Skipped
from modelguard.supply.inventory import ComponentKind, SignatureState, gather
from modelguard.supply.signing import SIGNATURE_VERIFIED_EVIDENCE

COMMIT = "0123456789ABCDEF0123456789abcdef01234567"


def _artifact(path: str, fmt: str = "pickle", *findings: Finding) -> ArtifactResult:
    return ArtifactResult(path=path, format=fmt, size=1, findings=findings)


def _lock(folder: Path, path: str, data: bytes, **extra: str) -> None:
    lines = [
        "version = 1",
        "",
        "[[artifact]]",
        f'path = "{path}"',
        f"size = {len(data)}",
        f'sha256 = "{hashlib.sha256(data).hexdigest()}"',
        *(f'{k} = "{v}"' for k, v in extra.items()),
    ]
    (folder / "modelguard.lock").write_text("\n".join(lines) + "\n")


@pytest.fixture(autouse=True)
def _no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.mark.parametrize(
    ("path", "fmt", "kind"),
    [
        ("m/model.safetensors", "safetensors", ComponentKind.MODEL),
        ("m/export.pt2", "zip", ComponentKind.MODEL),  # a zip named as a model
        ("m/state.pkl.gz", "gzip", ComponentKind.MODEL),
        ("m/bundle.tar.gz", "gzip", ComponentKind.FILE),  # an archive named as one
        ("m/weights.zip", "zip", ComponentKind.FILE),
        ("m/weights.bin", "unknown", ComponentKind.FILE),  # no reader recognised it
    ],
)
def test_component_kind(tmp_path: Path, path: str, fmt: str, kind: ComponentKind) -> None:
    report = Report(artifacts=(_artifact(path, fmt),), root=tmp_path.as_posix())
    assert [a.kind for a in gather(report).artifacts] == [kind]


def test_configs_and_tokenizers_are_data_other_skipped_files_are_not_listed(
    tmp_path: Path,
) -> None:
    skipped = tuple(
        Skipped(p, "not a model")
        for p in ("m/config.json", "m/tokenizer.json", "m/w.onnx.data", "README.md", "t.py")
    )
    report = Report(skipped=skipped, root=tmp_path.as_posix())
    facts = gather(report).by_path()
    assert set(facts) == {"m/config.json", "m/tokenizer.json", "m/w.onnx.data"}
    assert {f.kind for f in facts.values()} == {ComponentKind.DATA}


def test_digest_and_the_nearest_lock_pin_hub_sources(tmp_path: Path) -> None:
    data = b"\x80\x04K\x01."
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.pkl").write_bytes(data)
    # The fetch wrote the lock beside the models, not in the scan root.
    _lock(
        tmp_path / "models",
        "m.pkl",
        data,
        source=f"hf://acme/tiny@{COMMIT}/sub/m.pkl",
        revision=COMMIT,
    )
    report = Report(artifacts=(_artifact("models/m.pkl"),), root=tmp_path.as_posix())
    [facts] = gather(report).artifacts
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert facts.lock_file == "models/modelguard.lock"
    assert facts.lock_digest_match is True
    assert facts.source == f"hf://acme/tiny@{COMMIT}/sub/m.pkl"
    assert facts.revision == COMMIT
    assert facts.purl == f"pkg:huggingface/acme/tiny@{COMMIT.lower()}#sub/m.pkl"
    assert facts.download_url == f"https://huggingface.co/acme/tiny/resolve/{COMMIT}/sub/m.pkl"


def test_a_mirror_endpoint_is_the_download_url_and_the_purl_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example.org/")
    report = Report(
        artifacts=(_artifact(f"hf://acme/tiny@{COMMIT}/m.pkl"),), root=tmp_path.as_posix()
    )
    inventory = gather(report)
    [facts] = inventory.artifacts
    assert inventory.hub_endpoint == "https://hf-mirror.example.org"
    assert facts.download_url == (f"https://hf-mirror.example.org/acme/tiny/resolve/{COMMIT}/m.pkl")
    assert facts.purl == (
        f"pkg:huggingface/acme/tiny@{COMMIT.lower()}"
        "?repository_url=https://hf-mirror.example.org#m.pkl"
    )
    assert facts.sha256 is None  # a remote scan did not read every byte


def test_url_sources_get_a_generic_purl_with_download_url(tmp_path: Path) -> None:
    data = b"abc"
    (tmp_path / "m.pt").write_bytes(data)
    _lock(tmp_path, "m.pt", data, source="https://example.org/models/m.pt")
    report = Report(artifacts=(_artifact("m.pt"),), root=tmp_path.as_posix())
    [facts] = gather(report).artifacts
    digest = hashlib.sha256(data).hexdigest()
    assert facts.purl == (
        f"pkg:generic/m.pt?checksum=sha256:{digest}&download_url=https://example.org/models/m.pt"
    )
    assert facts.download_url == "https://example.org/models/m.pt"


def test_the_nearest_lock_wins_unless_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.pt").write_bytes(b"new bytes")
    _lock(tmp_path / "models", "m.pt", b"old bytes")  # nearest: the file changed since
    _lock(tmp_path, "models/m.pt", b"new bytes")
    report = Report(artifacts=(_artifact("models/m.pt"),), root=tmp_path.as_posix())
    [nearest] = gather(report).artifacts
    assert (nearest.lock_file, nearest.lock_digest_match) == ("models/modelguard.lock", False)
    [named] = gather(report, lock=tmp_path / "modelguard.lock").artifacts
    assert (named.lock_file, named.lock_digest_match) == ("modelguard.lock", True)


def test_a_broken_lock_pins_nothing_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "modelguard.lock").write_text("this is [not toml")
    report = Report(artifacts=(_artifact("m.pt"),), root=tmp_path.as_posix())
    inventory = gather(report)
    assert inventory.artifacts[0].lock_file is None
    assert "invalid TOML" in inventory.notes[0]


@pytest.mark.parametrize(
    ("finding", "state"),
    [
        (Finding("MG405", Severity.HIGH, "x", Location("m")), SignatureState.UNSIGNED),
        (Finding("MG406", Severity.CRITICAL, "x", Location("m")), SignatureState.INVALID),
        (Finding("MG407", Severity.CRITICAL, "x", Location("m")), SignatureState.WRONG_KEY),
        (Finding("MG408", Severity.HIGH, "x", Location("m")), SignatureState.BUNDLE_MALFORMED),
        (
            Finding("MG400", Severity.INFO, "x", Location("m"), SIGNATURE_VERIFIED_EVIDENCE),
            SignatureState.VERIFIED,
        ),
        # A digest match says nothing about a signature, whatever its wording.
        (
            Finding("MG400", Severity.INFO, "signature verified", Location("m")),
            SignatureState.NOT_CHECKED,
        ),
    ],
)
def test_signature_state_from_rule_and_evidence(
    tmp_path: Path, finding: Finding, state: SignatureState
) -> None:
    report = Report(
        artifacts=(_artifact("m/weights.pkl"), _artifact("m", "unknown", finding)),
        root=tmp_path.as_posix(),
    )
    assert gather(report).by_path()["m/weights.pkl"].signature is state


def test_a_bundle_beside_the_file_is_present_but_unverified(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "weights.pkl").write_bytes(b"x")
    (tmp_path / "m" / "model.sig").write_bytes(b"{}")
    report = Report(artifacts=(_artifact("m/weights.pkl"),), root=tmp_path.as_posix())
    assert gather(report).artifacts[0].signature is SignatureState.PRESENT_UNVERIFIED
    assert gather(report, read_files=False).artifacts[0].signature is SignatureState.NOT_CHECKED


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_a_model_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.pt")
    report = Report(artifacts=(_artifact("m.pt"),), root=tmp_path.as_posix())
    assert gather(report).artifacts[0].sha256 is None  # would block forever if opened

"""``fetch hf://…`` through the real huggingface_hub code path against a loopback fake Hub.

huggingface_hub's ``model_info(files_metadata=True)`` resolves the revision and
lists LFS sha256 / git blob ids; ``hf_hub_download`` (one file) and
``snapshot_download`` (a folder or the whole repo) fetch into the HF cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

import modelguard
from modelguard.cli.main import cli
from modelguard.errors import FetchError
from modelguard.supply.lockfile import read_lock

if TYPE_CHECKING:
    from conftest import FakeHub

WEIGHTS = bytes(range(256)) * 300
CONFIG = b'{"architectures": ["TinyNet"]}\n'
ONNX = b"\x08\x07" + b"fake onnx bytes" * 50
EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def repo(hub: FakeHub) -> FakeHub:
    hub.add(
        "acme/tiny",
        {"model.bin": WEIGHTS, "config.json": CONFIG, "onnx/model.onnx": ONNX},
        lfs={"model.bin", "onnx/model.onnx"},
    )
    return hub


def listing(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def provenance(report: modelguard.Report) -> list[str]:
    return sorted(f.rule_id for f in report.findings if f.rule_id.startswith("MG4"))


def test_whole_repo_snapshot_pinned_and_locked(repo: FakeHub, work: Path) -> None:
    result = CliRunner().invoke(
        cli, ["fetch", "hf://acme/tiny", "--dest", "dest", "--lock", "modelguard.lock", "-v"]
    )
    assert result.exit_code == 0, result.output
    assert listing(work / "dest") == ["config.json", "model.bin", "onnx/model.onnx"]
    assert (work / "dest" / "model.bin").read_bytes() == WEIGHTS
    commit = repo.repos["acme/tiny"].commit
    assert f"at revision {commit}" in result.output
    locked = read_lock(work / "modelguard.lock").by_path()
    entry = locked["dest/model.bin"]
    assert entry.revision == commit
    assert entry.source == f"hf://acme/tiny@{commit}/model.bin"
    assert entry.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert "Hub LFS sha256" in result.output and "Hub git blob id" in result.output
    # The real huggingface_hub path ran: metadata with blobs, the file listing at the
    # pinned commit (the tree since 0.25, the revision's metadata before), resolve HEAD+GET.
    paths = [p for _, p, _ in repo.server.requests]
    assert any(p.startswith("/api/models/acme/tiny") and "blobs=" in p for p in paths)
    listed = (f"/api/models/acme/tiny/tree/{commit}", f"/api/models/acme/tiny/revision/{commit}")
    assert any(p.startswith(listed) for p in paths)
    hits = [(m, p) for m, p, _ in repo.server.requests]
    assert ("HEAD", f"/acme/tiny/resolve/{commit}/model.bin") in hits
    assert modelguard.verify("dest").exit_code(modelguard.Severity.HIGH) == 0


def test_single_file_at_branch_uses_hf_hub_download(repo: FakeHub, work: Path) -> None:
    result = modelguard.fetch("hf://acme/tiny@main/onnx/model.onnx", "dest")
    assert result.ok, result.report
    assert listing(work / "dest") == ["model.onnx"]
    assert result.revision == repo.repos["acme/tiny"].commit
    assert provenance(result.report) == ["MG400"]
    paths = [p for _, p, _ in repo.server.requests]
    assert not any("/tree/" in p for p in paths)  # hf_hub_download, not snapshot_download


def test_folder_keeps_relative_paths(repo: FakeHub, work: Path) -> None:
    result = modelguard.fetch("hf://acme/tiny/onnx", "dest")
    assert result.ok
    assert listing(work / "dest") == ["model.onnx"]


def test_lfs_file_tampered_by_server_is_rejected(repo: FakeHub, work: Path) -> None:
    # The Hub's metadata says sha256(WEIGHTS); the download returns other bytes of the same size.
    evil = WEIGHTS[::-1]
    repo.tamper("acme/tiny", "model.bin", evil)
    result = CliRunner().invoke(cli, ["fetch", "hf://acme/tiny", "--dest", "dest"])
    assert result.exit_code == 1
    assert listing(work / "dest") == []  # not even the files that did verify
    assert hashlib.sha256(WEIGHTS).hexdigest() in result.output
    assert hashlib.sha256(evil).hexdigest() in result.output
    assert "Hub LFS sha256" in result.output
    # The bad blob was evicted from the HF cache, so a retry fetches afresh.
    blobs = list((work / "hf-home" / "hub").rglob("blobs/*"))
    assert all(b.read_bytes() != evil for b in blobs if b.is_file())


def test_small_file_checked_against_git_blob_id(repo: FakeHub, work: Path) -> None:
    repo.tamper("acme/tiny", "config.json", b'{"architectures": ["EvilNet"]}\n')
    result = modelguard.fetch("hf://acme/tiny/config.json", "dest")
    assert not result.placed
    assert provenance(result.report) == ["MG401"]
    assert "git-blob-sha1 mismatch" in result.report.findings[0].message


def test_server_sending_wrong_size_is_rejected(repo: FakeHub, work: Path) -> None:
    repo.tamper("acme/tiny", "model.bin", WEIGHTS + b"appended payload")
    with pytest.raises(FetchError, match="acme/tiny"):
        modelguard.fetch("hf://acme/tiny/model.bin", "dest")
    assert listing(work / "dest") == []


def test_hub_dying_mid_download(repo: FakeHub, work: Path) -> None:
    repo.tamper("acme/tiny", "model.bin", WEIGHTS, die_after=4096)
    result = CliRunner().invoke(cli, ["fetch", "hf://acme/tiny/model.bin", "--dest", "dest"])
    assert result.exit_code == 2
    assert "download from the Hub failed" in result.output
    assert listing(work / "dest") == []


def test_malicious_pickle_on_hub_is_quarantined(hub: FakeHub, work: Path) -> None:
    hub.add("evil/model", {"pytorch_model.bin": EVIL_PICKLE}, lfs={"pytorch_model.bin"})
    result = modelguard.fetch("hf://evil/model", "dest", quarantine_dir=work / "q")
    assert not result.placed
    assert len(result.quarantined) == 1
    assert result.quarantined[0].read_bytes() == EVIL_PICKLE
    assert listing(work / "dest") == []
    assert any(f.rule_id == "MG101" for f in result.report.findings)


def test_unknown_repo_and_revision(repo: FakeHub, work: Path) -> None:
    result = CliRunner().invoke(cli, ["fetch", "hf://acme/missing", "--dest", "dest"])
    assert result.exit_code == 2
    assert "hf://acme/missing" in result.output
    with pytest.raises(FetchError, match="refused"):
        modelguard.fetch("hf://acme/tiny@no-such-branch", "dest")
    with pytest.raises(FetchError, match="no file"):
        modelguard.fetch("hf://acme/tiny/nope.bin", "dest")


def test_lock_pin_overrides_a_moved_branch(repo: FakeHub, work: Path) -> None:
    assert modelguard.fetch("hf://acme/tiny/model.bin", "dest", lock="modelguard.lock").ok
    # main now points at new weights (the Hub metadata changes consistently)...
    repo.repos["acme/tiny"].files["model.bin"] = WEIGHTS[:1000]
    repo.repos["acme/tiny"].commit = "f" * 40
    # ...but the lock pins the old sha256, so the refetch is refused before download.
    requests_before = len(repo.server.requests)
    result = CliRunner().invoke(
        cli, ["fetch", "hf://acme/tiny/model.bin", "--dest", "dest", "--lock", "modelguard.lock"]
    )
    assert result.exit_code == 1
    assert "refusing to guess" in result.output
    assert hashlib.sha256(WEIGHTS).hexdigest() in result.output
    assert not any("/resolve/" in p for _, p, _ in repo.server.requests[requests_before:])
    assert (work / "dest" / "model.bin").read_bytes() == WEIGHTS


def test_user_digest_conflicting_with_hub_is_a_finding(repo: FakeHub, work: Path) -> None:
    result = modelguard.fetch("hf://acme/tiny/model.bin", "dest", sha256="0" * 64)
    assert not result.placed
    assert provenance(result.report) == ["MG401"]
    assert "Hub LFS sha256" in result.report.findings[0].message


def test_unreachable_hub_is_a_clean_error(
    work: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    result = CliRunner().invoke(cli, ["fetch", "hf://acme/tiny", "--dest", "dest"])
    assert result.exit_code == 2
    assert "cannot reach the Hub" in result.output
    assert listing(work / "dest") == []


def test_size_cap_applies_before_download(repo: FakeHub, work: Path) -> None:
    result = CliRunner().invoke(
        cli, ["fetch", "hf://acme/tiny", "--dest", "dest", "--max-size", "10000"]
    )
    assert result.exit_code == 2
    assert "size cap of 10000 bytes" in result.output
    assert not any("/resolve/" in p for _, p, _ in repo.server.requests)

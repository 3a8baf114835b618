"""Attack: add files a verifier does not look at.

Before: files added after signing went unreported under top-level ``.git/`` or
``.github/``, as ``.modelguard-partial-*`` files, or as ``.git`` folders at any
depth (against a lock); the lock pinned ``model.sig`` and the signature covered
``modelguard.lock``, so each broke the other. Now every file present is
accounted for: at info severity where OpenSSF model signing (or a lock file)
leaves it out by default, high otherwise, and partial downloads as MG411.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import modelguard
from modelguard.files import PARTIAL_PREFIX
from modelguard.findings import Severity

if TYPE_CHECKING:
    from conftest import KeyPair


def found(report: modelguard.Report) -> set[tuple[str, str, str]]:
    """(rule id, path, severity) of every finding except the verified notes."""
    return {
        (f.rule_id, f.location.path, f.severity.label)
        for f in report.findings
        if f.rule_id != "MG400"
    }


def add(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def project(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(model_dir.parent)
    return model_dir.parent


def test_signature_reports_every_file_it_does_not_cover(
    project: Path, keys: dict[str, KeyPair]
) -> None:
    model = project / "model"
    modelguard.sign(model, keys["alice"].private)
    add(model / ".github" / "workflows" / "ci.yml")
    add(model / ".gitattributes")
    add(model / "sub" / ".git" / "config", b"[core]\n\tfsmonitor = touch pwned\n")
    add(model / "sub" / ".github" / "x.yml")
    add(model / f"{PARTIAL_PREFIX}1234-weights.bin", b"unverified")
    add(model / "sub" / f"{PARTIAL_PREFIX}5678-x.bin", b"unverified")
    report = modelguard.verify("model", key=keys["alice"].public)
    assert found(report) == {
        ("MG403", "model/.github", "info"),  # OpenSSF model signing ignores these
        ("MG403", "model/.gitattributes", "info"),
        ("MG403", "model/sub/.git/config", "high"),  # but only at the top level
        ("MG403", "model/sub/.github/x.yml", "high"),
        ("MG411", f"model/{PARTIAL_PREFIX}1234-weights.bin", "high"),
        ("MG411", f"model/sub/{PARTIAL_PREFIX}5678-x.bin", "high"),
    }
    assert report.exit_code(Severity.HIGH) == 1


def test_lock_reports_every_file_it_does_not_pin(project: Path) -> None:
    modelguard.lock(["model"])
    model = project / "model"
    add(model / ".git" / "HEAD", b"ref: refs/heads/main\n")
    add(model / "sub" / ".git" / "hooks" / "post-checkout", b"#!/bin/sh\n")
    add(model / f"{PARTIAL_PREFIX}1234-weights.bin", b"unverified")
    report = modelguard.verify("model")
    assert found(report) == {
        ("MG403", "model/.git", "info"),  # git's own folder at the top: left out of locks
        ("MG403", "model/sub/.git/hooks/post-checkout", "high"),
        ("MG411", f"model/{PARTIAL_PREFIX}1234-weights.bin", "high"),
    }
    assert report.exit_code(Severity.HIGH) == 1


def test_lock_and_signature_never_break_each_other(project: Path, keys: dict[str, KeyPair]) -> None:
    model = project / "model"
    lock = model / "modelguard.lock"
    modelguard.lock(["model"], lockfile=lock)
    modelguard.sign(model, keys["alice"].private)
    assert modelguard.verify("model", lockfile=lock).exit_code(Severity.HIGH) == 0
    assert modelguard.verify("model", key=keys["alice"].public).exit_code(Severity.HIGH) == 0
    # Re-signing changes model.sig: the lock does not pin it.
    modelguard.sign(model, keys["mallory"].private, output=model / "model.sig")
    modelguard.sign(model, keys["alice"].private)
    assert modelguard.verify("model", lockfile=lock).exit_code(Severity.HIGH) == 0
    # Re-locking changes modelguard.lock: the signature does not cover it.
    (model / "extra.txt").write_text("added\n")
    modelguard.lock(["model"], lockfile=lock)
    (model / "extra.txt").unlink()
    modelguard.lock(["model"], lockfile=lock)
    report = modelguard.verify("model", key=keys["alice"].public)
    assert report.exit_code(Severity.HIGH) == 0
    assert ("MG403", "model/modelguard.lock", "info") in found(report)
    # And model_signing agrees: the bundle lists the lock in its ignore_paths.
    done = subprocess.run(
        [
            sys.executable, "-m", "model_signing", "verify", "key", str(model),
            "--signature", str(model / "model.sig"), "--public_key", str(keys["alice"].public),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_single_files_bundle_is_not_locked(project: Path, keys: dict[str, KeyPair]) -> None:
    bundle = modelguard.sign(project / "model" / "weights.bin", keys["alice"].private)
    assert bundle.name == "weights.bin.sig"
    modelguard.lock(["model"])
    from modelguard.supply.lockfile import read_lock

    assert "model/weights.bin.sig" not in read_lock(project / "modelguard.lock").by_path()
    report = modelguard.verify("model")
    assert ("MG403", "model/weights.bin.sig", "info") in found(report)
    assert report.exit_code(Severity.HIGH) == 0


def test_a_fifo_in_the_tree_never_blocks_lock_verify_or_sign(
    project: Path, keys: dict[str, KeyPair]
) -> None:
    """A FIFO would block a reader until a writer comes: it is listed, never opened."""
    import os

    from click.testing import CliRunner

    from modelguard.cli import cli

    modelguard.lock(["model"])
    modelguard.sign(project / "model", keys["alice"].private)
    os.mkfifo(project / "model" / "pipe.bin")
    runner = CliRunner()
    locked = runner.invoke(cli, ["lock", "model", "--lock", "other.lock"])
    assert locked.exit_code == 2 and "model/pipe.bin: special file" in locked.output
    report = modelguard.verify("model")
    assert ("MG403", "model/pipe.bin", "high") in found(report)
    signed = modelguard.verify("model", key=keys["alice"].public)
    assert ("MG403", "model/pipe.bin", "high") in found(signed)
    named = runner.invoke(cli, ["verify", "model/pipe.bin", "--sha256", "0" * 64])
    assert named.exit_code == 2 and "not a regular file" in named.output
    with pytest.raises(modelguard.UsageError, match="only regular files"):
        modelguard.sign(project / "model", keys["alice"].private)


def test_a_file_swapped_while_it_is_locked_is_not_locked(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock's digest and verdict must describe the same bytes."""
    from modelguard.supply import lock as lock_module
    from modelguard.supply.lockfile import read_lock

    real_scan = lock_module.run_scan

    def scan_then_swap(*args: object, **kwargs: object) -> modelguard.Report:
        report = real_scan(*args, **kwargs)  # type: ignore[arg-type]
        (project / "model" / "weights.bin").write_bytes(b"cposix\nsystem\n(S'x'\ntR.")
        return report

    monkeypatch.setattr(lock_module, "run_scan", scan_then_swap)
    report = modelguard.lock(["model"])
    assert [(e.path, e.message) for e in report.errors] == [
        ("model/weights.bin", "changed while it was being locked")
    ]
    assert "model/weights.bin" not in read_lock(project / "modelguard.lock").by_path()


def test_a_staged_download_changed_while_scanned_is_not_placed(
    project: Path, monkeypatch: pytest.MonkeyPatch, server: object
) -> None:
    from modelguard.errors import FetchError
    from modelguard.supply import fetch as fetch_module

    real_scan = fetch_module.scan_file

    def scan_then_tamper(target: object, policy: object) -> object:
        result = real_scan(target, policy)  # type: ignore[arg-type]
        with open(target.fs_path, "ab") as handle:  # type: ignore[attr-defined]
            handle.write(b"appended after the scan")
        return result

    monkeypatch.setattr(fetch_module, "scan_file", scan_then_tamper)
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(project / "cache"))
    url = server.serve("/m.bin", b"\x80\x04K\x01.")  # type: ignore[attr-defined]
    with pytest.raises(FetchError, match="changed while it was scanned"):
        modelguard.fetch(url, "dest", allow_http=True)
    assert list((project / "dest").iterdir()) == []

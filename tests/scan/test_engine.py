"""End to end: modelguard.scan over folders of mixed files, as users and the CLI call it."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import BENIGN_PICKLE, MALICIOUS_PICKLE, make_zip, torch_zip

import modelguard
from modelguard.findings import Report, Severity
from modelguard.policy import Policy


def _tar_with_symlink(path: Path) -> None:
    with tarfile.open(path, "w") as archive:
        link = tarfile.TarInfo("weights")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        archive.addfile(link)


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A model folder: clean and malicious files of every archive kind."""
    root = tmp_path / "models"
    (root / "clean").mkdir(parents=True)
    (root / "bad").mkdir()
    (root / "vendor").mkdir()
    (root / "clean" / "model.pt").write_bytes(torch_zip(BENIGN_PICKLE))
    (root / "clean" / "state.pkl").write_bytes(BENIGN_PICKLE)
    (root / "clean" / "README.md").write_text("# a model\n")
    (root / "clean" / "state.pkl.gz").write_bytes(gzip.compress(BENIGN_PICKLE))
    (root / "bad" / "evil.pt").write_bytes(torch_zip(MALICIOUS_PICKLE))
    (root / "bad" / "evil.pkl.xz.gz").write_bytes(gzip.compress(MALICIOUS_PICKLE))
    (root / "bad" / "dupes.zip").write_bytes(
        make_zip([("a.pkl", MALICIOUS_PICKLE), ("a.pkl", BENIGN_PICKLE)])
    )
    _tar_with_symlink(root / "bad" / "linked.tar")
    (root / "vendor" / "also-evil.pkl").write_bytes(MALICIOUS_PICKLE)
    return root


def _summary(report: Report) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted(
        (a.path, a.format, tuple(sorted(f"{f.rule_id}@{f.location}" for f in a.findings)))
        for a in report.artifacts
    )


def _rules_by_path(report: Report) -> dict[str, set[str]]:
    return {a.path: {f.rule_id for f in a.findings} for a in report.artifacts}


def test_folder_scan_finds_every_bad_file_and_passes_clean_ones(mixed: Path) -> None:
    report = modelguard.scan(mixed, root=mixed, workers=1)
    rules = _rules_by_path(report)
    assert [s.path for s in report.skipped] == ["clean/README.md"]  # not a model: no result
    assert set(rules) == {
        "clean/model.pt", "clean/state.pkl", "clean/state.pkl.gz",
        "bad/evil.pt", "bad/evil.pkl.xz.gz", "bad/dupes.zip", "bad/linked.tar",
        "vendor/also-evil.pkl",
    }  # fmt: skip
    for art in report.artifacts:
        if art.path.startswith("clean/"):
            assert art.max_severity is None or art.max_severity < Severity.MEDIUM, art.path
    assert "MG101" in rules["bad/evil.pt"]
    assert "MG101" in rules["bad/evil.pkl.xz.gz"]
    assert {"MG101", "MG202"} <= rules["bad/dupes.zip"]
    assert "MG206" in rules["bad/linked.tar"]
    assert "MG004" not in set().union(*rules.values())
    formats = {a.path: a.format for a in report.artifacts}
    assert formats["clean/model.pt"] == "pytorch-zip"
    assert formats["bad/linked.tar"] == "tar"
    assert report.exit_code(Severity.HIGH) == 1
    assert report.errors == ()


def test_member_locations_are_reported_inside_archives(mixed: Path) -> None:
    report = modelguard.scan(mixed / "bad" / "evil.pt", root=mixed, workers=1)
    (finding,) = [f for f in report.findings if f.rule_id == "MG101"]
    assert finding.location.path == "bad/evil.pt"
    assert finding.location.members == ("archive/data.pkl",)


def test_exclusion_skips_files_and_folders(mixed: Path) -> None:
    policy = Policy(exclude=("vendor/**", "*.tar"))
    report = modelguard.scan(mixed, policy=policy, root=mixed, workers=1)
    paths = {a.path for a in report.artifacts}
    assert "vendor/also-evil.pkl" not in paths
    assert "bad/linked.tar" not in paths
    assert "bad/evil.pt" in paths


def test_unreadable_inputs_go_to_errors(mixed: Path, tmp_path: Path) -> None:
    (mixed / "clean" / "dangling.pt").symlink_to(tmp_path / "nowhere.pt")
    missing = tmp_path / "missing.pt"
    report = modelguard.scan([mixed, missing], root=tmp_path, workers=1)
    problems = {e.path: e.message for e in report.errors}
    assert problems == {
        "models/clean/dangling.pt": "broken symbolic link",
        "missing.pt": "no such file or directory",
    }
    assert report.exit_code(Severity.HIGH) == 2
    assert any(a.path == "models/bad/evil.pt" for a in report.artifacts)


def test_permission_denied_goes_to_errors(unprivileged: Any) -> None:
    # Root reads files whatever their mode: the scan runs without that power.
    home = unprivileged.folder()
    path = home / "locked.pt"
    path.write_bytes(torch_zip(BENIGN_PICKLE))
    path.chmod(0)
    out = unprivileged.python(
        "import modelguard\n"
        f"report = modelguard.scan({str(path)!r}, root={str(home)!r}, workers=1)\n"
        "print([(e.path, e.message) for e in report.errors])"
    )
    assert out.strip() == "[('locked.pt', 'Permission denied')]"


def test_parallel_workers_give_the_sequential_result(mixed: Path) -> None:
    # Enough files to take the process-pool path.
    for i in range(10):
        (mixed / "clean" / f"copy{i}.pt").write_bytes(torch_zip(BENIGN_PICKLE))
        (mixed / "bad" / f"copy{i}.pkl").write_bytes(MALICIOUS_PICKLE)
    sequential = modelguard.scan(mixed, root=mixed, workers=1)
    parallel = modelguard.scan(mixed, root=mixed, workers=2)
    assert len(sequential.artifacts) == 28  # and README.md skipped
    assert _summary(parallel) == _summary(sequential)
    assert [a.path for a in parallel.artifacts] == [a.path for a in sequential.artifacts]


def test_truncated_files_in_a_folder_never_crash(tmp_path: Path) -> None:
    data = torch_zip(MALICIOUS_PICKLE)
    for cut in range(0, len(data), max(1, len(data) // 25)):
        (tmp_path / f"cut{cut:05d}.pt").write_bytes(data[:cut])
    report = modelguard.scan(tmp_path, root=tmp_path, workers=1)
    assert len(report.artifacts) >= 25
    assert not [f for f in report.findings if f.rule_id == "MG004"]
    assert report.errors == ()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_in_a_folder_is_an_error_not_a_hang(tmp_path: Path) -> None:
    # Opening a FIFO for reading blocks until a writer appears; a scan must not.
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "state.pkl").write_bytes(BENIGN_PICKLE)
    code = (
        "import sys, modelguard\n"
        "r = modelguard.scan(sys.argv[1], root=sys.argv[1], workers=1)\n"
        "print(sorted(str(e) for e in r.errors), [a.path for a in r.artifacts])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['pipe: not a regular file'] ['state.pkl']"

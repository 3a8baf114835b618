"""``modelguard lock`` and ``modelguard verify``: pip --require-hashes for model files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import modelguard
from modelguard.cli.main import cli
from modelguard.errors import UsageError
from modelguard.supply.lockfile import LockEntry, LockFile, read_lock, render_lock, write_lock

EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."


@pytest.fixture
def project(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(model_dir.parent)
    return model_dir.parent


def rule_ids(report: modelguard.Report) -> list[str]:
    return sorted(f.rule_id for f in report.findings if f.rule_id.startswith("MG4"))


def test_lock_records_size_sha256_and_verdict(project: Path) -> None:
    modelguard.lock(["model"])
    locked = read_lock(project / "modelguard.lock").by_path()
    assert sorted(locked) == ["model/config.json", "model/sub/tokenizer.txt", "model/weights.bin"]
    weights = (project / "model" / "weights.bin").read_bytes()
    entry = locked["model/weights.bin"]
    assert entry.size == len(weights)
    assert entry.sha256 == hashlib.sha256(weights).hexdigest()
    assert entry.scan == "clean"


def test_lock_records_scan_verdict_of_a_malicious_pickle(project: Path) -> None:
    (project / "model" / "evil.pkl").write_bytes(EVIL_PICKLE)
    report = modelguard.lock(["model"])
    assert report.exit_code(modelguard.Severity.HIGH) == 1
    assert read_lock(project / "modelguard.lock").by_path()["model/evil.pkl"].scan == "critical"


def test_lock_without_scan(project: Path) -> None:
    modelguard.lock(["model"], scan=False)
    entries = read_lock(project / "modelguard.lock").entries
    assert {e.scan for e in entries} == {"not-scanned"}


def test_relock_of_unchanged_files_is_byte_identical(project: Path) -> None:
    modelguard.lock(["model"])
    first = (project / "modelguard.lock").read_bytes()
    modelguard.lock(["model"])
    assert (project / "modelguard.lock").read_bytes() == first


def test_clean_verify_passes(project: Path) -> None:
    modelguard.lock(["model"])
    report = modelguard.verify("model")
    assert rule_ids(report) == ["MG400"] * 3
    assert report.exit_code(modelguard.Severity.HIGH) == 0


def test_modified_file(project: Path) -> None:
    modelguard.lock(["model"])
    weights = project / "model" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[7] ^= 0x80  # same size, one bit
    weights.write_bytes(bytes(data))
    report = modelguard.verify("model")
    assert rule_ids(report) == ["MG400", "MG400", "MG401"]
    bad = next(f for f in report.findings if f.rule_id == "MG401")
    assert bad.location.path == "model/weights.bin"
    assert hashlib.sha256(bytes(data)).hexdigest() in bad.message


def test_resized_file(project: Path) -> None:
    modelguard.lock(["model"])
    (project / "model" / "config.json").write_text('{"hidden": 8, "x": 1}\n')
    assert "MG404" in rule_ids(modelguard.verify("model"))


def test_missing_extra_and_renamed(project: Path) -> None:
    modelguard.lock(["model"])
    (project / "model" / "config.json").unlink()
    (project / "model" / "sub" / "tokenizer.txt").rename(project / "model" / "sub" / "tok.txt")
    (project / "model" / "hook.py").write_text("import os\n")
    report = modelguard.verify("model")
    assert rule_ids(report) == ["MG400", "MG402", "MG402", "MG403", "MG403"]
    paths = {f.location.path for f in report.findings if f.rule_id == "MG403"}
    assert paths == {"model/hook.py", "model/sub/tok.txt"}


def test_verify_one_locked_file(project: Path) -> None:
    modelguard.lock(["model"])
    assert rule_ids(modelguard.verify("model/weights.bin")) == ["MG400"]


def test_verify_unlocked_file_is_unexpected(project: Path) -> None:
    modelguard.lock(["model/weights.bin"])
    assert rule_ids(modelguard.verify("model/config.json")) == ["MG403"]


def test_sha1_only_entry_from_a_zoo(project: Path) -> None:
    data = (project / "model" / "weights.bin").read_bytes()
    lock = LockFile(
        (LockEntry("model/weights.bin", len(data), sha1=hashlib.sha1(data).hexdigest()),)
    )
    write_lock(project / "modelguard.lock", lock)
    assert rule_ids(modelguard.verify("model/weights.bin")) == ["MG400"]
    (project / "model" / "weights.bin").write_bytes(data[:-1] + b"\x00")
    assert rule_ids(modelguard.verify("model/weights.bin")) == ["MG401"]


def test_single_file_digest_options(project: Path) -> None:
    path = project / "model" / "weights.bin"
    data = path.read_bytes()
    good = modelguard.verify(path, sha256=hashlib.sha256(data).hexdigest())
    assert rule_ids(good) == ["MG400"]
    bad = modelguard.verify(path, sha1="0" * 40)
    assert rule_ids(bad) == ["MG401"]
    assert hashlib.sha1(data).hexdigest() in bad.findings[0].message
    with pytest.raises(UsageError, match="hex digits"):
        modelguard.verify(path, sha256="abc")
    with pytest.raises(UsageError, match="single file"):
        modelguard.verify(project / "model", sha256="0" * 64)


def test_verify_without_lock_is_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="lock file not found"):
        modelguard.verify("model")


def test_lock_file_format_round_trip_and_validation(tmp_path: Path) -> None:
    lock = LockFile(
        (
            LockEntry(
                "b.bin", 3, sha256="a" * 64, source='https://x/"q"', revision="r", scan="clean"
            ),
            LockEntry("a.bin", 1, sha1="b" * 40),
        )
    )
    path = tmp_path / "modelguard.lock"
    write_lock(path, lock)
    text = path.read_text()
    assert text.index('path = "a.bin"') < text.index('path = "b.bin"')
    assert read_lock(path).by_path() == lock.by_path()
    assert render_lock(read_lock(path)) == text
    for bad, message in [
        ("version = 2\n", "unsupported lock version"),
        ('version = 1\n[[artifact]]\npath = "../x"\nsize = 1\n', "stay inside"),
        ('version = 1\n[[artifact]]\npath = "x"\nsize = -1\n', "non-negative"),
        ('version = 1\n[[artifact]]\npath = "x"\nsize = 1\nsha256 = "zz"\n', "64 hex"),
        ('version = 1\n[[artifact]]\npath = "x"\nsize = 1\ncolour = "red"\n', "unknown key"),
        ("version = [\n", "invalid TOML"),
    ]:
        path.write_text(bad)
        with pytest.raises(UsageError, match=message):
            read_lock(path)


# ---- CLI -------------------------------------------------------------------------------------


def test_cli_lock_then_verify_exit_codes(project: Path) -> None:
    runner = CliRunner()
    locked = runner.invoke(cli, ["lock", "model"])
    assert locked.exit_code == 0, locked.output
    assert "locked 3 file(s)" in locked.output
    assert runner.invoke(cli, ["verify", "model"]).exit_code == 0
    (project / "model" / "extra.bin").write_bytes(b"x")
    result = runner.invoke(cli, ["verify", "model", "--format", "json"])
    assert result.exit_code == 1
    found = [f["rule_id"] for a in json.loads(result.stdout)["artifacts"] for f in a["findings"]]
    assert "MG403" in found


def test_cli_verify_sarif(project: Path) -> None:
    CliRunner().invoke(cli, ["lock", "model"])
    (project / "model" / "weights.bin").write_bytes(b"tampered")
    result = CliRunner().invoke(cli, ["verify", "model", "--format", "sarif"])
    assert result.exit_code == 1
    sarif = json.loads(result.stdout)
    rules = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert "MG404" in rules


def test_cli_verify_sha256_mismatch_message(project: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", "model/weights.bin", "--sha256", "0" * 64])
    assert result.exit_code == 1
    assert "sha256 mismatch: expected " + "0" * 64 in result.output


def test_cli_verify_missing_lock_exits_2(project: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", "model"])
    assert result.exit_code == 2
    assert "lock file not found" in result.output


def test_cli_verify_missing_path_exits_2(project: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", "nope", "--sha256", "0" * 64])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_cli_lock_missing_path_exits_2_and_writes_nothing(project: Path) -> None:
    result = CliRunner().invoke(cli, ["lock", "model", "nope.bin"])
    assert result.exit_code == 2
    assert "nope.bin" in result.output
    assert not (project / "modelguard.lock").exists()


def test_lock_outside_lock_folder_is_usage_error(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "w.bin"
    elsewhere.write_bytes(b"x")
    with pytest.raises(UsageError, match="outside the lock file's folder"):
        modelguard.lock([elsewhere])


def test_lock_refuses_a_name_that_is_not_utf8_and_verify_reports_it(project: Path) -> None:
    """A TOML lock cannot hold it: lock says so and writes nothing; verify still works."""
    import os

    odd = os.fsdecode(b"model/m\xff.pkl")
    Path(odd).write_bytes(b"\x80\x04K\x01.")
    result = CliRunner().invoke(cli, ["lock", "model"])
    assert result.exit_code == 2
    assert "not valid UTF-8" in result.output and "m\\xff.pkl" in result.output
    assert not (project / "modelguard.lock").exists()
    os.rename(odd, "model/later.pkl")
    assert CliRunner().invoke(cli, ["lock", "model"]).exit_code == 0
    os.rename("model/later.pkl", odd)
    report = modelguard.verify("model")
    assert "MG403" in rule_ids(report)  # present but not locked, named in the report
    assert any("m\udcff.pkl" in f.location.path for f in report.findings)


def test_verify_and_scan_reports_merge_file_by_file_under_one_root(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From any working folder, verify(root=R) names files as scan(root=R) does."""
    modelguard.lock(["model"])
    (project / "model" / "weights.bin").write_bytes(EVIL_PICKLE)  # replaced after locking
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    lock = project / "modelguard.lock"
    verified = modelguard.verify(project / "model", lockfile=lock, root=project)
    scanned = modelguard.scan([project / "model"], root=project)
    merged = verified.merged(scanned)
    by_path = {a.path: {f.rule_id for f in a.findings} for a in merged.artifacts}
    assert {"MG404", "MG101"} <= by_path["model/weights.bin"], by_path
    assert verified.root == scanned.root == project.resolve().as_posix()


def test_symlink_added_to_locked_folder_is_reported(project: Path, tmp_path: Path) -> None:
    modelguard.lock(["model"])
    outside = tmp_path / "outside.py"
    outside.write_text("import os\n")
    (project / "model" / "hook.py").symlink_to(outside)
    (project / "model" / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    report = modelguard.verify("model")
    unexpected = sorted(f.location.path for f in report.findings if f.rule_id == "MG403")
    assert unexpected == ["model/hook.py", "model/linked_dir"]
    assert report.exit_code(modelguard.Severity.HIGH) == 1


def test_lock_refuses_symlinks_inside_folders(project: Path) -> None:
    (project / "model" / "alias.bin").symlink_to(project / "model" / "weights.bin")
    result = CliRunner().invoke(cli, ["lock", "model"])
    assert result.exit_code == 2
    assert "alias.bin" in result.output and "symbolic link" in result.output
    assert not (project / "modelguard.lock").exists()


def test_report_root_is_the_working_folder(project: Path) -> None:
    modelguard.lock(["model"])
    report = modelguard.verify("model")
    assert Path(report.root) == project.resolve() or Path(report.root) == project.absolute()
    assert {a.path for a in report.artifacts} == {
        "model/config.json",
        "model/sub/tokenizer.txt",
        "model/weights.bin",
    }


def test_cli_verify_json_matches_report_schema(project: Path) -> None:
    import jsonschema

    from modelguard.report.json import load_schema

    CliRunner().invoke(cli, ["lock", "model"])
    (project / "model" / "config.json").unlink()
    result = CliRunner().invoke(cli, ["verify", "model", "--format", "json", "-v"])
    assert result.exit_code == 1
    jsonschema.validate(json.loads(result.stdout), load_schema())

"""The ``modelguard scan`` and ``modelguard rules`` commands, end to end.

Most findings come from files no scanner recognises (MG001, info) so these
tests barely depend on the format scanners; exit-code mapping for every
severity uses a stubbed API; two tests use hand-written pickles end to end.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result

from modelguard.cli import cli
from modelguard.cli import output as cli_output
from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.report.json import load_schema
from modelguard.rules import all_rules

UNKNOWN_BYTES = b"\x00\x00not a model file\n"
SARIF_SCHEMA = Path(__file__).resolve().parent / "data" / "sarif-schema-2.1.0.json"
# GLOBAL os.system, MARK, STRING, TUPLE, REDUCE, STOP: what a malicious pickle does.
EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
# Calls a class that is neither known-safe nor known-dangerous.
CUSTOM_PICKLE = b"cmypkg.nets\nMyNet\n)R."


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with one unrecognised file, used as the working folder."""
    (tmp_path / "blob.bin").write_bytes(UNKNOWN_BYTES)
    monkeypatch.chdir(tmp_path)
    # keep any scan cache out of the user's home folder
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path.parent / f"{tmp_path.name}-cache"))
    return tmp_path


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


def _json(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _stub_api(monkeypatch: pytest.MonkeyPatch, *severities: Severity) -> None:
    findings = tuple(
        Finding("MG101", sev, f"finding {i}", Location("m.pt"), evidence=str(i))
        for i, sev in enumerate(severities)
    )
    report = Report(artifacts=(ArtifactResult("m.pt", "pickle", 9, findings),), root="/r")
    monkeypatch.setattr("modelguard.api.scan", lambda *a, **k: report)


# -- exit codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severities", "fail_on", "expected"),
    [
        ((), None, 0),
        ((Severity.MEDIUM,), None, 0),  # default threshold is high
        ((Severity.HIGH,), None, 1),
        ((Severity.CRITICAL, Severity.LOW), None, 1),
        ((Severity.HIGH,), "critical", 0),
        ((Severity.LOW,), "low", 1),
        ((Severity.CRITICAL,), "never", 0),
        ((Severity.CRITICAL,), "NEVER", 0),
    ],
)
def test_exit_code_follows_fail_on(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    severities: tuple[Severity, ...],
    fail_on: str | None,
    expected: int,
) -> None:
    _stub_api(monkeypatch, *severities)
    args = ["scan", "m.pt"] + (["--fail-on", fail_on] if fail_on else [])
    result = invoke(*args)
    assert result.exit_code == expected, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_unrecognised_file_is_info_and_passes_by_default(project: Path) -> None:
    result = invoke("scan", "blob.bin")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    assert invoke("scan", "blob.bin", "--fail-on", "info").exit_code == 1
    assert invoke("scan", "blob.bin", "--fail-on", "never").exit_code == 0


def test_unknown_fail_on_value_is_a_usage_error(project: Path) -> None:
    result = invoke("scan", "blob.bin", "--fail-on", "severe")
    assert result.exit_code == 2
    assert "severe" in result.stderr


def test_missing_path_exits_2_naming_the_file(project: Path) -> None:
    result = invoke("scan", "blob.bin", "no-such-model.pt")
    assert result.exit_code == 2
    assert "no-such-model.pt" in result.stderr
    assert "no such file or directory" in result.stderr
    assert "Traceback" not in result.output


def test_missing_path_in_a_real_process_has_no_traceback(project: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "modelguard", "scan", "ghost.safetensors"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert "ghost.safetensors" in completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout


# -- report formats and atomic output ---------------------------------------------------


def test_json_output_file_is_schema_valid(project: Path) -> None:
    result = invoke("scan", ".", "--format", "json", "--output", "report.json")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    data = json.loads((project / "report.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(load_schema()).validate(data)
    [artifact] = data["artifacts"]
    assert artifact["path"] == "blob.bin" and artifact["format"] == "unknown"
    assert [f["rule_id"] for f in artifact["findings"]] == ["MG001"]
    assert data["root"] == Path(os.path.abspath(project)).as_posix()


def test_sarif_output_file_is_valid_and_relative(project: Path) -> None:
    (project / "models").mkdir()
    (project / "models" / "weird name.bin").write_bytes(UNKNOWN_BYTES)
    result = invoke("scan", "models", "--format", "sarif", "-o", "out.sarif")
    assert result.exit_code == 0, result.output
    log = json.loads((project / "out.sarif").read_text(encoding="utf-8"))
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))).validate(log)
    [res] = log["runs"][0]["results"]
    artifact = res["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact == {"uri": "models/weird%20name.bin", "uriBaseId": "%SRCROOT%"}
    assert str(project) not in json.dumps(log["runs"][0]["results"])


def test_output_dash_means_stdout(project: Path) -> None:
    result = invoke("scan", "blob.bin", "--format", "json", "--output", "-")
    assert result.exit_code == 0
    assert _json(result)["schema"] == "modelguard-report"
    assert not (project / "-").exists()


def test_new_output_file_gets_normal_permissions(project: Path) -> None:
    old = os.umask(0o022)
    try:
        assert invoke("scan", "blob.bin", "--format", "json", "-o", "r.json").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((project / "r.json").stat().st_mode) == 0o644
    (project / "r.json").chmod(0o640)
    assert invoke("scan", "blob.bin", "--format", "json", "-o", "r.json").exit_code == 0
    assert stat.S_IMODE((project / "r.json").stat().st_mode) == 0o640


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_failed_run_does_not_clobber_existing_output(project: Path) -> None:
    existing = project / "report.json"
    existing.write_text("previous report\n", encoding="utf-8")
    (project / "bad.toml").write_text("fail-on = [", encoding="utf-8")
    result = invoke(
        "scan", "blob.bin", "--config", "bad.toml", "--format", "json", "-o", "report.json"
    )
    assert result.exit_code == 2
    assert existing.read_text(encoding="utf-8") == "previous report\n"
    assert _leftovers(project) == []


def test_failed_write_leaves_old_file_and_no_temporary(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = project / "report.sarif"
    existing.write_text("previous report\n", encoding="utf-8")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_output.os, "replace", broken_replace)
    result = invoke("scan", "blob.bin", "--format", "sarif", "-o", "report.sarif")
    assert result.exit_code == 2
    assert "report.sarif" in result.stderr and "No space left on device" in result.stderr
    assert existing.read_text(encoding="utf-8") == "previous report\n"
    assert _leftovers(project) == []


def test_renderer_crash_writes_nothing(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = project / "report.json"
    existing.write_text("previous report\n", encoding="utf-8")

    def broken_render(*args: object, **kwargs: object) -> str:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(cli_output, "render", broken_render)
    result = invoke("scan", "blob.bin", "--format", "json", "-o", "report.json")
    assert result.exit_code != 0
    assert existing.read_text(encoding="utf-8") == "previous report\n"
    assert _leftovers(project) == []


def test_output_into_missing_folder_is_exit_2(project: Path) -> None:
    result = invoke("scan", "blob.bin", "--format", "json", "-o", "nowhere/report.json")
    assert result.exit_code == 2
    assert "nowhere" in result.stderr


def test_report_is_still_written_when_some_input_is_unreadable(project: Path) -> None:
    result = invoke("scan", "blob.bin", "gone.pt", "--format", "json", "-o", "r.json")
    assert result.exit_code == 2
    data = json.loads((project / "r.json").read_text(encoding="utf-8"))
    assert data["errors"] == [{"path": "gone.pt", "message": "no such file or directory"}]
    assert data["verdict"] == "error"


def test_colour_is_off_for_pipes_and_forced_by_flag(project: Path) -> None:
    assert "\x1b[" not in invoke("scan", "blob.bin", "-v").stdout
    assert "\x1b[" in invoke("scan", "blob.bin", "-v", "--color").stdout
    assert "\x1b[" not in invoke("scan", "blob.bin", "--color", "--format", "json").stdout


def test_verbose_shows_info_findings(project: Path) -> None:
    assert "MG001" not in invoke("scan", "blob.bin").stdout
    assert "MG001 unsupported-format" in invoke("scan", "blob.bin", "--verbose").stdout


def test_root_option_sets_what_paths_are_relative_to(project: Path) -> None:
    (project / "models").mkdir()
    (project / "models" / "m.bin").write_bytes(UNKNOWN_BYTES)
    result = invoke("scan", "models", "--root", "models", "--format", "sarif")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)["runs"][0]
    [res] = run["results"]
    assert res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "m.bin"
    root_uri = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert root_uri == (project / "models").resolve().as_uri() + "/"


def test_no_paths_is_a_usage_error() -> None:
    result = invoke("scan")
    assert result.exit_code == 2
    assert "PATHS" in result.stderr


# -- reading paths from stdin -----------------------------------------------------------


def test_dash_reads_paths_from_stdin(project: Path) -> None:
    (project / "second.bin").write_bytes(UNKNOWN_BYTES)
    result = invoke("scan", "-", "--format", "json", stdin="blob.bin\n\n  second.bin  \n")
    assert result.exit_code == 0, result.output
    assert [a["path"] for a in _json(result)["artifacts"]] == ["blob.bin", "second.bin"]


def test_dash_with_missing_path_from_stdin(project: Path) -> None:
    result = invoke("scan", "-", stdin="blob.bin\nmissing.pt\n")
    assert result.exit_code == 2
    assert "missing.pt" in result.stderr


def test_empty_stdin_is_nothing_to_scan(project: Path) -> None:
    # `git ls-files '*.pt' | modelguard scan -` in a repository without models.
    result = invoke("scan", "-", "--format", "sarif", "-o", "out.sarif", stdin="\n\n")
    assert result.exit_code == 0, result.output
    assert "nothing to scan" in result.stderr
    sarif = json.loads((project / "out.sarif").read_text())
    jsonschema.validate(sarif, json.loads(SARIF_SCHEMA.read_text()))
    assert sarif["runs"][0]["results"] == []


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[tool.modelguard\nfail-on = 'low'\n", ["invalid TOML"]),
        ("[tool.modelguard]\ncolour = 'red'\n", ["unknown key", "'colour'"]),
        (
            "[tool.modelguard]\n[[tool.modelguard.ignore]]\nrule = 'MG001'\n",
            ["ignore[0]", "MG001", "reason"],
        ),
        (
            "[tool.modelguard]\n[[tool.modelguard.ignore]]\nrule = 'MG001'\nreason = '  '\n",
            ["ignore[0]", "reason"],
        ),
        ("[tool.modelguard]\nfail-on = 'severe'\n", ["fail-on", "severe"]),
        ("[tool.modelguard]\nallow-globals = ['os']\n", ["allow-globals", "'os'"]),
        ("[tool.modelguard.limits]\nmax-pickle-opcodes = -1\n", ["max-pickle-opcodes"]),
    ],
)
def test_bad_config_exits_2_naming_file_and_key(
    project: Path, content: str, expected: list[str]
) -> None:
    config = project / "policy.toml"
    config.write_text(content, encoding="utf-8")
    result = invoke("scan", "blob.bin", "--config", "policy.toml")
    assert result.exit_code == 2, result.output
    assert "policy.toml" in result.stderr
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.output


def test_missing_config_file_exits_2(project: Path) -> None:
    result = invoke("scan", "blob.bin", "--config", "absent.toml")
    assert result.exit_code == 2
    assert "absent.toml" in result.stderr


def test_bad_pyproject_is_found_and_reported(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.modelguard]\nfail_on = 'low'\n", "utf-8")
    result = invoke("scan", "blob.bin")
    assert result.exit_code == 2
    assert "pyproject.toml" in result.stderr and "'fail_on'" in result.stderr


def test_pyproject_fail_on_and_cli_override(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.modelguard]\nfail-on = 'info'\n", "utf-8")
    assert invoke("scan", "blob.bin").exit_code == 1
    assert invoke("scan", "blob.bin", "--fail-on", "high").exit_code == 0
    data = _json(invoke("scan", "blob.bin", "--format", "json"))
    assert data["fail_on"] == "info" and data["verdict"] == "fail"


def test_pyproject_ignore_with_reason_shows_as_suppressed(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        "[tool.modelguard]\n"
        "fail-on = 'info'\n"
        "[[tool.modelguard.ignore]]\n"
        "rule = 'MG001'\n"
        "paths = ['blob.*']\n"
        "reason = 'test data, not a model'\n",
        "utf-8",
    )
    (project / "other.bin").write_bytes(UNKNOWN_BYTES)
    result = invoke("scan", "blob.bin", "--format", "json")
    assert result.exit_code == 0, result.output
    [artifact] = _json(result)["artifacts"]
    assert artifact["findings"] == []
    [suppressed] = artifact["suppressed"]
    assert suppressed["rule_id"] == "MG001" and suppressed["reason"] == "test data, not a model"
    # the ignore is limited to its paths
    assert invoke("scan", "other.bin").exit_code == 1
    text = invoke("scan", "blob.bin", "-v").stdout
    assert "MG001 unsupported-format [suppressed]" in text
    assert "reason: test data, not a model" in text
    assert "1 suppressed" in invoke("scan", "blob.bin").stdout


def test_pyproject_exclude_skips_files_and_folders(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        "[tool.modelguard]\nexclude = ['third_party/*', '*.tmp']\n", "utf-8"
    )
    (project / "third_party" / "deep").mkdir(parents=True)
    (project / "third_party" / "deep" / "x.bin").write_bytes(UNKNOWN_BYTES)
    (project / "scratch.tmp").write_bytes(UNKNOWN_BYTES)
    data = _json(invoke("scan", ".", "--format", "json", "--config", "pyproject.toml"))
    assert [a["path"] for a in data["artifacts"]] == ["blob.bin"]
    # not excluded, but not a model either: no result, only a reason
    assert [s["path"] for s in data["skipped"]] == ["pyproject.toml"]
    # Discovered inside the scanned tree, the same file is not used (and says so).
    data = _json(invoke("scan", ".", "--format", "json"))
    assert "third_party/deep/x.bin" in [a["path"] for a in data["artifacts"]]
    (ignored,) = [a for a in data["artifacts"] if a["path"] == "pyproject.toml"]
    assert "MG412" in [f["rule_id"] for f in ignored["findings"]]


def test_config_file_with_top_level_keys(project: Path) -> None:
    (project / "modelguard.toml").write_text("fail-on = 'info'\n", "utf-8")
    assert invoke("scan", "blob.bin", "--config", "modelguard.toml").exit_code == 1


def test_malicious_pickle_fails_the_run(project: Path) -> None:
    (project / "evil.pkl").write_bytes(EVIL_PICKLE)
    result = invoke("scan", "evil.pkl", "--format", "json")
    assert result.exit_code == 1, result.output
    rules = {f["rule_id"] for a in _json(result)["artifacts"] for f in a["findings"]}
    assert "MG101" in rules and "MG004" not in rules


def test_pyproject_allow_globals_accepts_a_named_class(project: Path) -> None:
    (project / "net.pkl").write_bytes(CUSTOM_PICKLE)

    def mentions_mypkg() -> bool:
        data = _json(invoke("scan", "net.pkl", "--format", "json", "--fail-on", "never"))
        findings = [f for a in data["artifacts"] for f in a["findings"]]
        assert all(f["rule_id"] != "MG004" for f in findings)
        return any("mypkg" in (f["evidence"] or "") for f in findings)

    assert mentions_mypkg()
    (project / "pyproject.toml").write_text(
        "[tool.modelguard]\nallow-globals = ['mypkg.nets.MyNet']\n", "utf-8"
    )
    assert not mentions_mypkg()


# -- rules command ----------------------------------------------------------------------


def test_rules_text_lists_every_rule() -> None:
    result = invoke("rules")
    assert result.exit_code == 0
    for rule in all_rules():
        assert f"{rule.id}  {rule.severity.label:<8} {rule.name}" in result.stdout
        assert f"fix: {rule.fix}" in result.stdout


def test_rules_json_is_the_catalogue() -> None:
    result = invoke("rules", "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [r["id"] for r in data] == [r.id for r in all_rules()]
    first = data[0]
    assert set(first) == {
        "id",
        "name",
        "severity",
        "summary",
        "description",
        "fix",
        "tags",
        "help_uri",
    }
    assert first["help_uri"].endswith("#mg001-unsupported-format")


def test_version_option() -> None:
    from modelguard import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


# -- what is a model -------------------------------------------------------------------


def test_files_that_are_not_models_give_no_result_only_a_reason(project: Path) -> None:
    (project / "README.md").write_text("# a project\n", "utf-8")
    (project / "train.py").write_text("import torch\n", "utf-8")
    (project / "empty.txt").write_bytes(b"")
    (project / "weights.pt").write_bytes(UNKNOWN_BYTES)  # named like a model: a finding
    data = _json(invoke("scan", ".", "--format", "json"))
    assert sorted(a["path"] for a in data["artifacts"]) == ["blob.bin", "weights.pt"]
    assert {a["path"]: [f["rule_id"] for f in a["findings"]] for a in data["artifacts"]} == {
        "blob.bin": ["MG001"],
        "weights.pt": ["MG005", "MG001"],  # named as a checkpoint, and is none (MG005)
    }
    skipped = {s["path"]: s["reason"] for s in data["skipped"]}
    assert set(skipped) == {"README.md", "train.py", "empty.txt"}
    assert skipped["empty.txt"] == "empty file"
    assert data["summary"]["skipped"] == 3

    quiet = invoke("scan", ".")
    assert "README.md" not in quiet.stdout
    assert "3 not model files skipped" in quiet.stdout
    loud = invoke("scan", ".", "-v")
    assert "README.md: not a model file" in loud.stdout


def test_sarif_has_no_result_for_files_that_are_not_models(project: Path) -> None:
    (project / "blob.bin").unlink()
    for i in range(50):
        (project / f"module{i}.py").write_text("x = 1\n", "utf-8")
    result = invoke("scan", ".", "--format", "sarif")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["runs"][0]["results"] == []


def test_pre_commit_hook_selects_exactly_the_model_suffixes() -> None:
    import re

    from modelguard.scan.model_names import MODEL_SUFFIXES

    hooks = (Path(__file__).resolve().parents[1] / ".pre-commit-hooks.yaml").read_text("utf-8")
    pattern = re.search(r"files: \(\?i\)\\\.\(([a-z0-9|]+)\)\$", hooks)
    assert pattern is not None
    assert set(pattern.group(1).split("|")) == MODEL_SUFFIXES

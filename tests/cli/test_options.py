"""The shared options: declared once, the same on every command, env > config > default."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from modelguard.cli import cli
from modelguard.cli.options import FAIL_ON_CHOICES, REPORT_FORMATS
from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.report.interface import RENDERERS

REPORT_COMMANDS = ("scan", "fetch", "lock", "verify", "backdoor")
TERMINAL_OPTIONS = {"color", "verbose", "progress"}
REPORT_OPTIONS = {"fmt", "report_output", "fail_on", "config"} | TERMINAL_OPTIONS


def _options(command: str) -> dict[str, click.Option]:
    params = cli.commands[command].params
    return {p.name: p for p in params if isinstance(p, click.Option) and p.name}


def _shape(option: click.Option) -> tuple[object, ...]:
    choices = option.type.choices if isinstance(option.type, click.Choice) else None
    return (tuple(option.opts), tuple(option.secondary_opts), option.envvar, choices)


def test_every_report_command_has_the_same_report_options() -> None:
    reference = {name: _shape(o) for name, o in _options("scan").items() if name in REPORT_OPTIONS}
    assert set(reference) == REPORT_OPTIONS
    for command in REPORT_COMMANDS:
        options = _options(command)
        assert {n: _shape(o) for n, o in options.items() if n in REPORT_OPTIONS} == reference
    assert reference["fmt"][0] == ("-f", "--format")
    assert reference["fmt"][3] == REPORT_FORMATS == tuple(RENDERERS)
    assert reference["fail_on"][3] == FAIL_ON_CHOICES
    assert reference["report_output"][0] == ("-o", "--output")


def test_sign_takes_the_terminal_options_and_names_its_bundle_with_o() -> None:
    options = _options("sign")
    scan = _options("scan")
    assert {n: _shape(options[n]) for n in TERMINAL_OPTIONS} == {
        n: _shape(scan[n]) for n in TERMINAL_OPTIONS
    }
    assert options["output"].opts == ["-o", "--output"]


def _stub_scan(monkeypatch: pytest.MonkeyPatch, severity: Severity) -> None:
    finding = Finding("MG101", severity, "x", Location("m.pt"), evidence="e")
    report = Report(artifacts=(ArtifactResult("m.pt", "pickle", 1, (finding,)),), root="/r")
    monkeypatch.setattr("modelguard.api.scan", lambda *a, **k: report)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def test_precedence_flag_then_env_then_config_then_default(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub_scan(monkeypatch, Severity.MEDIUM)
    assert _run("scan", "m.pt").exit_code == 0  # default: high
    (workdir / "pyproject.toml").write_text("[tool.modelguard]\nfail-on = 'medium'\n")
    assert _run("scan", "m.pt").exit_code == 1  # config
    env = {"MODELGUARD_FAIL_ON": "critical"}
    assert _run("scan", "m.pt", env=env).exit_code == 0  # env beats config
    assert _run("scan", "m.pt", "--fail-on", "low", env=env).exit_code == 1  # flag beats env


def test_format_and_verbose_from_the_environment(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub_scan(monkeypatch, Severity.INFO)
    result = _run("scan", "m.pt", env={"MODELGUARD_FORMAT": "json"})
    assert json.loads(result.stdout)["summary"]["findings"] == 1
    quiet = _run("scan", "m.pt")
    loud = _run("scan", "m.pt", env={"MODELGUARD_VERBOSE": "1"})
    assert "MG101" not in quiet.stdout
    assert "MG101" in loud.stdout


def test_bad_environment_value_is_a_usage_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub_scan(monkeypatch, Severity.INFO)
    result = _run("scan", "m.pt", env={"MODELGUARD_FAIL_ON": "severe"})
    assert result.exit_code == 2
    assert "severe" in result.stderr


@pytest.mark.parametrize(
    ("env", "flag", "coloured"),
    [
        ({}, None, False),  # CliRunner's stdout is no terminal
        ({"FORCE_COLOR": "1"}, None, True),
        ({"NO_COLOR": "1"}, "--color", True),  # the flag wins
        ({"FORCE_COLOR": "1"}, "--no-color", False),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, None, False),
        ({"NO_COLOR": ""}, None, False),  # empty means unset
        ({"MODELGUARD_COLOR": "1", "NO_COLOR": "1"}, None, True),
    ],
)
def test_colour_follows_flag_env_no_color_force_color(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    flag: str | None,
    coloured: bool,
) -> None:
    _stub_scan(monkeypatch, Severity.HIGH)
    result = _run("scan", "m.pt", *([flag] if flag else []), env=env)
    assert ("\x1b[" in result.stdout) is coloured


@pytest.mark.parametrize("command", [["scan", "m.pt"], ["verify", "."], ["lock", "m.pt"]])
def test_missing_bom_extra_is_one_line_exit_2_before_any_work(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    (workdir / "m.pt").write_bytes(b"\x80\x04K\x01.")
    monkeypatch.setitem(__import__("sys").modules, "cyclonedx", None)
    monkeypatch.setattr("modelguard.api.scan", lambda *a, **k: pytest.fail("scanned"))
    result = _run(*command, "--format", "cyclonedx", "-o", "bom.json")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "modelguard: error: CycloneDX output needs the 'cyclonedx' package: "
        "pip install 'modelguard[bom]'"
    ]
    assert not (workdir / "bom.json").exists()
    assert not (workdir / "modelguard.lock").exists()


def test_no_progress_silences_huggingface_hub_bars(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def fake_fetch(*args: object, **kwargs: object) -> object:
        from huggingface_hub.utils import are_progress_bars_disabled

        seen["env"] = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
        seen["hub"] = are_progress_bars_disabled()
        raise __import__("modelguard.errors").errors.FetchError("stop here")

    monkeypatch.setattr("modelguard.supply.fetch.fetch", fake_fetch)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    result = _run("fetch", "hf://o/r", "--no-progress")
    assert result.exit_code == 2
    assert seen == {"env": "1", "hub": True}

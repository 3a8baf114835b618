"""The composite GitHub Action, run locally step by step.

GitHub is not reachable here, so a small runner plays the composite: it reads
action.yml, evaluates the ``${{ }}`` expressions the steps use, runs each
``run:`` step with bash and its own GITHUB_OUTPUT file, and records (but skips)
the ``uses:`` steps, whose wiring is checked separately.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((REPO / "action.yml").read_text())
# The modelguard under test, as the action's private venv would hold it.
MODELGUARD = str(Path(sys.executable).parent / "modelguard")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w.-]+)*@[0-9a-f]{40}$")
EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


@dataclass
class StepRun:
    name: str
    returncode: int
    output: str
    outputs: dict[str, str]


@dataclass
class ActionRun:
    steps: list[StepRun] = field(default_factory=list)
    skipped_uses: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def failed(self) -> bool:
        return any(step.returncode != 0 for step in self.steps)

    def step(self, name: str) -> StepRun:
        (found,) = [s for s in self.steps if s.name == name]
        return found


def _read_outputs(path: Path) -> dict[str, str]:
    outputs: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        assert sep, f"GITHUB_OUTPUT line without '=': {line!r}"
        outputs[key] = value
    return outputs


def run_action(workspace: Path, tmp: Path, **inputs: str) -> ActionRun:
    """Run the composite's run-steps in ``workspace`` with these inputs."""
    declared: dict[str, Any] = ACTION["inputs"]
    unknown = set(inputs) - {k.replace("-", "_") for k in declared}
    assert not unknown, f"not inputs of the action: {unknown}"
    values = {
        name: inputs.get(name.replace("-", "_"), str(spec.get("default", "")))
        for name, spec in declared.items()
    }
    step_outputs: dict[str, dict[str, str]] = {}
    runner_temp = tmp / "runner-temp"
    runner_temp.mkdir(parents=True, exist_ok=True)
    summary = tmp / "summary.md"
    summary.write_text("")
    result = ActionRun()

    def evaluate(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("inputs."):
                return values[expr.removeprefix("inputs.")]
            if expr == "github.action_path":
                return str(REPO)
            if expr == "runner.temp":
                return str(runner_temp)
            if expr == "steps.python.outputs.python-path":
                return sys.executable
            steps = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr)
            if steps:
                return step_outputs.get(steps.group(1), {}).get(steps.group(2), "")
            raise AssertionError(f"the test runner does not know the expression {expr!r}")

        return EXPRESSION.sub(one, text)

    for index, step in enumerate(ACTION["runs"]["steps"]):
        if "uses" in step:
            result.skipped_uses.append(step["uses"])
            continue
        if step.get("id") == "install":
            # pip-installing the repo needs the package index (the pre-commit test
            # does that); this runner stands in with the modelguard under test.
            step_outputs["install"] = {"modelguard": MODELGUARD, "python": sys.executable}
            continue
        assert "if" not in step, "run steps must always run (the script decides)"
        output_file = tmp / f"output-{index}"
        output_file.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("INPUT_")}
        env.update({k: evaluate(str(v)) for k, v in step.get("env", {}).items()})
        env.update(
            GITHUB_OUTPUT=str(output_file),
            GITHUB_STEP_SUMMARY=str(summary),
            MODELGUARD_CACHE_DIR=str(tmp / "cache"),
        )
        assert step["shell"] == "bash"
        # GitHub runs `shell: bash` as `bash --noprofile --norc -eo pipefail {0}`.
        script = tmp / f"step-{index}.sh"
        script.write_text(evaluate(step["run"]))
        completed = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        outputs = _read_outputs(output_file)
        if "id" in step:
            step_outputs[step["id"]] = outputs
        result.steps.append(
            StepRun(
                step["name"], completed.returncode, completed.stdout + completed.stderr, outputs
            )
        )
        if completed.returncode != 0:
            break  # later steps without `if: always()` would not run on GitHub either
    result.summary = summary.read_text()
    return result


@pytest.fixture
def workspace(models: SimpleNamespace, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    models.write(root / "models" / "weights.pkl", models.benign_pickle())
    models.write(root / "models" / "checkpoint.pt", models.torch_like_zip(models.benign_pickle()))
    return root


def sarif_results(path: str) -> list[dict[str, Any]]:
    log = json.loads(Path(path).read_text())
    assert log["version"] == "2.1.0"
    return [r for run in log["runs"] for r in run["results"]]


# -- wiring -----------------------------------------------------------------------


def test_action_is_composite_with_setup_python_and_sarif_upload() -> None:
    assert ACTION["runs"]["using"] == "composite"
    uses = [s["uses"] for s in ACTION["runs"]["steps"] if "uses" in s]
    assert uses[0].startswith("actions/setup-python@")
    uploads = [s for s in ACTION["runs"]["steps"] if "upload-sarif" in s.get("uses", "")]
    assert uploads and all(
        s["uses"].startswith("github/codeql-action/upload-sarif@") for s in uploads
    )
    # Uploads run even when findings were found (the last step fails the job).
    assert all("!cancelled()" in s["if"] for s in uploads)
    assert {s["with"]["category"] for s in uploads} == {
        "${{ inputs.category }}-scan",
        "${{ inputs.category }}-verify",
    }
    assert ACTION["inputs"]["category"]["default"] == "modelguard"
    assert set(ACTION["inputs"]) >= {"paths", "fail-on", "config", "lock-file", "extra-args"}


def test_sub_actions_are_pinned_by_commit() -> None:
    uses = [s["uses"] for s in ACTION["runs"]["steps"] if "uses" in s]
    assert uses and all(PINNED.match(u) for u in uses), uses


def test_the_callers_python_is_left_alone() -> None:
    """setup-python must not touch PATH; modelguard lives in a private venv."""
    (python,) = [s for s in ACTION["runs"]["steps"] if s.get("id") == "python"]
    assert python["with"]["update-environment"] is False
    for step in ACTION["runs"]["steps"]:
        text = step.get("run", "") + "".join(str(v) for v in step.get("env", {}).values())
        assert "GITHUB_PATH" not in text and "GITHUB_ENV" not in text
    install_script = (REPO / ".github/actions/modelguard/install.sh").read_text()
    assert "GITHUB_PATH" not in install_script and "GITHUB_ENV" not in install_script


def test_install_pins_modelguard_to_the_actions_own_checkout(tmp_path: Path) -> None:
    """The install script makes a venv and installs the action's own checkout into it."""
    (install,) = [s for s in ACTION["runs"]["steps"] if s.get("id") == "install"]
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert install["env"]["VENV"] == "${{ runner.temp }}/modelguard-venv"
    # Run it with a stand-in python whose pip records what it was asked to install.
    fake_bin = tmp_path / "venv" / "bin"
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$1 $2" == "-m venv" ]]; then mkdir -p "$3/bin"; '
        'cp "$0" "$3/bin/python"; exit 0; fi\n'
        'echo "$@" >> "$(dirname "$0")/../../pip.log"\n'
    )
    fake_python.chmod(0o755)
    outputs = tmp_path / "outputs"
    subprocess.run(
        ["bash", str(REPO / ".github/actions/modelguard/install.sh")],
        env={
            **os.environ,
            "SETUP_PYTHON": str(fake_python),
            "ACTION_PATH": "/the/action",
            "VENV": str(tmp_path / "venv"),
            "GITHUB_OUTPUT": str(outputs),
        },
        check=True,
    )
    assert (tmp_path / "pip.log").read_text().split() == [
        "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "/the/action[supply]",
    ]  # fmt: skip
    assert _read_outputs(outputs) == {
        "modelguard": f"{fake_bin}/modelguard",
        "python": f"{fake_bin}/python",
    }


def test_inputs_never_spliced_into_scripts() -> None:
    """Inputs go through env: a path like `$(rm -rf ~)` cannot become shell code."""
    for step in ACTION["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step["name"]


# -- behaviour --------------------------------------------------------------------


def test_clean_models_pass_and_write_sarif_and_summary(workspace: Path, tmp_path: Path) -> None:
    run = run_action(workspace, tmp_path, paths="models")
    assert not run.failed, [s.output for s in run.steps]
    scan = run.step("Scan").outputs
    assert scan["exit-code"] == "0"
    assert scan["verify-sarif"] == ""
    assert sarif_results(scan["scan-sarif"]) == []
    assert "## modelguard" in run.summary and "**Scan** passed" in run.summary
    assert "2 files scanned" in run.summary
    assert run.skipped_uses[0].startswith("actions/setup-python@")
    assert "2 files scanned" in run.summary


def test_malicious_model_fails_the_job_after_writing_sarif(
    models: SimpleNamespace, workspace: Path, tmp_path: Path
) -> None:
    models.write(workspace / "models" / "evil.pt", models.torch_like_zip(models.malicious_pickle()))
    run = run_action(workspace, tmp_path, paths="models", fail_on="high")
    scan = run.step("Scan")
    assert scan.returncode == 0  # so the SARIF upload still happens
    assert scan.outputs["exit-code"] == "1"
    results = sarif_results(scan.outputs["scan-sarif"])
    assert {r["ruleId"] for r in results} == {"MG101"}
    uri = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.startswith("models/evil.pt")
    enforce = run.step("Enforce fail-on")
    assert enforce.returncode == 1
    assert "::error title=modelguard::findings at or above fail-on" in enforce.output
    assert "failed: findings" in run.summary and "models/evil.pt" in run.summary


def test_fail_on_never_reports_without_failing(
    models: SimpleNamespace, workspace: Path, tmp_path: Path
) -> None:
    models.write(workspace / "models" / "evil.pt", models.torch_like_zip(models.malicious_pickle()))
    run = run_action(workspace, tmp_path, paths="models", fail_on="never")
    assert not run.failed
    assert len(sarif_results(run.step("Scan").outputs["scan-sarif"])) == 1


def test_fail_on_critical_vs_config(
    models: SimpleNamespace, workspace: Path, tmp_path: Path
) -> None:
    """fail-on comes from the config file unless the input overrides it."""
    models.write(workspace / "models" / "evil.pt", models.torch_like_zip(models.malicious_pickle()))
    config = workspace / "policy.toml"
    config.write_text('fail-on = "never"\n')
    from_config = run_action(workspace, tmp_path / "a", paths="models", config="policy.toml")
    assert from_config.step("Scan").outputs["exit-code"] == "0"
    overridden = run_action(
        workspace, tmp_path / "b", paths="models", config="policy.toml", fail_on="critical"
    )
    assert overridden.step("Scan").outputs["exit-code"] == "1"


def test_the_repositorys_own_pyproject_applies_when_scanning_the_whole_workspace(
    models: SimpleNamespace, workspace: Path, tmp_path: Path
) -> None:
    """`modelguard scan .` ignores policy inside the tree; the action names it."""
    models.write(workspace / "models" / "evil.pt", models.torch_like_zip(models.malicious_pickle()))
    (workspace / "pyproject.toml").write_text('[tool.modelguard]\nfail-on = "never"\n')
    run = run_action(workspace, tmp_path, paths=".")
    scan = run.step("Scan").outputs
    assert scan["exit-code"] == "0"
    assert len(sarif_results(scan["scan-sarif"])) == 1
    assert "MG412" not in {r["ruleId"] for r in sarif_results(scan["scan-sarif"])}


def test_multiline_paths_with_spaces_and_quoted_extra_args(
    models: SimpleNamespace, workspace: Path, tmp_path: Path
) -> None:
    models.write(workspace / "odd dir" / "evil model.pkl", models.malicious_pickle())
    run = run_action(
        workspace,
        tmp_path,
        paths="models\n  odd dir/evil model.pkl  \n",
        extra_args="--workers 1 --root 'odd dir'",
    )
    results = sarif_results(run.step("Scan").outputs["scan-sarif"])
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert any(u.startswith("evil%20model.pkl") or u.startswith("evil model.pkl") for u in uris)
    assert run.step("Scan").outputs["exit-code"] == "1"


def test_unreadable_path_is_an_error(workspace: Path, tmp_path: Path) -> None:
    run = run_action(workspace, tmp_path, paths="models missing.pt")
    assert run.step("Scan").outputs["exit-code"] == "2"
    assert run.step("Enforce fail-on").returncode == 2
    assert "error" in run.summary


def test_unparsable_extra_args_fail_the_step(workspace: Path, tmp_path: Path) -> None:
    run = run_action(workspace, tmp_path, paths="models", extra_args="--root 'unclosed")
    assert run.step("Scan").returncode == 2
    assert "cannot parse extra-args" in run.step("Scan").output


def test_lock_file_is_verified(workspace: Path, tmp_path: Path) -> None:
    subprocess.run(
        ["modelguard", "lock", "models", "--lock", "models/modelguard.lock"],
        cwd=workspace,
        check=True,
        capture_output=True,
        env={**os.environ, "MODELGUARD_CACHE_DIR": str(tmp_path / "cache")},
    )
    intact = run_action(
        workspace, tmp_path / "a", paths="models", lock_file="models/modelguard.lock"
    )
    assert not intact.failed, [s.output for s in intact.steps]
    outputs = intact.step("Scan").outputs
    assert outputs["verify-exit-code"] == "0" and outputs["verify-sarif"]
    assert "**Verify**" in intact.summary

    # Same size, different bytes: the lock's digest no longer matches.
    weights = workspace / "models" / "weights.pkl"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0x01
    weights.write_bytes(bytes(data))
    tampered = run_action(
        workspace, tmp_path / "b", paths="models", lock_file="models/modelguard.lock"
    )
    outputs = tampered.step("Scan").outputs
    assert outputs["verify-exit-code"] != "0"
    assert outputs["exit-code"] != "0"
    assert sarif_results(outputs["verify-sarif"])
    assert tampered.step("Enforce fail-on").returncode != 0


# -- the README's workflow, on a real-looking repository -----------------------------------


def test_the_readme_workflow_step_on_a_repository(
    models: SimpleNamespace, repository: Path, tmp_path: Path
) -> None:
    """docs/examples/models.yml (the README's workflow) run with the action's scripts."""
    workflow = yaml.safe_load((REPO / "docs" / "examples" / "models.yml").read_text())
    [step] = [
        s
        for s in workflow["jobs"]["modelguard"]["steps"]
        if s["uses"].startswith("modelguard/modelguard@")
    ]
    inputs = {name.replace("-", "_"): str(value) for name, value in step["with"].items()}
    # What the example names: models/ (here) plus checkpoints/ and a lock file.
    models.write(
        repository / "checkpoints" / "step100.pt", models.torch_like_zip(b"\x80\x04K\x01.")
    )
    locked = subprocess.run(
        ["modelguard", "lock", "models", "--lock", inputs["lock_file"], "--no-progress"],
        cwd=repository,
        capture_output=True,
        env={**os.environ, "MODELGUARD_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert locked.returncode == 1 and (repository / inputs["lock_file"]).is_file()  # evil.pt
    run = run_action(repository, tmp_path, **inputs)
    scan = run.step("Scan").outputs
    assert scan["scan-exit-code"] == "1"  # models/evil.pt
    assert scan["verify-exit-code"] == "0"  # the lock matches
    results = sarif_results(scan["scan-sarif"])
    assert [r["ruleId"] for r in results] == ["MG101"]
    assert run.step("Enforce fail-on").returncode == 1
    assert "4 files scanned" in run.summary  # the three models and the checkpoint

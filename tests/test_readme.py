"""The README's code blocks, run: what a user copies must work.

``blocks(section)`` returns the fenced blocks of one ``##``/``###`` section as
(language, text) pairs; each part of the README has its tests below.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from modelguard.policy import policy_from_mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def blocks(section: str) -> list[tuple[str, str]]:
    """Fenced code blocks of the README section titled ``section`` (up to the next heading)."""
    level = 0
    found: list[tuple[str, str]] = []
    fence: tuple[str, list[str]] | None = None
    for line in README.splitlines(keepends=True):
        if fence is not None:  # inside a block a '#' line is a comment, not a heading
            if line.startswith("```"):
                found.append((fence[0], "".join(fence[1])))
                fence = None
            else:
                fence[1].append(line)
            continue
        heading = re.match(r"^(#+) (.*)$", line.rstrip("\n"))
        if heading and level and len(heading.group(1)) <= level:
            break
        if heading and heading.group(2) == section:
            level = len(heading.group(1))
        elif level and line.startswith("```"):
            fence = (line[3:].strip(), [])
    assert level, f"README has no section {section!r}"
    return found


def _commands(text: str) -> list[list[str]]:
    """``$ command  # comment`` lines of a console block, as argument lists."""
    return [
        shlex.split(line[2:], comments=True) for line in text.splitlines() if line.startswith("$ ")
    ]


# -- integrations: policy, pre-commit, the GitHub Action, the ML-BOM -----------------------


def test_policy_block_is_a_valid_policy() -> None:
    [(_lang, text)] = [b for b in blocks("Policy") if b[0] == "toml"]
    table = tomllib.loads(text)["tool"]["modelguard"]
    policy = policy_from_mapping(table, source="README.md")  # rule ids checked too
    assert policy.ignores[0].rule == "MG102"


def test_pre_commit_block_names_the_hooks_this_repository_defines() -> None:
    [(_lang, text)] = blocks("pre-commit")
    config = yaml.safe_load(text)
    [repo] = config["repos"]
    defined = {hook["id"] for hook in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert {hook["id"] for hook in repo["hooks"]} <= defined
    assert repo["hooks"][0]["args"] == ["--fail-on", "high"]


def test_action_block_is_the_linted_example_workflow() -> None:
    """.ci/run lints docs/examples/models.yml with zizmor; the README shows that file."""
    [(_lang, text)] = [b for b in blocks("GitHub Action") if b[0] == "yaml"]
    assert text == (REPO / "docs" / "examples" / "models.yml").read_text(encoding="utf-8")
    job = yaml.safe_load(text)["jobs"]["modelguard"]
    assert job["permissions"] == {
        "contents": "read",
        "security-events": "write",
        "actions": "read",
    }
    action_inputs = yaml.safe_load((REPO / "action.yml").read_text())["inputs"]
    [step] = [s for s in job["steps"] if s["uses"].startswith("modelguard/modelguard@")]
    assert set(step["with"]) <= set(action_inputs)


def test_ml_bom_block_writes_a_strict_valid_bom(tmp_path: Path) -> None:
    [(_lang, text)] = blocks("ML bill of materials (CycloneDX 1.6)")
    [command] = _commands(text)
    models = tmp_path / "models"
    models.mkdir()
    (models / "m.pkl").write_bytes(b"\x80\x04K\x01.")
    (models / "config.json").write_text("{}")
    env = {**os.environ, "MODELGUARD_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    bom = (tmp_path / "mlbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom) is None
    assert {c["type"] for c in json.loads(bom)["components"]} == {
        "machine-learning-model",
        "data",
    }


@pytest.mark.parametrize("section", ["Scanning"])
def test_scanning_block_commands_run(section: str, tmp_path: Path) -> None:
    """The local commands of the Scanning block (remote ones need a Hub: tests/integrations)."""
    [(_lang, text), *_] = blocks(section)
    (tmp_path / "model.pt").write_bytes(b"\x80\x04K\x01.")
    (tmp_path / "models").mkdir()
    (tmp_path / "more.pkl").write_bytes(b"\x80\x04K\x01.")
    env = {**os.environ, "MODELGUARD_CACHE_DIR": str(tmp_path / "cache")}
    for line in text.splitlines():
        if not line.startswith("$ ") or "hf://" in line:
            continue
        done = subprocess.run(
            line[2:].split("#")[0], shell=True, cwd=tmp_path, env=env, capture_output=True
        )
        assert done.returncode == 0, (line, done.stderr)
    assert json.loads((tmp_path / "modelguard.sarif").read_text())["version"] == "2.1.0"

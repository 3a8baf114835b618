"""The README's code blocks, run: what a user copies must work.

``blocks(section)`` returns the fenced blocks of one ``##``/``###`` section as
(language, text) pairs; each part of the README has its tests below.

Whole sections can also run end to end: ``SECTIONS`` maps a heading to a
*world*, a fixture that sets up what the examples talk about (servers, files,
environment) and the host names to map onto loopback servers. Every fenced
block of the section is then taken in order:

* ``console``: each ``$ command`` runs in bash in one working folder; lines
  after it are output that must appear (a line with ``…`` matches when its
  fragments appear in order in one output line); ``$ echo $?`` followed by a
  number is the exit status the previous command must have, else it must be 0;
* ``python``: runs as a script in the working folder and must exit 0;
* ``toml``: must parse (as a lock file when it holds ``[[artifact]]`` tables);
* anything else is prose.

A new section is one more entry in ``SECTIONS`` and its world fixture.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from modelguard.policy import policy_from_mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from conftest import FakeHub, LoopbackServer

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # where the block's text starts in README.md, for messages


def section_blocks(section: str) -> list[Block]:
    """Fenced code blocks of the README section titled ``section`` (up to the next heading)."""
    level = 0
    found: list[Block] = []
    fence: tuple[str, int, list[str]] | None = None
    for number, line in enumerate(README.splitlines(keepends=True), start=1):
        if fence is not None:  # inside a block a '#' line is a comment, not a heading
            if line.startswith("```"):
                found.append(Block(fence[0], "".join(fence[2]), fence[1]))
                fence = None
            else:
                fence[2].append(line)
            continue
        heading = re.match(r"^(#+) (.*)$", line.rstrip("\n"))
        if heading and level and len(heading.group(1)) <= level:
            break
        if heading and heading.group(2) == section:
            level = len(heading.group(1))
        elif level and line.startswith("```"):
            fence = (line[3:].strip(), number + 1, [])
    assert level, f"README has no section {section!r}"
    return found


def blocks(section: str) -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the README section titled ``section``."""
    return [(b.lang, b.text) for b in section_blocks(section)]


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


# -- whole sections, run in order against loopback servers ------------------------------


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    status: int = 0


def console_steps(text: str) -> list[Step]:
    steps: list[Step] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.startswith("$ "):
            if steps:
                steps[-1].expected.append(line)
            continue
        command = line[2:]
        if command.strip() == "echo $?":
            steps[-1].status = int(lines[index].strip())
            index += 1
            continue
        steps.append(Step(command))
    return steps


def shown(expected: str, output: str) -> bool:
    """Whether an expected output line (``…`` eliding parts) appears in ``output``."""
    fragments = [f.strip() for f in expected.split("…") if f.strip()]
    for line in output.splitlines():
        at = 0
        for fragment in fragments:
            found = line.find(fragment, at)
            if found < 0:
                break
            at = found + len(fragment)
        else:
            return True
    return not fragments


@dataclass
class World:
    """What a section's examples need: a working folder, environment, host mapping."""

    folder: Path
    env: dict[str, str]
    hosts: dict[str, str]  # URL prefix in the README -> loopback URL

    def command(self, text: str) -> str:
        for shown_as, real in self.hosts.items():
            text = text.replace(shown_as, real)
        return text

    def output(self, text: str) -> str:
        for shown_as, real in self.hosts.items():
            text = text.replace(real, shown_as)
        return text


def run_console(world: World, block: Block) -> None:
    for step in console_steps(block.text):
        done = subprocess.run(
            ["bash", "-c", world.command(step.command)],
            cwd=world.folder,
            env=world.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = world.output(done.stdout + done.stderr)
        where = f"README.md:{block.line}: $ {step.command}"
        assert done.returncode == step.status, f"{where}\nexit {done.returncode}\n{output}"
        for line in step.expected:
            assert shown(line, output), f"{where}\nexpected: {line}\nin:\n{output}"


def run_python(world: World, block: Block) -> None:
    script = world.folder / f"readme_block_{block.line}.py"
    script.write_text(world.command(block.text), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=world.folder,
        env=world.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"README.md:{block.line}\n{done.stdout}{done.stderr}"


def check_toml(world: World, block: Block) -> None:
    document = tomllib.loads(block.text)
    if "artifact" in document:
        from modelguard.supply.lockfile import read_lock

        path = world.folder / f"readme_block_{block.line}.lock"
        path.write_text(block.text, encoding="utf-8")
        assert read_lock(path).entries, f"README.md:{block.line}: an empty lock"


RUNNERS: dict[str, Callable[[World, Block], None]] = {
    "console": run_console,
    "python": run_python,
    "toml": check_toml,
}


def _base_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELGUARD_", "HF_"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(folder / "home"),
            "MODELGUARD_CACHE_DIR": str(folder / "home" / "mg-cache"),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    return env


# ---- worlds --------------------------------------------------------------------------------


def _safetensors() -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({"weight": np.arange(8, dtype=np.float32)})


def _onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    buffer = io.BytesIO()
    onnx.save(model, buffer)
    return buffer.getvalue()


CAFFEMODEL = bytes(range(256)) * 16  # 4,096 bytes (caffemodels are protobuf: not scanned)
RESNET = b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."  # a dict


def _zoo_readme(url: str, sha1: str) -> str:
    return (
        "---\nname: BVLC AlexNet\ncaffemodel: bvlc_alexnet.caffemodel\n"
        f"caffemodel_url: {url}\nlicense: unrestricted\nsha1: {sha1}\n---\n"
    )


@pytest.fixture
def supply_world(hub: FakeHub, https_server: LoopbackServer, tmp_path: Path) -> Iterator[World]:
    """A Hub repo acme/tiny-net (main and v1.2), https://example.org files, zoo readmes."""
    repo = hub.add(
        "acme/tiny-net",
        {
            ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
            "config.json": b'{"architectures": ["TinyNet"]}\n',
            "model.safetensors": _safetensors(),
            "onnx/model.onnx": _onnx(),
        },
        lfs={"model.safetensors", "onnx/model.onnx"},
    )
    repo.refs["v1.2"] = repo.commit
    https_server.serve("/resnet50.pt", RESNET)
    caffe_url = https_server.serve("/bvlc_alexnet.caffemodel", CAFFEMODEL)
    folder = tmp_path / "readme"
    (folder / "zoo").mkdir(parents=True)
    (folder / "home").mkdir()
    sha1 = hashlib.sha1(CAFFEMODEL).hexdigest()
    (folder / "zoo" / "readme.md").write_text(_zoo_readme(caffe_url, sha1))
    (folder / "zoo" / "tampered.md").write_text(_zoo_readme(caffe_url, "8e8938a0" + "0" * 32))
    env = _base_env(folder)
    env.update({k: v for k, v in os.environ.items() if k.startswith("HF_")})  # the fake Hub
    env["SSL_CERT_FILE"] = os.environ["SSL_CERT_FILE"]
    env["RESNET50_SHA256"] = hashlib.sha256(RESNET).hexdigest()
    yield World(folder, env, {"https://example.org": https_server.url})


SECTIONS = {"Fetch, lock, verify and sign": "supply_world"}


@pytest.mark.parametrize("title", sorted(SECTIONS))
def test_readme_section_runs(title: str, request: pytest.FixtureRequest) -> None:
    world: World = request.getfixturevalue(SECTIONS[title])
    found = section_blocks(title)
    assert found, f"no code blocks under {title!r}"
    ran = 0
    for block in found:
        runner = RUNNERS.get(block.lang)
        if runner is not None:
            runner(world, block)
            ran += 1
    assert ran == sum(1 for b in found if b.lang in RUNNERS)


def test_console_parsing() -> None:
    steps = console_steps("$ a\nout 1\n$ b\n$ echo $?\n1\n")
    assert [(s.command, s.expected, s.status) for s in steps] == [
        ("a", ["out 1"], 0),
        ("b", [], 1),
    ]
    assert shown("x … y", "pre x mid y post") and not shown("x … y", "y x")

"""Tiny model files for the integration tests, made here (never loaded).

Tests get them through the ``models`` fixture (pytest runs with
--import-mode=importlib, so test modules cannot import a sibling helper). The
loopback server (``range_server``, ``plain_server``) is the shared one in
``tests/conftest.py``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest


class _RunsShell:
    """Pickles to a call of os.system: what a booby-trapped checkpoint contains."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def malicious_pickle() -> bytes:
    """A protocol-4 pickle that would run a shell command when unpickled."""
    return pickle.dumps({"state_dict": {}, "hook": _RunsShell()}, protocol=4)


def malicious_text_pickle() -> bytes:
    """A protocol-0 pickle: pure ASCII text that still calls os.system."""
    return b"cos\nsystem\n(S'echo pwned'\ntR."


def benign_pickle() -> bytes:
    return pickle.dumps({"weights": [0.5, -1.25, 3.0], "epoch": 7}, protocol=4)


def torch_like_zip(pickle_bytes: bytes, padding_bytes: int = 0) -> bytes:
    """A zip laid out like torch.save's: archive/data.pkl plus (stored) tensor data."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", "little")
        if padding_bytes:
            # Seeded noise: a test must not pass or fail by the draw.
            noise = random.Random(padding_bytes).randbytes(padding_bytes)
            archive.writestr("archive/data/0", noise)
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def models() -> SimpleNamespace:
    """The model makers above, for tests."""
    return SimpleNamespace(
        malicious_pickle=malicious_pickle,
        malicious_text_pickle=malicious_text_pickle,
        benign_pickle=benign_pickle,
        torch_like_zip=torch_like_zip,
        write=write,
    )


# ---- a real-looking repository: code, a venv, node_modules, a symlink, a few models ------

# What the repository fixture holds: the files a scan should report (models, by
# path), the data files beside them, and everything that is not a model.
REPOSITORY_MODELS = ("models/clean.pkl", "models/checkpoint.pt", "models/evil.pt")
REPOSITORY_DATA = ("models/config.json", "models/tokenizer.json")
REPOSITORY_CODE = 40  # .py files under src/


def _git(repo: Path, *args: str) -> None:
    import subprocess

    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def make_repository(root: Path) -> Path:
    """A git work tree as a project has it, with three models, one of them malicious.

    Besides the models: source code, a README and pyproject.toml, a virtual
    environment and node_modules (each holding a pickle a naive scan would
    report), a git-ignored build folder, and ``latest.pt``, a symbolic link to
    the malicious checkpoint.
    """
    repo = root / "repo"
    for i in range(REPOSITORY_CODE):
        write(repo / "src" / "app" / f"module{i:02d}.py", f"VALUE = {i}\n".encode())
    write(repo / "README.md", b"# a project with models\n")
    write(repo / "pyproject.toml", b'[project]\nname = "app"\nversion = "1"\n')
    write(repo / ".gitignore", b"build/\n.venv/\n")
    write(repo / "models" / "clean.pkl", benign_pickle())
    write(repo / "models" / "checkpoint.pt", torch_like_zip(benign_pickle()))
    write(repo / "models" / "evil.pt", torch_like_zip(malicious_pickle()))
    write(repo / "models" / "config.json", json.dumps({"hidden_size": 8}).encode())
    write(repo / "models" / "tokenizer.json", json.dumps({"model": {"vocab": {}}}).encode())
    # Trees no model scan wants, each with a pickle that would become noise.
    write(repo / ".venv" / "lib" / "site-packages" / "pkg" / "cache.pkl", benign_pickle())
    write(repo / ".venv" / "pyvenv.cfg", b"home = /usr/bin\n")
    write(repo / "node_modules" / "left-pad" / "index.js", b"module.exports = 1;\n")
    write(repo / "node_modules" / "left-pad" / "fixture.pkl", malicious_text_pickle())
    write(repo / "build" / "stale.pkl", benign_pickle())
    (repo / "latest.pt").symlink_to(Path("models") / "evil.pt")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "initial")
    return repo


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """``make_repository`` in a fresh temporary folder (see REPOSITORY_* for its contents)."""
    return make_repository(tmp_path)


# ---- GitHub code scanning's documented SARIF limits ---------------------------------------

# docs.github.com, "SARIF results exceed one or more limits": hard limits (an upload
# above one is rejected) and the gzip-compressed file size an upload accepts.
GITHUB_SARIF_LIMITS = {
    "runs per file": 20,
    "results per run": 25_000,
    "rules per run": 25_000,
    "locations per result": 1_000,
    "tags per rule": 20,
    "compressed bytes": 10 * 1024 * 1024,
}


def github_sarif_problems(text: str) -> list[str]:
    """Where a SARIF log would be rejected or mis-shown by GitHub code scanning."""
    import gzip

    problems: list[str] = []
    log = json.loads(text)
    limits = GITHUB_SARIF_LIMITS
    if len(gzip.compress(text.encode())) > limits["compressed bytes"]:
        problems.append("file too large")
    if len(log["runs"]) > limits["runs per file"]:
        problems.append("too many runs")
    for run in log["runs"]:
        rules = run["tool"]["driver"].get("rules", [])
        if len(run.get("results", [])) > limits["results per run"]:
            problems.append("too many results")
        if len(rules) > limits["rules per run"]:
            problems.append("too many rules")
        problems += [
            f"rule {r['id']}: too many tags"
            for r in rules
            if len(r.get("properties", {}).get("tags", [])) > limits["tags per rule"]
        ]
        for result in run.get("results", []):
            locations = result.get("locations", [])
            where = f"result {result['ruleId']}"
            if (
                not locations
                or len(locations) + len(result.get("relatedLocations", []))
                > (limits["locations per result"])
            ):
                problems.append(f"{where}: locations")
            physical = locations[0]["physicalLocation"] if locations else {}
            if "startLine" not in physical.get("region", {}):
                problems.append(f"{where}: no region.startLine (GitHub shows no alert)")
            if "primaryLocationLineHash" not in result.get("partialFingerprints", {}):
                problems.append(f"{where}: GitHub would hash line 1 of a binary file")
            uri = physical.get("artifactLocation", {}).get("uri", "")
            if uri.startswith(("/", "..")) or "%3A//" in uri:
                problems.append(f"{where}: {uri} is no repository path")
    return problems


@pytest.fixture
def sarif_problems() -> SimpleNamespace:
    """``check(text)`` lists what GitHub code scanning would reject; ``limits`` its numbers."""
    return SimpleNamespace(check=github_sarif_problems, limits=GITHUB_SARIF_LIMITS)


@pytest.fixture
def repository_layout() -> SimpleNamespace:
    return SimpleNamespace(
        models=REPOSITORY_MODELS, data=REPOSITORY_DATA, code_files=REPOSITORY_CODE
    )

"""Drive the real pre-commit tool against this repository's .pre-commit-hooks.yaml.

`pre-commit try-repo` installs modelguard from a snapshot of this working tree
into a fresh hook environment (pip, from the configured index), then runs the
hooks on the files staged in a throwaway git repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
PRE_COMMIT = [sys.executable, "-m", "pre_commit"]

pytestmark = pytest.mark.slow


def _package_index_reachable() -> bool:
    """pre-commit builds the hook environment with pip from the package index.

    Without a route to it (a sandbox or network namespace with loopback only)
    the hook cannot be installed at all, which says nothing about modelguard.
    """
    import socket
    from urllib.parse import urlsplit

    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    parts = urlsplit(index)
    if parts.scheme == "file":
        return True
    try:
        with socket.create_connection((parts.hostname or "pypi.org", parts.port or 443), 5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module", autouse=True)
def _needs_package_index() -> None:
    if not _package_index_reachable():
        pytest.skip("the package index is unreachable; pre-commit installs the hook from it")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    env.update(
        PRE_COMMIT_HOME=str(home / "pre-commit"),
        MODELGUARD_CACHE_DIR=str(home / "modelguard-cache"),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
        VIRTUAL_ENV="",
    )
    return env


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, str]]:
    """A committed snapshot of this working tree (what try-repo would snapshot).

    Made once so both runs below reuse one hook environment (keyed by repo+rev).
    """
    home = tmp_path_factory.mktemp("precommit-home")
    env = _env(home)
    snapshot = home / "modelguard-src"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = os.fsdecode(raw)
        source = REPO / rel
        if not source.is_file() or rel.startswith(("fixtures/", "tests/")):
            continue  # the hook installs the package; tests and fixtures are not needed
        target = snapshot / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q", str(snapshot)], check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=snapshot, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "snapshot"], cwd=snapshot, check=True, env=env)
    sha = git(snapshot, "rev-parse", "HEAD").strip()
    return snapshot, sha, env


def try_repo(
    hook_repo: tuple[Path, str, dict[str, str]], project: Path, *hook: str
) -> subprocess.CompletedProcess[str]:
    snapshot, sha, env = hook_repo
    return subprocess.run(
        [*PRE_COMMIT, "try-repo", str(snapshot), *hook, "--ref", sha, "--verbose", "--color=never"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def new_project(
    models: SimpleNamespace, root: Path, env: dict[str, str], files: dict[str, bytes]
) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
    for name, data in files.items():
        models.write(root / name, data)
    subprocess.run(["git", "add", *files], cwd=root, check=True, env=env)
    return root


def test_benign_models_pass(
    models: SimpleNamespace, hook_repo: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    project = new_project(
        models,
        tmp_path / "benign",
        hook_repo[2],
        {
            "models/weights.pkl": models.benign_pickle(),
            "models/checkpoint.pt": models.torch_like_zip(models.benign_pickle()),
            "README.md": b"# a project\n",
        },
    )
    result = try_repo(hook_repo, project)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "modelguard scan (model files)" in output
    assert "Passed" in output
    assert "Failed" not in output


def test_malicious_model_blocks_the_commit(
    models: SimpleNamespace, hook_repo: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    project = new_project(
        models,
        tmp_path / "mixed",
        hook_repo[2],
        {
            "models/weights.pkl": models.benign_pickle(),
            "models/evil.pt": models.torch_like_zip(models.malicious_pickle()),
            "models/legacy.pkl": models.malicious_text_pickle(),  # ASCII: caught by extension
            "data/innocent.dat": models.malicious_pickle(),  # renamed: caught as binary
        },
    )
    result = try_repo(hook_repo, project)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    by_hook = _hook_sections(output)
    model_files = by_hook["modelguard scan (model files)"]
    binary_files = by_hook["modelguard scan (all binary files)"]
    assert "Failed" in model_files and "Failed" in binary_files
    assert "models/evil.pt" in model_files
    assert "models/legacy.pkl" in model_files
    assert "data/innocent.dat" in binary_files
    assert "os.system" in model_files or "posix.system" in model_files
    # The benign model is scanned but has no finding: it never appears in a finding line.
    assert _flagged_paths(output).isdisjoint({"models/weights.pkl"})


def _hook_sections(output: str) -> dict[str, str]:
    """Split pre-commit's verbose output into one block per hook (keyed by hook name)."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        for name in ("modelguard scan (model files)", "modelguard scan (all binary files)"):
            if line.startswith(name):
                current = name
                sections[name] = ""
        if current is not None:
            sections[current] += line + "\n"
    return sections


def _flagged_paths(output: str) -> set[str]:
    """Paths the text report prints as headers of findings blocks."""
    flagged: set[str] = set()
    for line in output.splitlines():
        stripped = line.strip()
        for candidate in ("models/weights.pkl", "models/evil.pt", "models/legacy.pkl"):
            if stripped.startswith(candidate):
                flagged.add(candidate)
    return flagged

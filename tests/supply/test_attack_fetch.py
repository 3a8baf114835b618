"""Attacks on fetch through a lying Hub: what it places, where, and what it leaves behind.

Each test asserts the exit code, that nothing lands outside the destination, that
no partial file is left, and that the report names the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

import modelguard
from modelguard.cli import cli
from modelguard.errors import FetchError
from modelguard.files import PARTIAL_PREFIX

if TYPE_CHECKING:
    from conftest import FakeHub, LoopbackServer

WEIGHTS = bytes(range(256)) * 300
EVIL_PICKLE = b"cposix\nsystem\n(S'echo pwned'\ntR."  # never loaded: the scanner flags it
BIG = bytes(range(256)) * 12288  # 3 MiB: the download writes 1 MiB chunks
HELD = 2 * 1024 * 1024  # the server sends this much, then stalls


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path / "mg-cache"))
    return folder


def tree(folder: Path) -> list[str]:
    """Everything below ``folder``, links included (not followed)."""
    out = []
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            out.append(Path(base, name).relative_to(folder).as_posix())
    return sorted(out)


def partials(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob(f"{PARTIAL_PREFIX}*")]


def rules(report: modelguard.Report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.findings:
        out.setdefault(f.rule_id, []).append(f.severity.label)
    return out


def downloads(hub: FakeHub) -> list[str]:
    return [p for _, p, _ in hub.server.requests if "/resolve/" in p]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


# ---- a fetch into a working folder ---------------------------------------------------------


def test_fetch_into_the_working_folder_keeps_the_project_policy(hub: FakeHub, work: Path) -> None:
    """Before: the repository's pyproject.toml replaced the project's, and the next
    fetch placed a posix.system pickle with exit 0."""
    project_policy = '[tool.modelguard]\nfail-on = "high"\n'
    (work / "pyproject.toml").write_text(project_policy)
    hub.add(
        "evil/policy",
        {"pyproject.toml": b'[tool.modelguard]\nfail-on = "never"\n', "config.json": b"{}"},
    )
    first = invoke("fetch", "hf://evil/policy", "-f", "json")  # --dest defaults to "."
    assert first.exit_code == 0, first.output
    assert (work / "pyproject.toml").read_text() == project_policy
    report = json.loads(first.stdout)
    (refused,) = [a for a in report["artifacts"] if a["path"] == "pyproject.toml"]
    messages = {f["rule_id"]: f["message"] for f in refused["findings"]}
    assert "policy file" in messages["MG414"]  # not fetched, and why
    assert "MG412" in messages  # the destination's own policy file is not used either
    hub.add("evil/model", {"pytorch_model.bin": EVIL_PICKLE}, lfs={"pytorch_model.bin"})
    second = invoke("fetch", "hf://evil/model", "--quarantine", "../q")
    assert second.exit_code == 1, second.output
    assert not (work / "pytorch_model.bin").exists()
    assert "MG101" in second.output and "quarantined" in second.output
    assert partials(work) == []


# ---- overwriting ---------------------------------------------------------------------------


def test_fetch_never_replaces_a_file_it_did_not_place(hub: FakeHub, work: Path) -> None:
    dest = work / "dest"
    dest.mkdir()
    (dest / "README.md").write_text("my own notes\n")
    hub.add("acme/tiny", {"README.md": b"# upstream\n", "model.bin": WEIGHTS}, lfs={"model.bin"})
    result = invoke("fetch", "hf://acme/tiny", "--dest", "dest")
    assert result.exit_code == 1, result.output
    assert "MG415" in result.output and "dest/README.md" in result.output
    assert (dest / "README.md").read_text() == "my own notes\n"
    assert tree(dest) == ["README.md"]
    assert downloads(hub) == []  # refused before any byte was downloaded
    # --force replaces it; then modelguard knows the file and may refresh it.
    assert invoke("fetch", "hf://acme/tiny", "--dest", "dest", "--force").exit_code == 0
    assert (dest / "README.md").read_text() == "# upstream\n"
    assert invoke("fetch", "hf://acme/tiny", "--dest", "dest").exit_code == 0
    # Once the user edits the file, it is theirs again.
    (dest / "README.md").write_text("# upstream\nmy edits\n")
    assert invoke("fetch", "hf://acme/tiny", "--dest", "dest").exit_code == 1
    assert (dest / "README.md").read_text() == "# upstream\nmy edits\n"


def test_a_file_known_from_the_lock_may_be_refreshed(
    hub: FakeHub, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("acme/tiny", {"model.bin": WEIGHTS}, lfs={"model.bin"})
    assert modelguard.fetch("hf://acme/tiny", "dest", lock="modelguard.lock").ok
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(work / "another-cache"))  # no record now
    again = modelguard.fetch("hf://acme/tiny", "dest", lock="modelguard.lock")
    assert again.ok, again.report
    (work / "dest" / "model.bin").write_bytes(WEIGHTS[:-1] + b"!")  # now the user's bytes
    refused = modelguard.fetch("hf://acme/tiny", "dest", lock="modelguard.lock")
    assert not refused.placed and "MG415" in {f.rule_id for f in refused.report.findings}


# ---- hostile names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (".git/config", ".git folder"),
        ("sub/.GIT/hooks/post-checkout", ".git folder"),
        ("weights\nMG400 provenance-verified forged.bin", "U+000A"),
        ("evil\u202egnp.bin", "U+202E"),
    ],
)
def test_names_that_must_never_be_placed(hub: FakeHub, work: Path, name: str, problem: str) -> None:
    """Before: .git/config was placed (the next git status runs its fsmonitor), and a
    name with a newline was accepted."""
    hub.add("evil/names", {name: b"[core]\n\tfsmonitor = touch pwned\n", "model.bin": WEIGHTS})
    result = modelguard.fetch("hf://evil/names", "dest")
    assert not result.placed
    assert result.report.exit_code(modelguard.Severity.HIGH) == 1
    (finding,) = [f for f in result.report.findings if f.rule_id == "MG414"]
    assert problem in finding.message and finding.severity == modelguard.Severity.HIGH
    assert not (work / "dest").exists() or tree(work / "dest") == []
    assert downloads(hub) == []
    # Opting in to dotfiles does not open .git or control characters.
    assert not modelguard.fetch("hf://evil/names", "dest", allow_dotfiles=True).placed


def test_dotfiles_are_left_out_unless_allowed(hub: FakeHub, work: Path) -> None:
    hub.add(
        "acme/tiny",
        {
            ".gitattributes": b"*.bin filter=lfs\n",
            ".github/workflows/ci.yml": b"on: push\n",
            "conftest.py": b"import os\n",
            "model.bin": WEIGHTS,
        },
        lfs={"model.bin"},
    )
    result = invoke("fetch", "hf://acme/tiny", "--dest", "dest", "-v")
    assert result.exit_code == 0, result.output
    assert tree(work / "dest") == ["model.bin"]
    assert result.output.count("MG414") == 3 and "dotfiles are not allowed" in result.output
    allowed = invoke("fetch", "hf://acme/tiny", "--dest", "all", "--allow-dotfiles")
    assert allowed.exit_code == 0, allowed.output
    assert tree(work / "all") == [
        ".gitattributes",
        ".github",
        ".github/workflows",
        ".github/workflows/ci.yml",
        "conftest.py",
        "model.bin",
    ]


# ---- placement -----------------------------------------------------------------------------


def test_symlinked_subfolder_cannot_carry_a_file_outside(
    hub: FakeHub, work: Path, tmp_path: Path
) -> None:
    """Before: the verified file was written through the link, outside the destination."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = work / "dest"
    dest.mkdir()
    (dest / "onnx").symlink_to(outside, target_is_directory=True)
    hub.add("acme/tiny", {"onnx/model.onnx": b"\x08\x07onnx", "model.bin": WEIGHTS})
    for force in ([], ["--force"]):
        result = invoke("fetch", "hf://acme/tiny", "--dest", "dest", *force)
        assert result.exit_code == 1, result.output
        assert "MG415" in result.output and "symbolic link" in result.output
        assert tree(outside) == []
        assert tree(dest) == ["onnx"]
    assert partials(dest, outside) == []


def test_a_link_planted_during_the_download_is_not_followed(
    hub: FakeHub, work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelguard.supply import hub as hub_module

    outside = tmp_path / "outside"
    outside.mkdir()
    real_download = hub_module.download

    def download_then_plant(*args: Any, **kwargs: Any) -> Any:
        cached = real_download(*args, **kwargs)
        (work / "dest" / "onnx").symlink_to(outside, target_is_directory=True)
        return cached

    monkeypatch.setattr(hub_module, "download", download_then_plant)
    hub.add("acme/tiny", {"onnx/model.onnx": b"\x08\x07onnx", "model.bin": WEIGHTS})
    with pytest.raises(FetchError, match="symbolic link"):
        modelguard.fetch("hf://acme/tiny", "dest")
    assert tree(outside) == []
    assert partials(work / "dest", outside) == []


def _fetch_in_a_subprocess(url: str, work: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MODELGUARD_CACHE_DIR": str(work / ".cache")}
    argv = [sys.executable, "-m", "modelguard", "fetch", url, "--dest", "dest"]
    return subprocess.Popen(
        [*argv, "--allow-http", "--no-progress", "--timeout", "30"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_partial(folder: Path, proc: subprocess.Popen[str]) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = partials(folder) if folder.exists() else []
        if found and found[0].stat().st_size > 0:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no partial file appeared")


def test_sigterm_mid_download_leaves_no_partial_file(server: LoopbackServer, work: Path) -> None:
    """Before: SIGTERM left a 4 MiB .modelguard-partial-* of unverified bytes."""
    url = server.serve("/m/weights.bin", BIG, hold_after=HELD)
    proc = _fetch_in_a_subprocess(url, work)
    try:
        _wait_for_partial(work / "dest", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        server.release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM  # it still dies of the signal
    assert tree(work / "dest") == []


def test_sigkill_leftover_is_reported_by_lock_and_verify(
    server: LoopbackServer, work: Path
) -> None:
    url = server.serve("/m/weights.bin", BIG, hold_after=HELD)
    proc = _fetch_in_a_subprocess(url, work)
    try:
        leftover = _wait_for_partial(work / "dest", proc)
        proc.kill()  # nothing can clean up after SIGKILL
        proc.wait(60)
    finally:
        server.release.set()
    (work / "dest" / "config.json").write_text("{}\n")
    locked = invoke("lock", "dest")
    assert locked.exit_code == 1, locked.output
    assert "MG411" in locked.output and leftover.name in locked.output
    verified = invoke("verify", "dest", "-f", "json")
    assert verified.exit_code == 1, verified.output
    paths = {
        (a["path"], f["rule_id"])
        for a in json.loads(verified.stdout)["artifacts"]
        for f in a["findings"]
    }
    assert (f"dest/{leftover.name}", "MG411") in paths


# ---- modes ---------------------------------------------------------------------------------


def test_fetched_files_honour_the_umask(
    hub: FakeHub, unprivileged: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: fetched files were mode 0600 under umask 022 (mkstemp's mode)."""
    home = unprivileged.folder()
    monkeypatch.chdir(home)
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(home / ".cache"))
    hub.add("acme/tiny", {"sub/model.bin": WEIGHTS}, lfs={"sub/model.bin"})
    old = os.umask(0o022)
    try:
        assert modelguard.fetch("hf://acme/tiny", "dest", lock="modelguard.lock").ok
        os.umask(0o077)
        assert modelguard.fetch("hf://acme/tiny", "private").ok
    finally:
        os.umask(old)
    placed = home / "dest" / "sub" / "model.bin"
    assert placed.stat().st_mode & 0o777 == 0o644
    assert (home / "dest" / "sub").stat().st_mode & 0o777 == 0o755
    assert (home / "modelguard.lock").stat().st_mode & 0o777 == 0o644
    assert (home / "private" / "sub" / "model.bin").stat().st_mode & 0o777 == 0o600
    if unprivileged.other_user:  # another user (a container build, a service) can read it
        done = unprivileged.run(["sha256sum", str(placed)])
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[0] == hashlib.sha256(WEIGHTS).hexdigest()
        refused = unprivileged.run(["sha256sum", str(home / "private" / "sub" / "model.bin")])
        assert refused.returncode != 0  # and umask 077 keeps it private

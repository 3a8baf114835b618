"""The one tree walk: link rule, special files, partial downloads, excludes, .gitignore."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from modelguard.errors import UsageError
from modelguard.files import (
    DEFAULT_EXCLUDES,
    PARTIAL_PREFIX,
    Kind,
    NotARegularFile,
    display_path,
    is_under,
    leaves_folder,
    open_regular,
    user_cache_dir,
    walk,
)

if TYPE_CHECKING:
    from conftest import Unprivileged


def kinds(root: Path, **kwargs: object) -> dict[str, Kind]:
    listing = walk([root], root=root, **kwargs)  # type: ignore[arg-type]
    return {e.rel: e.kind for e in listing.entries}


def test_named_paths_are_followed_found_links_are_not(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pt").write_bytes(b"x")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.bin").write_bytes(b"a")
    os.symlink(outside / "secret.pt", tree / "file-link")
    os.symlink(outside, tree / "folder-link")
    os.symlink(tmp_path / "nowhere", tree / "broken")
    assert kinds(tree) == {
        "broken": Kind.BROKEN_LINK,
        "file-link": Kind.LINK_TO_FILE,
        "folder-link": Kind.LINK_TO_FOLDER,
        "sub/a.bin": Kind.FILE,
    }
    # Naming the link itself follows it.
    named = walk([tree / "folder-link"], root=tmp_path)
    assert [e.display for e in named.files] == ["tree/folder-link/secret.pt"]


def test_fifo_is_listed_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    assert kinds(tmp_path) == {"pipe.pt": Kind.SPECIAL}
    assert walk([fifo], root=tmp_path).links[0].kind is Kind.SPECIAL
    # open_regular returns at once instead of waiting for a writer.
    done: list[BaseException] = []

    def attempt() -> None:
        try:
            open_regular(fifo)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            done.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "open_regular blocked on a FIFO"
    assert isinstance(done[0], NotARegularFile)


def test_open_regular_refuses_links_when_asked(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.close(open_regular(tmp_path / "link"))
    with pytest.raises(OSError):
        open_regular(tmp_path / "link", follow=False)


def test_partial_downloads_are_their_own_kind(tmp_path: Path) -> None:
    (tmp_path / f"{PARTIAL_PREFIX}abc-model.bin").write_bytes(b"half")
    (tmp_path / "model.bin").write_bytes(b"whole")
    listing = walk([tmp_path], root=tmp_path)
    assert [e.rel for e in listing.partial] == [f"{PARTIAL_PREFIX}abc-model.bin"]
    assert [e.rel for e in listing.files] == ["model.bin"]


def test_default_excludes_apply_inside_folders_only(tmp_path: Path) -> None:
    for name in sorted(DEFAULT_EXCLUDES):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.pt").write_bytes(b"x")
    (tmp_path / "keep.pt").write_bytes(b"x")
    listing = walk([tmp_path], root=tmp_path, default_excludes=True)
    assert [e.rel for e in listing.files] == ["keep.pt"]
    # each excluded folder is listed once, not walked
    assert sorted(e.rel for e in listing.excluded) == sorted(DEFAULT_EXCLUDES)
    # a named excluded folder is walked: the caller asked for it
    assert [e.rel for e in walk([tmp_path / ".venv"], default_excludes=True).files] == ["m.pt"]
    # off: everything
    assert len(walk([tmp_path], root=tmp_path).files) == len(DEFAULT_EXCLUDES) + 1


def test_ignore_top_lists_the_folder_once(tmp_path: Path) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "x").write_bytes(b"x")
    (tmp_path / "sub" / ".git").mkdir(parents=True)
    (tmp_path / "sub" / ".git" / "config").write_bytes(b"x")
    listing = walk([tmp_path], root=tmp_path, ignore_top=[".git"])
    assert [e.rel for e in listing.excluded] == [".git"]
    assert [e.rel for e in listing.files] == ["sub/.git/config"]  # only the top is ignored


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_gitignore_in_a_work_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / ".gitignore").write_text("build/\n*.log\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.pt").write_bytes(b"x")
    (repo / "run.log").write_bytes(b"x")
    (repo / "tracked.log").write_bytes(b"x")
    (repo / "model.pt").write_bytes(b"x")
    subprocess.run([*git, "add", "-f", "tracked.log"], check=True)
    # A hostile .git/config: git must not run this (core.fsmonitor is forced off).
    marker = tmp_path / "fsmonitor-ran"
    with (repo / ".git" / "config").open("a") as handle:
        handle.write(f"[core]\n\tfsmonitor = touch {marker}\n")
    listing = walk([repo], root=repo, default_excludes=True, gitignore=True)
    assert sorted(e.rel for e in listing.files) == [".gitignore", "model.pt", "tracked.log"]
    assert {e.rel: e.note for e in listing.excluded} == {
        ".git": "default exclude",
        "build": "ignored by git",
        "run.log": "ignored by git",
    }
    assert not marker.exists()
    # outside a work tree nothing is ignored
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / ".gitignore").write_text("*.pt\n")
    (plain / "m.pt").write_bytes(b"x")
    assert [e.rel for e in walk([plain], gitignore=True).files] == [".gitignore", "m.pt"]


def test_skip_and_policy_exclude(tmp_path: Path) -> None:
    (tmp_path / "third_party").mkdir()
    (tmp_path / "third_party" / "x.pt").write_bytes(b"x")
    (tmp_path / "modelguard.lock").write_text("")
    (tmp_path / "m.pt").write_bytes(b"x")
    listing = walk(
        [tmp_path],
        root=tmp_path,
        skip=[tmp_path / "modelguard.lock"],
        exclude=lambda shown: shown.startswith("third_party"),
    )
    assert [e.rel for e in listing.files] == ["m.pt"]
    assert [(e.rel, e.note) for e in listing.excluded] == [("third_party", "excluded by policy")]


def test_missing_and_broken_named_paths(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    listing = walk([tmp_path / "absent", tmp_path / "dangling"], root=tmp_path)
    assert [(e.display, e.note) for e in listing.missing] == [
        ("absent", "missing"),
        ("dangling", "broken symbolic link"),
    ]


def test_unreadable_folder_is_reported(unprivileged: Unprivileged) -> None:
    home = unprivileged.folder()
    locked = home / "locked"
    locked.mkdir()
    (locked / "m.pt").write_bytes(b"x")
    locked.chmod(0o000)
    out = unprivileged.python(
        "from modelguard.files import walk; import sys\n"
        f"l = walk([{str(home)!r}], root=__import__('pathlib').Path({str(home)!r}))\n"
        "print([(e.rel, e.kind.name) for e in l.entries])"
    )
    assert out.strip() == "[('locked', 'UNREADABLE')]"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", "climbs out of its folder with '..'"),
        ("a/../../x", "climbs out of its folder with '..'"),
        ("a\\..\\x", "climbs out of its folder with '..'"),
        ("/etc/passwd", "is an absolute path"),
        ("\\\\server\\share", "is an absolute path"),
        ("C:\\Windows", "names a drive (an absolute Windows path)"),
        ("c:rel", "names a drive (an absolute Windows path)"),
        ("a..b/c", None),
        ("sub/dir/x.bin", None),
        ("..foo", None),
    ],
)
def test_leaves_folder(name: str, problem: str | None) -> None:
    assert leaves_folder(name) == problem


def test_is_under() -> None:
    assert is_under(".git/config", [".git"])
    assert is_under(".git", [".git"])
    assert not is_under(".gitfoo/x", [".git"])
    assert not is_under("sub/.git/x", [".git"])


def test_display_path(tmp_path: Path) -> None:
    assert display_path(tmp_path / "a" / "b", tmp_path) == "a/b"
    assert display_path("/elsewhere/x", tmp_path) == "/elsewhere/x"


def test_user_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELGUARD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "modelguard"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "modelguard"
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path / "mine"))
    assert user_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", "rel/cache")
    with pytest.raises(UsageError, match="MODELGUARD_CACHE_DIR='rel/cache': expected an absolute"):
        user_cache_dir()

"""Sources: turn what the user typed (https://, a zoo readme) into a download plan; vet names.

A plan lists remote files with the digests their publisher vouches for: a zoo
readme's sha1 or a digest the user passed (the Hub's plans are made in
:mod:`modelguard.supply.hub`). Nothing here downloads model bytes.

Names come from the source and are hostile input: :func:`name_problem` says why
a name can never be placed, :func:`needs_opt_in` why one is refused unless the
caller opts in (dotfiles, policy files, hooks).
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from modelguard.errors import UsageError
from modelguard.files import leaves_folder

MAX_README_BYTES = 1 << 20
_NAME_MAX_BYTES = 255
# Files that steer modelguard itself or run code when a tool starts in the folder.
POLICY_FILES = frozenset({"pyproject.toml", "modelguard.lock"})
HOOK_FILES = frozenset({"conftest.py", "sitecustomize.py", "usercustomize.py"})
# Unicode categories that have no business in a file name: control and format
# characters (newlines, bidi overrides, zero-width joiners) and line separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch. ``name`` is its POSIX path below the destination folder."""

    name: str
    source: str  # canonical source recorded in the lock and shown in messages
    url: str | None = None  # http(s) files
    hf_filename: str | None = None  # Hub files: path inside the repo
    size: int | None = None
    expected: dict[str, str] = field(default_factory=dict)  # sha256 / sha1 / git-blob-sha1
    vouched_by: str = ""  # who published the expected digest, for messages


@dataclass(frozen=True)
class DownloadPlan:
    source: str
    files: tuple[RemoteFile, ...]
    revision: str | None = None  # pinned commit for Hub sources
    hf_repo: str | None = None


def _is_git_dir(part: str) -> bool:
    # What git itself refuses in a tree (verify_path): ".git" in any case, with the
    # trailing dots and spaces Windows drops, and its 8.3 short name.
    return part.rstrip(". ").lower() in (".git", "git~1")


def name_problem(name: str) -> str | None:
    """Why a file name from a source can never be placed, or None when it may be."""
    if not name:
        return "is empty"
    bad = next((c for c in name if unicodedata.category(c) in _INVISIBLE), None)
    if bad is not None:
        return f"contains the control character U+{ord(bad):04X}"
    if "\\" in name:
        return "contains a backslash (a folder separator on Windows)"
    leaves = leaves_folder(name)
    if leaves is not None:
        return leaves
    parts = name.split("/")
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' path component"
    if any(_is_git_dir(part) for part in parts):
        return "is inside a .git folder (git would run its hooks and configuration)"
    if any(len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX_BYTES for part in parts):
        return f"has a component longer than {_NAME_MAX_BYTES} bytes"
    return None


def needs_opt_in(name: str) -> str | None:
    """Why a (safe) name is refused unless the caller allows dotfiles, or None."""
    parts = PurePosixPath(name).parts
    if any(part.startswith(".") for part in parts):
        return "is a dotfile or inside a dot-folder (repository or tool configuration)"
    last = parts[-1]
    if last in POLICY_FILES:
        return "is a policy file (it would steer modelguard in this folder)"
    if last in HOOK_FILES or last.endswith(".pth"):
        return "is a hook file (Python or pytest runs it when started in this folder)"
    return None


def is_zoo_readme(source: str) -> bool:
    """A local readme file, or a URL to a gist / markdown readme."""
    if source.startswith(("http://", "https://")):
        parsed = urllib.parse.urlsplit(source)
        host = parsed.hostname or ""
        return host.startswith("gist.") or parsed.path.lower().endswith((".md", "/readme"))
    return True  # any local path names a readme


@dataclass(frozen=True)
class ZooReadme:
    name: str
    caffemodel: str
    caffemodel_url: str
    sha1: str
    license: str | None


def parse_zoo_readme(text: str, where: str) -> ZooReadme:
    """Parse Caffe Model Zoo front matter (``---`` / ``key: value`` lines / ``---``).

    Hand-parsed on purpose: only flat ``key: value`` pairs are meaningful, and a
    YAML loader on downloaded text would be more attack surface than this needs.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise UsageError(f"{where}: no front matter (the readme must start with a '---' line)")
    values: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key.strip():
            values[key.strip().lower()] = value.strip().strip("'\"")
    else:
        raise UsageError(f"{where}: front matter is not closed by a '---' line")
    missing = [k for k in ("caffemodel", "caffemodel_url", "sha1") if not values.get(k)]
    if missing:
        raise UsageError(f"{where}: front matter lacks {', '.join(missing)}")
    sha1 = values["sha1"].lower()
    if not re.fullmatch(r"[0-9a-f]{40}", sha1):
        raise UsageError(f"{where}: sha1 {values['sha1']!r} is not 40 hex digits")
    return ZooReadme(
        name=values.get("name", values["caffemodel"]),
        caffemodel=values["caffemodel"],
        caffemodel_url=values["caffemodel_url"],
        sha1=sha1,
        license=values.get("license"),
    )


def zoo_plan(readme: ZooReadme, source: str) -> DownloadPlan:
    remote = RemoteFile(
        name=readme.caffemodel,
        source=readme.caffemodel_url,
        url=readme.caffemodel_url,
        expected={"sha1": readme.sha1},
        vouched_by=f"zoo readme {source}",
    )
    return DownloadPlan(source=source, files=(remote,))


def read_local_readme(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_README_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file, and not an hf:// or https:// source") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_README_BYTES:
        raise UsageError(f"{path}: larger than {MAX_README_BYTES} bytes; not a zoo readme")
    return data.decode("utf-8", errors="replace")


def check_url(url: str, allow_http: bool) -> None:
    """A URL modelguard may request: https, or http when the caller allows it."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "http" and not allow_http:
        raise UsageError(f"{url}: plain http is not allowed; `allow_http` accepts it")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"{url}: not an http(s) URL")


def display_url(url: str) -> str:
    """The URL without credentials, query or fragment (signed URLs carry secrets there)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_plan(url: str, expected: dict[str, str]) -> DownloadPlan:
    last = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not last:
        raise UsageError(f"{url}: the URL names no file")
    remote = RemoteFile(
        name=last,
        source=url,
        url=url,
        expected=dict(expected),
        vouched_by="the expected digest given" if expected else "",
    )
    return DownloadPlan(source=url, files=(remote,))

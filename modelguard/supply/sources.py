"""Sources: turn what the user typed (hf://, https://, a zoo readme) into a download plan.

A plan lists remote files with the digests their publisher vouches for:
the Hub's LFS sha256 or git blob id, a zoo readme's sha1, or a digest the user
passed. Nothing here downloads model bytes; the Hub is asked only for metadata.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from modelguard.errors import FetchError, MissingExtra, UsageError

HF_SCHEME = "hf://"
_HF_RE = re.compile(r"^hf://(?P<repo>[^/@\s]+/[^/@\s]+)(?:@(?P<rev>[^/\s]+))?(?:/(?P<path>.*))?$")
MAX_README_BYTES = 1 << 20


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


def safe_name(name: str, source: str) -> str:
    """Reject names that would escape the destination folder."""
    pure = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\0" in name
        or pure.is_absolute()
        or any(part in ("..", "") for part in name.split("/"))
    ):
        raise FetchError(f"{source}: refusing unsafe file name {name!r}")
    return pure.as_posix()


def is_hf(source: str) -> bool:
    return source.startswith(HF_SCHEME)


def is_zoo_readme(source: str) -> bool:
    """A local readme file, or a URL to a gist / markdown readme."""
    if source.startswith(("http://", "https://")):
        parsed = urllib.parse.urlsplit(source)
        host = parsed.hostname or ""
        return host.startswith("gist.") or parsed.path.lower().endswith((".md", "/readme"))
    return True  # any local path names a readme


# ---- zoo readmes -----------------------------------------------------------------------


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
    name = safe_name(readme.caffemodel, source)
    remote = RemoteFile(
        name=name,
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


# ---- plain URLs ------------------------------------------------------------------------


def check_url(url: str, allow_http: bool) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "http" and not allow_http:
        raise UsageError(f"{url}: plain http is not allowed; pass --allow-http to accept it")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"{url}: not an http(s) URL")


def url_plan(url: str, expected: dict[str, str]) -> DownloadPlan:
    last = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not last:
        raise UsageError(f"{url}: the URL names no file")
    remote = RemoteFile(
        name=safe_name(last, url),
        source=url,
        url=url,
        expected=dict(expected),
        vouched_by="--sha256/--sha1" if expected else "",
    )
    return DownloadPlan(source=url, files=(remote,))


# ---- Hugging Face Hub ------------------------------------------------------------------


@dataclass(frozen=True)
class HfSource:
    repo: str
    revision: str | None
    path: str | None


def parse_hf(source: str) -> HfSource:
    match = _HF_RE.match(source)
    if match is None:
        raise UsageError(f"{source}: expected hf://owner/repo[@revision][/path]")
    path = (match.group("path") or "").strip("/") or None
    return HfSource(match.group("repo"), match.group("rev"), path)


def hf_endpoint() -> str | None:
    """HF_ENDPOINT as set now (huggingface_hub reads it only once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def hf_plan(source: str, token: str | None = None) -> DownloadPlan:
    """Resolve the revision to its commit and list files with the Hub's own digests."""
    parsed = parse_hf(source)
    try:
        import httpx2
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
    except ModuleNotFoundError:
        raise MissingExtra(
            "fetching from the Hugging Face Hub", "supply", "huggingface_hub"
        ) from None
    api = HfApi(endpoint=hf_endpoint(), token=token)
    try:
        info = api.model_info(parsed.repo, revision=parsed.revision, files_metadata=True)
    except HfHubHTTPError as exc:
        raise FetchError(f"{source}: the Hub refused the metadata request: {exc}") from None
    except (httpx2.HTTPError, OSError) as exc:
        raise FetchError(f"{source}: cannot reach the Hub at {api.endpoint}: {exc}") from None
    commit = info.sha
    if not commit or not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise FetchError(f"{source}: the Hub did not resolve the revision to a commit sha")
    files: list[RemoteFile] = []
    for sibling in info.siblings or []:
        name = sibling.rfilename
        if parsed.path and not (name == parsed.path or name.startswith(parsed.path + "/")):
            continue
        files.append(_hf_remote(parsed, commit, name, sibling))
    if not files:
        what = f"{parsed.path!r} in " if parsed.path else ""
        raise FetchError(f"{source}: no file {what}{parsed.repo} at {commit}")
    return DownloadPlan(source=source, files=tuple(files), revision=commit, hf_repo=parsed.repo)


def _hf_remote(parsed: HfSource, commit: str, name: str, sibling: Any) -> RemoteFile:
    canonical = f"hf://{parsed.repo}@{commit}/{name}"
    # Below a requested folder, keep paths relative to it; a single file keeps its name.
    local = name
    if parsed.path and name != parsed.path:
        local = name[len(parsed.path) + 1 :]
    elif parsed.path:
        local = PurePosixPath(name).name
    expected: dict[str, str] = {}
    vouched = ""
    size = sibling.size
    if sibling.lfs is not None:
        expected["sha256"] = str(sibling.lfs.sha256).lower()
        size = sibling.lfs.size
        vouched = "Hub LFS sha256"
    elif sibling.blob_id:
        expected["git-blob-sha1"] = str(sibling.blob_id).lower()
        vouched = "Hub git blob id"
    return RemoteFile(
        name=safe_name(local, canonical),
        source=canonical,
        hf_filename=name,
        size=size,
        expected=expected,
        vouched_by=vouched,
    )

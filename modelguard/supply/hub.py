"""Everything about the Hugging Face Hub: ``hf://`` sources, plans, pinned downloads, its cache.

Only huggingface_hub's public API is used (``HfApi.model_info``,
``hf_hub_download``, ``snapshot_download``, ``hf_hub_url``, ``get_token`` and
the error classes exported by ``huggingface_hub.utils``, where 0.24 defines
them and 1.x/2.x re-export them), so every release from 0.24 on works; the
tests run against the lowest (``tests/supply/test_hub_versions.py``) and the
newest. The package is imported in one place, :func:`require_hub`, which turns
its absence into :class:`~modelguard.errors.MissingExtra`.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from modelguard.errors import FetchError, MissingExtra, UsageError
from modelguard.supply.sources import DownloadPlan, RemoteFile

HF_SCHEME = "hf://"
DEFAULT_ENDPOINT = "https://huggingface.co"
_HF_RE = re.compile(r"^hf://(?P<repo>[^/@\s]+/[^/@\s]+)(?:@(?P<rev>[^/\s]+))?(?:/(?P<path>.*))?$")
_COMMIT = re.compile(r"[0-9a-f]{40}")

PathLike = str | os.PathLike[str]


def require_hub(feature: str) -> ModuleType:
    """The huggingface_hub package, or MissingExtra naming ``feature`` and the extra."""
    try:
        import huggingface_hub
        import huggingface_hub.utils
    except ModuleNotFoundError:
        raise MissingExtra(feature, "supply", "huggingface_hub") from None
    return huggingface_hub


def _hub_errors(hub: ModuleType) -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises for HTTP and network failures, through its public classes.

    ``HfHubHTTPError`` derives from the HTTP client's own base error (requests'
    before 1.0, httpx's after), which also covers connection errors; taking it from
    there means modelguard never imports (or declares) the client itself.
    """
    http_error: type[BaseException] = hub.utils.HfHubHTTPError
    client_bases = tuple(
        b for b in http_error.__mro__[1:] if b not in (Exception, BaseException, object)
    )
    return (http_error, *client_bases, hub.utils.EntryNotFoundError, OSError)


def is_hf(source: str) -> bool:
    return source.startswith(HF_SCHEME)


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


def hub_token(token: str | None) -> str | None:
    """The token given, else huggingface_hub's (HF_TOKEN or the saved login)."""
    if token:
        return token
    hub = require_hub("reading from the Hugging Face Hub")
    saved: str | None = hub.get_token()
    return saved


def file_url(plan: DownloadPlan, remote: RemoteFile) -> str:
    """The ``/resolve/`` URL of one planned file, pinned to the plan's commit."""
    hub = require_hub("reading from the Hugging Face Hub")
    url: str = hub.hf_hub_url(
        plan.hf_repo,
        remote.hf_filename or remote.name,
        revision=plan.revision,
        endpoint=hf_endpoint() or DEFAULT_ENDPOINT,
    )
    return url


def hf_plan(source: str, token: str | None = None) -> DownloadPlan:
    """Resolve the revision to its commit and list files with the Hub's own digests.

    Names are taken as the Hub lists them; the caller vets them before placing
    anything (:func:`modelguard.supply.sources.name_problem`).
    """
    parsed = parse_hf(source)
    hub = require_hub("fetching from the Hugging Face Hub")
    api = hub.HfApi(endpoint=hf_endpoint(), token=token)
    try:
        info = api.model_info(parsed.repo, revision=parsed.revision, files_metadata=True)
    except hub.utils.HfHubHTTPError as exc:
        raise FetchError(f"{source}: the Hub refused the metadata request: {exc}") from None
    except _hub_errors(hub) as exc:
        raise FetchError(f"{source}: cannot reach the Hub at {api.endpoint}: {exc}") from None
    commit = info.sha
    if not commit or not _COMMIT.fullmatch(commit):
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
        # huggingface_hub < 0.25 gives a dict here, later releases a dataclass.
        lfs = sibling.lfs
        sha = lfs["sha256"] if isinstance(lfs, dict) else lfs.sha256
        expected["sha256"] = str(sha).lower()
        size = lfs["size"] if isinstance(lfs, dict) else lfs.size
        vouched = "Hub LFS sha256"
    elif sibling.blob_id:
        expected["git-blob-sha1"] = str(sibling.blob_id).lower()
        vouched = "Hub git blob id"
    return RemoteFile(
        name=local,
        source=canonical,
        hf_filename=name,
        size=size,
        expected=expected,
        vouched_by=vouched,
    )


def cache_dir(cache: PathLike | None) -> str | None:
    """The HF cache folder: the one given, HF_HUB_CACHE, HF_HOME/hub, or the library's default."""
    if cache is not None:
        return os.fspath(cache)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def download(
    plan: DownloadPlan, token: str | None, cache: PathLike | None, timeout: float
) -> dict[str, Path]:
    """Download through huggingface_hub (its cache, auth, endpoint), pinned to the commit.

    Returns the cached file of each planned name; bytes are verified by the caller.
    """
    hub = require_hub("fetching from the Hugging Face Hub")
    # huggingface_hub draws its own progress bars (HF_HUB_DISABLE_PROGRESS_BARS=1 hides them).
    repo = plan.hf_repo or ""
    folder = cache_dir(cache)
    try:
        if len(plan.files) == 1:
            only = plan.files[0]
            path = hub.hf_hub_download(
                repo,
                only.hf_filename or only.name,
                revision=plan.revision,
                cache_dir=folder,
                endpoint=hf_endpoint(),
                token=token,
                etag_timeout=timeout,
            )
            return {only.name: Path(path)}
        root = hub.snapshot_download(
            repo,
            allow_patterns=[f.hf_filename or f.name for f in plan.files],
            revision=plan.revision,
            cache_dir=folder,
            endpoint=hf_endpoint(),
            token=token,
            etag_timeout=timeout,
        )
    except _hub_errors(hub) as exc:
        raise FetchError(f"{plan.source}: download from the Hub failed: {exc}") from None
    return {f.name: Path(root) / (f.hf_filename or f.name) for f in plan.files}


def evict(cached: Path) -> None:
    """Drop a cached Hub file that failed verification, so the next fetch downloads it afresh."""
    with contextlib.suppress(OSError):
        blob = cached.resolve()
        cached.unlink()
        if blob != cached and blob.parent.name == "blobs":
            blob.unlink()

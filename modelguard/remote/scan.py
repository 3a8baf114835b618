"""Scan remote model files without downloading all of them.

``hf://owner/repo[@revision][/path]`` is resolved to a commit and a file list by
the provenance subsystem (:func:`modelguard.supply.sources.hf_plan`);
``https://…/model.pt`` is one file. Each file is probed with a Range request:

* the server honours ranges: the scanners read the file through
  :class:`~modelguard.remote.http_range.RangeFile`, so a torch zip costs its
  central directory and pickle members, not its tensor data;
* it does not (HTTP 200 to a range request): the response is downloaded whole
  into a temporary file (hashed while written, size-capped, by
  :func:`modelguard.supply.download.stage_stream`), scanned as a local file,
  and deleted.

Findings name the file by its canonical source (``hf://owner/repo@<commit>/f``
or the URL without its query string).
"""

from __future__ import annotations

import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, cast

from modelguard.errors import FetchError, MissingExtra, UsageError
from modelguard.files import Target
from modelguard.findings import ArtifactResult, InputError, Report
from modelguard.policy import Policy
from modelguard.remote.http_range import (
    RangeFile,
    RemoteReadError,
    TransferStats,
    probe,
    same_origin,
)
from modelguard.scan.context import Input
from modelguard.scan.engine import scan_file, scan_input

HF_SCHEME = "hf://"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteOptions:
    allow_http: bool = False  # plain http:// URLs (loopback tests, internal mirrors)
    timeout: float = 60.0
    max_download_bytes: int = 64 * 1024**3  # cap for the full-download fallback
    hf_token: str | None = None  # default: huggingface_hub's configured token


@dataclass
class RemoteScan:
    """One remote file's result and what reading it cost."""

    source: str
    result: ArtifactResult | InputError
    method: Literal["ranges", "download", "failed"]
    size: int | None
    stats: TransferStats = field(default_factory=TransferStats)


def _display_url(url: str) -> str:
    """The URL without query or fragment (signed URLs carry credentials there)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def scan_url(
    url: str,
    display: str,
    policy: Policy,
    options: RemoteOptions,
    headers: Mapping[str, str] | None = None,
) -> RemoteScan:
    """Scan one http(s) file: by ranges when the server allows, else downloaded whole."""
    headers = dict(headers or {})
    stats = TransferStats()
    try:
        found, first_block, response = probe(url, headers, options.timeout, stats)
    except RemoteReadError as exc:
        return RemoteScan(display, InputError(display, str(exc)), "failed", None, stats)
    if response is None:
        if not same_origin(url, found.url):
            # Redirected to a CDN: its signed URL is the credential; keep ours to ourselves.
            headers.pop("Authorization", None)
        remote = RangeFile(
            found, headers=headers, timeout=options.timeout, stats=stats, first_block=first_block
        )
        size = found.size or 0
        inp = Input(stream=cast(BinaryIO, remote), size=size, name=display)
        return RemoteScan(display, scan_input(inp, policy), "ranges", size, stats)
    return _scan_downloaded(response, display, policy, options, stats, found.size)


def _scan_downloaded(
    response: object,
    display: str,
    policy: Policy,
    options: RemoteOptions,
    stats: TransferStats,
    declared: int | None,
) -> RemoteScan:
    from modelguard.supply.download import DownloadOptions, discard, stage_stream

    if declared is not None and declared > options.max_download_bytes:
        cast(BinaryIO, response).close()
        message = (
            f"the server does not support range requests and the file ({declared:,} bytes) "
            f"is over the download cap of {options.max_download_bytes:,} bytes"
        )
        return RemoteScan(display, InputError(display, message), "failed", declared, stats)

    def chunks() -> Iterator[bytes]:
        stream = cast(BinaryIO, response)
        with stream:
            while True:
                try:
                    chunk = stream.read(_CHUNK)
                except OSError as exc:
                    raise FetchError(f"{display}: connection lost ({exc})") from None
                if not chunk:
                    return
                stats.bytes_received += len(chunk)
                yield chunk

    with tempfile.TemporaryDirectory(prefix="modelguard-remote-") as folder:
        name = Path(urllib.parse.urlsplit(display).path).name or "download"
        try:
            staged = stage_stream(
                chunks(),
                name,
                Path(folder) / "file",
                algorithms=("sha256",),
                git_blob_size=None,
                options=DownloadOptions(max_bytes=options.max_download_bytes),
                total=declared,
            )
        except FetchError as exc:
            return RemoteScan(display, InputError(display, str(exc)), "failed", declared, stats)
        if declared is not None and staged.size != declared:
            discard(staged)
            message = f"server sent {staged.size} of {declared} bytes"
            return RemoteScan(display, InputError(display, message), "failed", declared, stats)
        try:
            result = scan_file(Target(fs_path=str(staged.temp), display=display), policy)
        finally:
            discard(staged)
    return RemoteScan(display, result, "download", staged.size, stats)


def _hf_scans(source: str, policy: Policy, options: RemoteOptions) -> list[RemoteScan]:
    from modelguard.supply.sources import hf_endpoint, hf_plan

    try:
        from huggingface_hub import get_token, hf_hub_url
    except ModuleNotFoundError:
        raise MissingExtra("scanning hf:// sources", "supply", "huggingface_hub") from None
    token = options.hf_token or get_token()
    plan = hf_plan(source, token=token)
    assert plan.hf_repo is not None and plan.revision is not None  # hf_plan always sets them
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = hf_endpoint() or DEFAULT_HF_ENDPOINT
    scans = []
    for remote in plan.files:
        assert remote.hf_filename is not None
        url = hf_hub_url(
            plan.hf_repo, remote.hf_filename, revision=plan.revision, endpoint=endpoint
        )
        scans.append(scan_url(url, remote.source, policy, options, headers))
    return scans


def scan_remote_sources(
    sources: Sequence[str], policy: Policy, options: RemoteOptions | None = None
) -> tuple[Report, list[RemoteScan]]:
    """Scan ``hf://`` and ``http(s)://`` sources; returns the report and transfer details.

    Raises:
        UsageError: a plain http:// URL without ``allow_http``, or a malformed source.
        FetchError: the Hub could not list the repository.
        MissingExtra: hf:// needs huggingface_hub (the ``supply`` extra).
    """
    options = options or RemoteOptions()
    scans: list[RemoteScan] = []
    for source in sources:
        if source.startswith(HF_SCHEME):
            scans.extend(_hf_scans(source, policy, options))
            continue
        from modelguard.supply.sources import check_url

        check_url(source, options.allow_http)
        if urllib.parse.urlsplit(source).username is not None:
            raise UsageError(f"{_display_url(source)}: credentials in URLs are not accepted")
        scans.append(scan_url(source, _display_url(source), policy, options))
    artifacts = tuple(s.result for s in scans if isinstance(s.result, ArtifactResult))
    errors = tuple(s.result for s in scans if isinstance(s.result, InputError))
    return Report(artifacts=artifacts, errors=errors), scans

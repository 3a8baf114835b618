"""Scan remote model files without downloading all of them.

``hf://owner/repo[@revision][/path]`` is resolved to a commit and a file list by
the provenance subsystem (:func:`modelguard.supply.hub.hf_plan`);
``https://…/model.pt`` is one file. Each file is probed with a Range request:

* the server honours ranges: the scanners read the file through
  :class:`~modelguard.remote.http_range.RangeFile`, so a torch zip costs its
  central directory and pickle members, not its tensor data;
* it does not (HTTP 200 to a range request): the response is downloaded whole
  into a temporary file (hashed while written, size-capped, by
  :func:`modelguard.supply.download.stage_stream`), scanned as a local file,
  and deleted.

Findings name the file by its canonical source (``hf://owner/repo@<commit>/f``
or the URL without its query string). Every result says what it vouches for
(MG416): the sha256 of the bytes read when the file was read whole, else the
ETag and the digest the Hub's metadata publishes; a range scan cannot know the
digest of bytes it never read, and a server may show a scanner other bytes than
a loader (see the README). Redirects follow :mod:`modelguard.supply.http`: no
downgrade to plain http, every hop in the report (MG413).
"""

from __future__ import annotations

import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Literal, cast

from modelguard.errors import FetchError, UsageError
from modelguard.files import Target
from modelguard.findings import ArtifactResult, Finding, InputError, Location, Report
from modelguard.policy import Policy
from modelguard.remote.http_range import (
    Probe,
    RangeFetch,
    RangeFile,
    RemoteReadError,
    TransferStats,
    probe,
)
from modelguard.remote.throttle import RetryPolicy, Throttle, throttle_for
from modelguard.rules import provenance as R
from modelguard.scan.context import Input
from modelguard.scan.engine import scan_file, scan_input
from modelguard.supply import hub
from modelguard.supply.http import InsecureRedirect, describe, same_origin
from modelguard.supply.sources import RemoteFile, check_url, display_url, name_problem

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteOptions:
    allow_http: bool = False  # plain http:// URLs (loopback tests, internal mirrors)
    timeout: float = 60.0
    max_download_bytes: int = 64 * 1024**3  # cap for the full-download fallback
    hf_token: str | None = None  # default: huggingface_hub's configured token
    retry: RetryPolicy | None = None  # per-host pacing and back-off (registry scans)

    def throttle(self) -> Throttle | None:
        """This process's shared throttle for ``retry``, or None when unpaced."""
        return None if self.retry is None else throttle_for(self.retry)


@dataclass
class RemoteScan:
    """One remote file's result and what reading it cost."""

    source: str
    result: ArtifactResult | InputError
    method: Literal["ranges", "download", "failed"]
    size: int | None
    stats: TransferStats = field(default_factory=TransferStats)
    # What the result vouches for: {"sha256": …} of the bytes read whole, or the
    # server's {"etag": …} and the publisher's digests for a range scan.
    digests: dict[str, str] = field(default_factory=dict)


def _with(
    result: ArtifactResult | InputError, found: Sequence[Finding]
) -> ArtifactResult | InputError:
    if isinstance(result, InputError) or not found:
        return result
    return replace(result, findings=(*result.findings, *found))


def _hop_findings(display: str, stats: TransferStats) -> list[Finding]:
    if len(stats.hops) < 2:
        return []
    chain = describe(stats.hops)
    return [
        R.DOWNLOAD_REDIRECTED.finding(
            f"{display} was redirected: {chain}", Location(display), evidence=chain
        )
    ]


def check_source_url(url: str, allow_http: bool) -> None:
    """Raises UsageError for a URL modelguard will not fetch (http without opt-in, credentials)."""
    check_url(url, allow_http)
    if urllib.parse.urlsplit(url).username is not None:
        raise UsageError(f"{display_url(url)}: credentials in URLs are not accepted")


def scan_url(
    url: str,
    display: str,
    policy: Policy,
    options: RemoteOptions,
    headers: Mapping[str, str] | None = None,
    published: RemoteFile | None = None,
) -> RemoteScan:
    """Scan one http(s) file: by ranges when the server allows, else downloaded whole.

    ``published`` is the Hub's record of the file (its LFS sha256 or git blob id),
    which the result names and, for a file read whole, checks.
    """
    headers = dict(headers or {})
    stats = TransferStats()
    throttle = options.throttle()
    try:
        found, first_block, response = probe(
            url, headers, options.timeout, stats, allow_http=options.allow_http, throttle=throttle
        )
    except InsecureRedirect as exc:
        finding = R.INSECURE_REDIRECT.finding(
            f"{display}: {exc}", Location(display), evidence=describe(exc.hops)
        )
        refused = ArtifactResult(display, "unknown", 0, findings=(finding,))
        return RemoteScan(display, refused, "failed", None, stats)
    except RemoteReadError as exc:
        return RemoteScan(display, InputError(display, str(exc)), "failed", None, stats)
    if response is None:
        if not same_origin(url, found.url):
            # Redirected to a CDN: its signed URL is the credential; keep ours to ourselves.
            headers.pop("Authorization", None)
        remote = RangeFile(
            found,
            headers=headers,
            timeout=options.timeout,
            stats=stats,
            first_block=first_block,
            allow_http=options.allow_http,
            throttle=throttle,
        )
        return _scan_ranges(remote, found, display, policy, published)
    scanned = _scan_downloaded(response, display, policy, options, stats, found.size, published)
    scanned.result = _with(scanned.result, policy.partition(_hop_findings(display, stats))[0])
    return scanned


def _scan_ranges(
    remote: RangeFile, found: Probe, display: str, policy: Policy, published: RemoteFile | None
) -> RemoteScan:
    size = found.size or 0
    inp = Input(stream=cast(BinaryIO, remote), size=size, name=display)
    result = scan_input(inp, policy)
    stats = remote.stats
    digests = _range_digests(found, published)
    basis = _range_basis(display, found, stats, digests, published)
    notes = policy.partition([*_hop_findings(display, stats), basis])[0]
    return RemoteScan(display, _with(result, notes), "ranges", size, stats, digests)


def scan_ranged(
    fetch: RangeFetch,
    url: str,
    size: int,
    display: str,
    policy: Policy,
    options: RemoteOptions,
    etag: str | None = None,
) -> RemoteScan:
    """Scan a file another transport reads by ranges (an fsspec object-store file).

    ``fetch(first, last)`` returns those bytes; it must read one fixed version
    of the file (the caller pins it by ETag or version id) and raise ``OSError``
    on failure, which becomes an InputError. ``url`` names the host for pacing.
    """
    found = Probe(url=url, size=size, ranges=True, etag=etag)
    remote = RangeFile(found, timeout=options.timeout, throttle=options.throttle(), fetch=fetch)
    return _scan_ranges(remote, found, display, policy, None)


def _range_digests(found: Probe, published: RemoteFile | None) -> dict[str, str]:
    digests = dict(published.expected) if published is not None else {}
    if found.etag:
        digests["etag"] = found.etag
    return digests


def _range_basis(
    display: str,
    found: Probe,
    stats: TransferStats,
    digests: Mapping[str, str],
    published: RemoteFile | None,
) -> Finding:
    vouched = ""
    if published is not None and published.expected:
        names = ", ".join(f"{k} {v}" for k, v in published.expected.items())
        vouched = f"; {published.vouched_by} publishes {names}, which this scan could not check"
    etag = f"the server's ETag {found.etag}" if found.etag else "no ETag"
    return R.REMOTE_SCAN_BASIS.finding(
        f"scanned by range requests: {stats.bytes_scanned:,} of {found.size or 0:,} bytes "
        f"read, identified by {etag}{vouched}. The digest of the whole file is not known, "
        "and a server can show a scanner other bytes than a loader: fetch the file with "
        "modelguard fetch to use exactly the bytes scanned",
        Location(display),
        evidence=", ".join(f"{k}:{v}" for k, v in digests.items()) or None,
    )


def _scan_downloaded(
    response: object,
    display: str,
    policy: Policy,
    options: RemoteOptions,
    stats: TransferStats,
    declared: int | None,
    published: RemoteFile | None,
) -> RemoteScan:
    from modelguard.supply.download import Destination, DownloadOptions, discard, stage_stream

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

    algorithms = ("sha256", "sha1") if published and "sha1" in published.expected else ("sha256",)
    blob_size = published.size if published and "git-blob-sha1" in published.expected else None
    with (
        tempfile.TemporaryDirectory(prefix="modelguard-remote-") as folder,
        Destination(Path(folder)) as dest,
    ):
        try:
            staged = stage_stream(
                chunks(),
                "file",
                dest,
                algorithms=algorithms,
                git_blob_size=blob_size,
                options=DownloadOptions(max_bytes=options.max_download_bytes),
                total=declared,
            )
        except FetchError as exc:
            return RemoteScan(display, InputError(display, str(exc)), "failed", declared, stats)
        try:
            if declared is not None and staged.size != declared:
                message = f"server sent {staged.size} of {declared} bytes"
                return RemoteScan(display, InputError(display, message), "failed", declared, stats)
            result = scan_file(Target(fs_path=staged.readable_path, display=display), policy)
        finally:
            discard(staged)
    basis = [
        R.REMOTE_SCAN_BASIS.finding(
            f"downloaded whole and scanned: sha256 {staged.digests['sha256']} "
            f"({staged.size:,} bytes); fetch with this sha256 pinned to place exactly these bytes",
            Location(display),
            evidence=f"sha256:{staged.digests['sha256']}",
        ),
        *_published_mismatch(display, staged.digests, published),
    ]
    kept = policy.partition(basis)[0]
    digests = {"sha256": staged.digests["sha256"]}
    return RemoteScan(display, _with(result, kept), "download", staged.size, stats, digests)


def _published_mismatch(
    display: str, digests: Mapping[str, str], published: RemoteFile | None
) -> list[Finding]:
    """A file read whole must be the one the Hub's metadata vouches for."""
    if published is None:
        return []
    for algorithm, want in published.expected.items():
        got = digests.get(algorithm)
        if got is not None and got != want:
            return [
                R.DIGEST_MISMATCH.finding(
                    f"{display}: the server sent bytes with {algorithm} {got}, but "
                    f"{published.vouched_by} publishes {want}",
                    Location(display),
                    evidence=f"{algorithm}:{got}",
                )
            ]
    return []


def _hf_scans(source: str, policy: Policy, options: RemoteOptions) -> list[RemoteScan]:
    token = hub.hub_token(options.hf_token)
    plan = hub.hf_plan(source, token=token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    scans = []
    for remote in plan.files:
        problem = name_problem(remote.name)
        if problem is not None:
            message = f"the Hub lists a file whose name {problem}: {remote.name!a}"
            shown = ascii(remote.source)[1:-1]
            scans.append(RemoteScan(shown, InputError(shown, message), "failed", None))
            continue
        url = hub.file_url(plan, remote)
        scans.append(scan_url(url, remote.source, policy, options, headers, published=remote))
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
        if hub.is_hf(source):
            scans.extend(_hf_scans(source, policy, options))
            continue
        check_source_url(source, options.allow_http)
        scans.append(scan_url(source, display_url(source), policy, options))
    artifacts = tuple(s.result for s in scans if isinstance(s.result, ArtifactResult))
    errors = tuple(s.result for s in scans if isinstance(s.result, InputError))
    return Report(artifacts=artifacts, errors=errors), scans

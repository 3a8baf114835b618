"""What a worker does: resolve pending sources, and scan artifacts by ranges.

These functions run wherever the executor puts them (this process, a pool
process, a Ray task): they take plain data, read the network, and return plain
data. They never touch the results store or the report; the driver does.

A batch is scanned by a few threads: the work is waiting on round trips, and
each thread's scan is independent (its own context, stream and findings).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modelguard.findings import ArtifactResult
from modelguard.policy import Policy
from modelguard.registry import hub, objectstore
from modelguard.registry.artifacts import (
    Artifact,
    Pending,
    RawScan,
    RepoRef,
    Resolved,
    ScanOutcome,
    url_identity,
)
from modelguard.remote.http_range import BLOCK_BYTES, RemoteReadError, head
from modelguard.remote.scan import RemoteOptions, RemoteScan, scan_ranged, scan_url
from modelguard.scan.cache import ruleset_digest
from modelguard.supply.http import InsecureRedirect
from modelguard.supply.sources import RemoteFile

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, sent once per task. Holds the Hub token, if any."""

    policy: Policy  # the scan settings only (limits, allowed globals); no suppressions
    remote: RemoteOptions
    endpoint: str  # the Hub
    storage_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    threads: int = 4

    def hub_headers(self) -> dict[str, str]:
        token = self.remote.hf_token
        return {"Authorization": f"Bearer {token}"} if token else {}


def scan_only(policy: Policy) -> Policy:
    """The part of a policy that changes a scan's raw findings."""
    return Policy(limits=policy.limits, allow_globals=policy.allow_globals)


def _threaded(func: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    if threads <= 1 or len(items) <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(func, items))


# ---- resolving ------------------------------------------------------------------------


def resolve_batch(config: WorkerConfig, items: Sequence[Pending]) -> list[Resolved]:
    return _threaded(lambda item: resolve(item, config), items, config.threads)


def resolve(item: Pending, config: WorkerConfig) -> Resolved:
    throttle = config.remote.throttle()
    if isinstance(item, RepoRef):
        from modelguard.remote.throttle import RetryPolicy, throttle_for

        return hub.resolve_repo(
            item,
            config.endpoint,
            config.remote.hf_token,
            throttle or throttle_for(RetryPolicy(retries=0)),
        )
    try:
        allow_http = config.remote.allow_http
        size, etag = head(
            item.url, {}, config.remote.timeout, allow_http=allow_http, throttle=throttle
        )
    except (RemoteReadError, InsecureRedirect):
        # No identity (some servers refuse HEAD): the file is scanned every run,
        # and the scan itself reports what is wrong (unreadable, an unsafe redirect).
        size, etag = None, None
    artifact = Artifact(
        display=item.display,
        group=item.group,
        kind="http",
        location=item.url,
        identity=url_identity(item.display, etag, size),
        size=size,
    )
    return Resolved(item.display, (artifact,))


# ---- scanning -------------------------------------------------------------------------


def scan_batch(config: WorkerConfig, artifacts: Sequence[Artifact]) -> list[ScanOutcome]:
    return _threaded(lambda artifact: scan_artifact(artifact, config), artifacts, config.threads)


def scan_artifact(artifact: Artifact, config: WorkerConfig) -> ScanOutcome:
    if artifact.kind == "fsspec":
        scanned, identity = _scan_object(artifact, config)
    else:
        headers = config.hub_headers() if artifact.hub else {}
        published = _published(artifact)
        scanned = scan_url(
            artifact.location, artifact.display, config.policy, config.remote, headers, published
        )
        if artifact.hub:
            # The URL is pinned to a commit; the Hub vouched for the file's digest.
            identity = artifact.identity
        else:
            identity = url_identity(artifact.display, scanned.digests.get("etag"), scanned.size)
    return _outcome(artifact, scanned, identity)


def _published(artifact: Artifact) -> RemoteFile | None:
    """The Hub's record of the file, for the scan's basis note (MG416) and digest checks."""
    if not artifact.hub:
        return None
    name = artifact.display.split("@", 1)[1].split("/", 1)[1]
    return RemoteFile(
        name=name.rsplit("/", 1)[-1],
        source=artifact.display,
        hf_filename=name,
        size=artifact.size,
        expected=dict(artifact.expected),
        vouched_by=artifact.vouched_by,
    )


def _outcome(artifact: Artifact, scanned: RemoteScan, identity: str | None) -> ScanOutcome:
    result = scanned.result
    stats = scanned.stats
    engine = ruleset_digest()
    if not isinstance(result, ArtifactResult):
        return ScanOutcome(
            artifact.display,
            None,
            result.message,
            None,
            stats.bytes_received,
            stats.requests,
            engine,
        )
    # Scanned under a policy without suppressions: every finding is raw.
    raw = RawScan(result.format, result.size, result.findings)
    return ScanOutcome(
        artifact.display, raw, None, identity, stats.bytes_received, stats.requests, engine
    )


def _scan_object(artifact: Artifact, config: WorkerConfig) -> tuple[RemoteScan, str | None]:
    from modelguard.findings import InputError

    options = config.storage_options.get(artifact.protocol, {})
    fs = objectstore.filesystem(artifact.protocol, options)
    try:
        # One metadata request (never an old listing's cached answer); reads are
        # then pinned to the version it names.
        fs.invalidate_cache(artifact.location)
        handle = fs.open(artifact.location, "rb", block_size=BLOCK_BYTES, cache_type="none")
    except OSError as exc:
        error = InputError(artifact.display, f"cannot open the object: {exc}")
        return RemoteScan(artifact.display, error, "failed", None), None
    with handle:
        current = objectstore.object_version(handle.details)
        same = current is not None and current == artifact.version
        bucket = artifact.location.split("/", 1)[0]
        host = f"{artifact.protocol}://{urllib.parse.quote(bucket)}"
        scanned = scan_ranged(
            _fetcher(handle, artifact.display),
            host,
            int(handle.size),
            artifact.display,
            config.policy,
            config.remote,
        )
    return scanned, artifact.identity if same else None


def _fetcher(handle: Any, display: str) -> Callable[[int, int], bytes]:
    def fetch(first: int, last: int) -> bytes:
        try:
            handle.seek(first)
            data: bytes = handle.read(last - first + 1)
        except OSError:
            raise
        except Exception as exc:
            raise RemoteReadError(f"{display}: {type(exc).__name__}: {exc}") from exc
        return data

    return fetch

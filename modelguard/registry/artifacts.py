"""The units of a registry scan: what to resolve, what to scan, and what came back.

All of these are plain frozen data: they cross process boundaries (a process
pool, Ray tasks) by pickling, and none of them carries a credential.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modelguard.findings import Finding


@dataclass(frozen=True)
class Artifact:
    """One remote file to scan.

    ``identity`` names its content as the listing vouched for it (the Hub's LFS
    sha256 or git blob id, an object store's ETag and version); None when the
    listing gave nothing usable, and then the file is always scanned.
    """

    display: str  # the report's path: hf://owner/repo@commit/file, s3://bucket/key, a URL
    group: str  # organisation or bucket prefix, for the summary table
    kind: Literal["http", "fsspec"]
    location: str  # the URL to GET, or the fsspec path (bucket/key)
    protocol: str = ""  # fsspec protocol: s3, gs
    identity: str | None = None
    size: int | None = None
    hub: bool = False  # a Hub URL: the Hub token goes with it
    version: str | None = None  # object stores: the version markers the listing saw
    expected: tuple[tuple[str, str], ...] = ()  # Hub: the published digests (sha256, git blob)
    vouched_by: str = ""  # who publishes ``expected``
    problem: str | None = None  # why it must not be read at all (an unsafe name)


@dataclass(frozen=True)
class RepoRef:
    """A Hub repository to list (``commit`` when the org listing already named it)."""

    repo: str
    revision: str | None
    path: str | None
    group: str
    commit: str | None = None


@dataclass(frozen=True)
class UrlRef:
    """A plain http(s) file, whose ETag a HEAD request tells before any byte is read."""

    url: str
    display: str
    group: str


Pending = RepoRef | UrlRef


@dataclass(frozen=True)
class Resolved:
    """What resolving one pending source gave: artifacts, or why it could not."""

    source: str
    artifacts: tuple[Artifact, ...] = ()
    error: str | None = None
    commit: str | None = None  # Hub: the commit the file list belongs to


@dataclass(frozen=True)
class RawScan:
    """A scan's result before policy: what the store keeps and the report is made of."""

    format: str
    size: int
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class ScanOutcome:
    """One artifact's scan, as a worker sends it back to the driver."""

    display: str
    raw: RawScan | None  # None: unreadable, see ``error``
    error: str | None
    identity: str | None  # identity of the bytes actually read (None: not storable)
    bytes_read: int
    requests: int
    engine: str  # the worker's rule-set digest: results of another version are refused


def hub_identity(lfs_sha256: str | None, blob_id: str | None, size: int | None) -> str | None:
    """A Hub file's content identity.

    The LFS sha256 is computed by the Hub over the uploaded bytes; a git blob id
    is git's own content address (git keeps the first object it saw for an id,
    so a colliding second upload cannot replace it). Either names content, so
    identical files in different repositories share one stored result.
    """
    if lfs_sha256:
        return f"sha256:{lfs_sha256.lower()}:{size}"
    if blob_id:
        return f"git-blob:{blob_id.lower()}:{size}"
    return None


def url_identity(url: str, etag: str | None, size: int | None) -> str | None:
    """A plain URL's identity: only a strong ETag, and always with the URL itself.

    An ETag is chosen by the server (often from mtime and size, which an uploader
    can forge), so it never stands for content on its own: a result found by it
    applies to this URL only.
    """
    if not etag or etag.startswith("W/") or size is None:
        return None
    return f"url:{url}:etag={etag}:size={size}"

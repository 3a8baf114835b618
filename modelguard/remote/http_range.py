"""A read-only, seekable file over HTTP Range requests.

The scanners read little of a checkpoint: a torch zip's end record, central
directory and pickle members, a safetensors header. Given this file object
instead of a local file, they fetch just those bytes. Reads are served from
aligned blocks kept in a small LRU cache; consecutive missing blocks are fetched
in one request. Every response is checked: a 206 must carry exactly the range
asked for and the size first announced, and when the server gave a strong ETag
it is sent back as If-Range, so a file replaced mid-scan fails loudly (an
``OSError``, which the engine reports as a read error) instead of being scanned
as a mix of two files.
"""

from __future__ import annotations

import http.client
import io
import re
import time
import urllib.error
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modelguard.remote.throttle import Throttle, parse_retry_after
from modelguard.supply import http as supply_http
from modelguard.supply.http import Hop

BLOCK_BYTES = 64 * 1024
CACHE_BLOCKS = 256  # 16 MiB of blocks
MAX_READAHEAD_BLOCKS = 128  # sequential reads grow fetches up to 8 MiB
# Overload and gateway failures: worth another try. 501/505 and 4xx are answers.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class RemoteReadError(OSError):
    """A range request failed or the server answered something inconsistent."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientReadError(RemoteReadError):
    """A failure worth retrying: connection lost, timeout, HTTP 5xx or 429."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after  # seconds the server asked us to wait


def retry_verdict(exc: BaseException) -> float | bool:
    """For :meth:`Throttle.call`: retry transient failures, after Retry-After if given."""
    if not isinstance(exc, TransientReadError):
        return False
    return True if exc.retry_after is None else exc.retry_after


@dataclass
class TransferStats:
    """What went over the wire for one remote file."""

    requests: int = 0
    bytes_received: int = 0  # everything that arrived, retried short answers included
    # The bytes of complete ranges the scan was given: what the report states, so
    # a network hiccup retried on the way changes no finding.
    bytes_scanned: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)  # the probe's URL and every redirect after it


@dataclass(frozen=True)
class Probe:
    """What the first request learned about a URL."""

    url: str
    size: int | None
    ranges: bool
    etag: str | None


def probe(
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    stats: TransferStats,
    *,
    allow_http: bool = False,
    throttle: Throttle | None = None,
) -> tuple[Probe, bytes | None, http.client.HTTPResponse | None]:
    """Ask for the first block with a Range header.

    Returns the probe, and either the first block (the server honoured the range)
    or the still-open full response (it did not: the caller downloads it all).
    Redirects are recorded in ``stats.hops``; one from https to plain http raises
    :class:`~modelguard.supply.http.InsecureRedirect` unless ``allow_http``.
    With a ``throttle``, requests are paced and transient failures retried.
    """

    def get(with_headers: Mapping[str, str]) -> http.client.HTTPResponse:
        stats.hops.clear()
        return open_url(url, with_headers, timeout, allow_http=allow_http, hops=stats.hops)

    def once() -> tuple[Probe, bytes | None, http.client.HTTPResponse | None]:
        # One attempt, the first block's body included: a connection lost while
        # reading it is retried like one lost before the answer.
        try:
            response = get({**headers, "Range": f"bytes=0-{BLOCK_BYTES - 1}"})
        except RemoteReadError as exc:
            if exc.status != 416:  # 416: an empty file has no byte 0; fetch it whole
                raise
            stats.requests += 1
            response = get(headers)
        stats.requests += 1
        return _first_answer(url, response, stats)

    return once() if throttle is None else throttle.call(url, once, retry_verdict)


def _first_answer(
    url: str, response: http.client.HTTPResponse, stats: TransferStats
) -> tuple[Probe, bytes | None, http.client.HTTPResponse | None]:
    final_url = response.geturl() or url
    etag = _strong_etag(response.headers.get("ETag"))
    if response.status == 206:
        got = _parse_content_range(response.headers.get("Content-Range"))
        if got is not None and got[0] == 0 and got[2] is not None:
            with response:
                try:
                    data = response.read(got[1] + 1)
                except (http.client.IncompleteRead, OSError) as exc:
                    raise TransientReadError(f"{url}: connection lost ({exc})") from None
            stats.bytes_received += len(data)
            stats.ranges.append((0, got[1]))
            if len(data) == got[1] + 1:
                stats.bytes_scanned += len(data)
                # Later ranges go to the URL redirects led to (a CDN), not back through them.
                return Probe(final_url, got[2], True, etag), data, None
            # http.client returns a body cut short without raising: a lost connection.
            raise TransientReadError(
                f"{url}: server sent {len(data)} of {got[1] + 1} bytes of the first range"
            )
        response.close()
        raise RemoteReadError(
            f"{url}: unusable answer to a range request "
            f"(Content-Range {response.headers.get('Content-Range')!r})"
        )
    length = response.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    return Probe(final_url, size, False, etag), None, response


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    match = _CONTENT_RANGE.match((value or "").strip())
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def _strong_etag(value: str | None) -> str | None:
    return value if value and not value.startswith("W/") else None


def head(
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    *,
    allow_http: bool = False,
    throttle: Throttle | None = None,
) -> tuple[int | None, str | None]:
    """A HEAD request: the file's size and strong ETag, without a byte of its body."""

    def once() -> http.client.HTTPResponse:
        return open_url(url, headers, timeout, allow_http=allow_http, method="HEAD")

    response = once() if throttle is None else throttle.call(url, once, retry_verdict)
    with response:
        length = response.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        return size, _strong_etag(response.headers.get("ETag"))


def open_url(
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    *,
    allow_http: bool = False,
    hops: list[Hop] | None = None,
    method: str = "GET",
) -> http.client.HTTPResponse:
    """GET (or ``method``); HTTP errors become RemoteReadError naming the URL.

    Redirects follow modelguard's one rule (:mod:`modelguard.supply.http`); the
    URLs visited are appended to ``hops`` when given. 429 and 5xx answers are
    :class:`TransientReadError`, with the server's ``Retry-After``.
    """
    try:
        response, visited = supply_http.open_url(
            url, headers, timeout, allow_http=allow_http, method=method
        )
    except urllib.error.HTTPError as exc:
        exc.close()
        message = f"{url}: HTTP {exc.code} {exc.reason}"
        if exc.code in TRANSIENT_STATUS:
            retry_after = parse_retry_after(exc.headers.get("Retry-After"))
            raise TransientReadError(message, exc.code, retry_after) from None
        raise RemoteReadError(message, exc.code) from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
        raise TransientReadError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if hops is not None:
        hops.extend(visited)
    return response


def _runs(blocks: list[int]) -> list[tuple[int, int]]:
    """Sorted block numbers as (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for block in blocks:
        if runs and block == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], block)
        else:
            runs.append((block, block))
    return runs


RangeFetch = Callable[[int, int], bytes]  # (first byte, last byte) -> exactly those bytes


class RangeFile(io.RawIOBase):
    """A remote file read through Range requests (after a probe said they work).

    ``fetch`` replaces the HTTP request with another transport's ranged read (an
    fsspec object-store file), so every remote file shares this block cache,
    read-ahead, accounting and pacing.
    """

    def __init__(
        self,
        probe: Probe,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        stats: TransferStats | None = None,
        first_block: bytes | None = None,
        allow_http: bool = False,
        throttle: Throttle | None = None,
        fetch: RangeFetch | None = None,
    ) -> None:
        """``first_block``: bytes 0.. already received by the probe (kept, not refetched)."""
        super().__init__()
        if probe.size is None or not probe.ranges:
            raise ValueError("RangeFile needs a probe with ranges and a known size")
        self.url = probe.url
        self.size = probe.size
        self._etag = probe.etag
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._retries = retries
        self._allow_http = allow_http
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self._next_sequential = 1 if first_block is not None else 0
        self._readahead = 0
        self._throttle = throttle
        self._fetch = fetch
        self.stats = stats if stats is not None else TransferStats()
        if first_block is not None and (
            len(first_block) == BLOCK_BYTES or len(first_block) == self.size
        ):
            self._blocks[0] = first_block

    # -- io.RawIOBase ------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
        if want == 0:
            return 0
        data = self._read_range(self._pos, want)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        """The rest of the file in one range request (not one per block)."""
        return self.read(max(0, self.size - self._pos)) or b""

    # -- blocks ------------------------------------------------------------------------
    def _read_range(self, start: int, length: int) -> bytes:
        first, last = start // BLOCK_BYTES, (start + length - 1) // BLOCK_BYTES
        got: dict[int, bytes] = {}
        for block in range(first, last + 1):
            cached = self._blocks.get(block)
            if cached is not None:
                got[block] = cached
                self._blocks.move_to_end(block)
        missing = [b for b in range(first, last + 1) if b not in got]
        for run_first, run_last in _runs(missing):
            got.update(self._fetch_blocks(run_first, self._with_readahead(run_first, run_last)))
        joined = b"".join(got[block] for block in range(first, last + 1))
        offset = start - first * BLOCK_BYTES
        return joined[offset : offset + length]

    def _with_readahead(self, run_first: int, run_last: int) -> int:
        """Extend a fetch when reads walk forward through the file (a long pickle)."""
        if run_first == self._next_sequential:
            self._readahead = min(max(1, self._readahead * 2), MAX_READAHEAD_BLOCKS)
        else:
            self._readahead = 0
        last_block = max(0, (self.size - 1) // BLOCK_BYTES)
        return min(run_last + self._readahead, last_block)

    def _fetch_blocks(self, first: int, last: int) -> dict[int, bytes]:
        start = first * BLOCK_BYTES
        end = min(self.size, (last + 1) * BLOCK_BYTES) - 1
        data = self._get_range(start, end)
        fetched = {
            block: data[(block - first) * BLOCK_BYTES : (block - first + 1) * BLOCK_BYTES]
            for block in range(first, last + 1)
        }
        self._blocks.update(fetched)
        while len(self._blocks) > CACHE_BLOCKS:
            self._blocks.popitem(last=False)
        self._next_sequential = last + 1
        return fetched

    def _get_range(self, start: int, end: int) -> bytes:
        if self._fetch is not None:
            return self._fetch_with(self._fetch, start, end)
        headers = {**self._headers, "Range": f"bytes={start}-{end}"}
        if self._etag is not None:
            headers["If-Range"] = self._etag
        if self._throttle is not None:
            return self._throttle.call(
                self.url, lambda: self._get_range_once(headers, start, end), retry_verdict
            )
        attempt = 0
        while True:
            try:
                return self._get_range_once(headers, start, end)
            except TransientReadError:
                if attempt >= self._retries:
                    raise
                time.sleep(0.2 * (2**attempt))
                attempt += 1

    def _get_range_once(self, headers: Mapping[str, str], start: int, end: int) -> bytes:
        try:
            response = open_url(self.url, headers, self._timeout, allow_http=self._allow_http)
        except supply_http.InsecureRedirect as exc:
            raise RemoteReadError(str(exc)) from None  # a read error: the scan stops here
        with response:
            self.stats.requests += 1
            if response.status != 206:
                raise RemoteReadError(
                    f"{self.url}: asked for bytes {start}-{end}, got HTTP {response.status} "
                    "(the file changed on the server, or ranges stopped working)"
                )
            got = _parse_content_range(response.headers.get("Content-Range"))
            if got is None or got[0] != start or got[1] != end or got[2] != self.size:
                raise RemoteReadError(
                    f"{self.url}: asked for bytes {start}-{end} of {self.size}, server sent "
                    f"Content-Range {response.headers.get('Content-Range')!r}"
                )
            try:
                data = response.read(end - start + 1)
            except (http.client.IncompleteRead, OSError) as exc:
                raise TransientReadError(
                    f"{self.url}: connection lost reading a range ({exc})"
                ) from None
        if not self._received(start, end, data):
            raise TransientReadError(
                f"{self.url}: server sent {len(data)} of {end - start + 1} bytes of a range"
            )
        return data

    def _received(self, start: int, end: int, data: bytes) -> bool:
        """Count a range's bytes; False when it is short."""
        self.stats.bytes_received += len(data)
        self.stats.ranges.append((start, end))
        complete = len(data) == end - start + 1
        if complete:
            self.stats.bytes_scanned += len(data)
        return complete

    def _fetch_with(self, fetch: RangeFetch, start: int, end: int) -> bytes:
        if self._throttle is not None:
            # The transport retries its own failures; the throttle only paces it.
            data = self._throttle.call(self.url, lambda: fetch(start, end), lambda _: False)
        else:
            data = fetch(start, end)
        self.stats.requests += 1
        if not self._received(start, end, data):
            raise RemoteReadError(
                f"{self.url}: asked for bytes {start}-{end} of {self.size}, got {len(data)} bytes"
            )
        return data

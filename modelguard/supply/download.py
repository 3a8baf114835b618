"""Streaming downloads: hash while writing a temporary file beside the destination.

A download is *staged*: its bytes go to a hidden temporary file in the
destination folder while every digest is computed (no second read). Only the
caller decides, after verification and scanning, to ``place`` it (an atomic
rename), ``quarantine`` it, or ``discard`` it. Any error or interruption while
staging removes the temporary file, so no partial file is ever left behind.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modelguard._version import __version__
from modelguard.errors import FetchError
from modelguard.supply.hashing import CHUNK_BYTES, MultiHasher

PARTIAL_PREFIX = ".modelguard-partial-"
DEFAULT_MAX_BYTES = 64 * 1024**3
# (name, bytes so far, total or None)
ByteProgress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class DownloadOptions:
    timeout: float = 60.0  # seconds without progress before a connection is dropped
    retries: int = 3  # extra attempts after a transient failure
    backoff: float = 1.0  # first retry waits this long, then doubles
    max_bytes: int = DEFAULT_MAX_BYTES
    progress: ByteProgress | None = None


@dataclass(frozen=True)
class StagedFile:
    name: str  # POSIX path below the destination folder
    temp: Path  # hidden temporary file beside the final place
    final: Path
    size: int
    digests: dict[str, str]


class _Transient(Exception):
    """Internal: a failure worth retrying (network, 5xx, truncated body)."""


def _new_temp(final: Path) -> tuple[Path, BinaryIO]:
    final.parent.mkdir(parents=True, exist_ok=True)
    # The temp name ends with the real name so tools that look at it see the same file.
    fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix="-" + final.name, dir=final.parent)
    return Path(tmp), os.fdopen(fd, "wb")


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def stage_stream(
    chunks: Iterable[bytes],
    name: str,
    final: Path,
    *,
    algorithms: Iterable[str],
    git_blob_size: int | None,
    options: DownloadOptions,
    total: int | None,
) -> StagedFile:
    """Write ``chunks`` to a temporary file beside ``final`` while hashing them."""
    temp, handle = _new_temp(final)
    try:
        hasher = MultiHasher(algorithms, git_blob_size)
        with handle:
            for chunk in chunks:
                hasher.update(chunk)
                if hasher.size > options.max_bytes:
                    raise FetchError(
                        f"{name}: download exceeds the size cap of {options.max_bytes} bytes"
                    )
                handle.write(chunk)
                if options.progress is not None:
                    options.progress(name, hasher.size, total)
        return StagedFile(name, temp, final, hasher.size, hasher.hexdigests())
    except BaseException:
        # Errors, Ctrl-C, a dying server: never leave a partial file behind.
        _remove(temp)
        raise


def _read_file(path: Path) -> Iterable[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def stage_copy(
    source: Path,
    name: str,
    final: Path,
    *,
    algorithms: Iterable[str],
    git_blob_size: int | None,
    options: DownloadOptions,
) -> StagedFile:
    """Copy a downloaded file (e.g. from the HF cache) into place-ready staging, hashing it."""
    try:
        total = source.stat().st_size
    except OSError as exc:
        raise FetchError(f"{name}: cannot read downloaded file {source}: {exc}") from None
    return stage_stream(
        _read_file(source),
        name,
        final,
        algorithms=algorithms,
        git_blob_size=git_blob_size,
        options=options,
        total=total,
    )


def _http_chunks(
    response: http.client.HTTPResponse, url: str, declared: int | None
) -> Iterable[bytes]:
    received = 0
    try:
        while True:
            chunk = response.read(CHUNK_BYTES)
            if not chunk:
                break
            received += len(chunk)
            yield chunk
    except (http.client.IncompleteRead, OSError) as exc:
        raise _Transient(f"connection lost after {received} bytes ({exc})") from None
    if declared is not None and received != declared:
        raise _Transient(f"server sent {received} of {declared} bytes")


def stage_url(
    url: str,
    name: str,
    final: Path,
    *,
    algorithms: Iterable[str],
    git_blob_size: int | None = None,
    options: DownloadOptions,
    headers: dict[str, str] | None = None,
) -> StagedFile:
    """Download ``url`` into a temporary file beside ``final``, with retries and back-off."""
    algos = tuple(algorithms)
    attempt = 0
    while True:
        try:
            return _stage_url_once(url, name, final, algos, git_blob_size, options, headers)
        except _Transient as exc:
            if attempt >= options.retries:
                raise FetchError(
                    f"{url}: download failed after {attempt + 1} attempt(s): {exc}"
                ) from None
            time.sleep(options.backoff * (2**attempt))
            attempt += 1


def _stage_url_once(
    url: str,
    name: str,
    final: Path,
    algorithms: tuple[str, ...],
    git_blob_size: int | None,
    options: DownloadOptions,
    headers: dict[str, str] | None,
) -> StagedFile:
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the caller
        url,
        headers={
            "User-Agent": f"modelguard/{__version__}",
            "Accept-Encoding": "identity",
            **(headers or {}),
        },
    )
    try:
        response = urllib.request.urlopen(request, timeout=options.timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(str(getattr(exc, "reason", exc))) from None
    with response:
        length = response.headers.get("Content-Length")
        declared = int(length) if length and length.isdigit() else None
        if declared is not None and declared > options.max_bytes:
            raise FetchError(
                f"{url}: server announces {declared} bytes, over the size cap of "
                f"{options.max_bytes} bytes"
            )
        return stage_stream(
            _http_chunks(response, url, declared),
            name,
            final,
            algorithms=algorithms,
            git_blob_size=git_blob_size,
            options=options,
            total=declared,
        )


def read_text_url(url: str, options: DownloadOptions, max_bytes: int) -> str:
    """Fetch a small text document (a zoo readme), with the same retries."""
    attempt = 0
    while True:
        try:
            request = urllib.request.Request(  # noqa: S310
                url, headers={"User-Agent": f"modelguard/{__version__}"}
            )
            with urllib.request.urlopen(request, timeout=options.timeout) as response:  # noqa: S310
                data: bytes = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise FetchError(f"{url}: larger than {max_bytes} bytes; not a readme")
            return data.decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            problem = str(getattr(exc, "reason", exc))
        if attempt >= options.retries:
            raise FetchError(f"{url}: failed after {attempt + 1} attempt(s): {problem}")
        time.sleep(options.backoff * (2**attempt))
        attempt += 1


def place(staged: StagedFile) -> Path:
    """Atomically rename the verified file into place (replacing an older copy)."""
    os.replace(staged.temp, staged.final)
    return staged.final


def discard(staged: StagedFile) -> None:
    _remove(staged.temp)


def quarantine(staged: StagedFile, folder: Path) -> Path:
    """Move a flagged file out of the destination into ``folder``, non-executable."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = folder / f"{stamp}-{staged.name.replace('/', '__')}"
    counter = 1
    while target.exists():
        target = folder / f"{stamp}-{counter}-{staged.name.replace('/', '__')}"
        counter += 1
    shutil.move(str(staged.temp), target)
    with contextlib.suppress(OSError):
        target.chmod(0o400)
    return target

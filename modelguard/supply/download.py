"""Staged downloads: bytes go to a hidden file beside their final name, hashed as they are written.

The destination folder is opened once (:class:`Destination`); every name below
it is resolved one component at a time relative to its parent's descriptor with
``O_NOFOLLOW`` (``openat`` semantics), so a symbolic link inside the destination
-- there before the fetch or planted during it -- can never carry a byte outside
it. A staged file is created ``O_EXCL`` with mode 0666 minus the umask, as any
download tool (and huggingface_hub) creates files, and is then *placed* (an
atomic rename beside it), *quarantined* or *discarded* by the caller once it has
been verified and scanned.

Unverified bytes never outlive the process that wrote them: every staged file
is tracked until placed or removed, an ``atexit`` hook removes what is left, and
:func:`removing_partials_on_signal` removes it on SIGTERM/SIGHUP before the
signal takes its usual course. Only SIGKILL or a crash of the interpreter can
leave a ``.modelguard-partial-*`` file; ``lock`` and ``verify`` report those.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import stat
import threading
import time
import urllib.error
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import BinaryIO

from modelguard.errors import FetchError
from modelguard.files import PARTIAL_PREFIX, open_regular
from modelguard.supply.hashing import CHUNK_BYTES, MultiHasher
from modelguard.supply.http import Hop, open_url

DEFAULT_MAX_BYTES = 64 * 1024**3
# (name, bytes so far, total or None)
ByteProgress = Callable[[str, int, int | None], None]
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_TEMP_NAME_ROOM = 200  # bytes of the final name kept in the temporary name (NAME_MAX is 255)


@dataclass(frozen=True)
class DownloadOptions:
    timeout: float = 60.0  # seconds without progress before a connection is dropped
    retries: int = 3  # extra attempts after a transient failure
    backoff: float = 1.0  # first retry waits this long, then doubles
    max_bytes: int = DEFAULT_MAX_BYTES
    progress: ByteProgress | None = None


class PlacementError(FetchError):
    """A name cannot be placed inside the destination (a link or a file in its way)."""


# ---- partial files: tracked until placed or removed ---------------------------------------

_LIVE: dict[int, tuple[int, str]] = {}  # id -> (folder descriptor, temporary name)
_LIVE_LOCK = threading.Lock()


def _track(dir_fd: int, name: str) -> int:
    key = secrets.randbits(63)
    with _LIVE_LOCK:
        _LIVE[key] = (dir_fd, name)
    return key


def _untrack(key: int) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(key, None)


def remove_partials() -> None:
    """Remove every staged file not yet placed (atexit, signals)."""
    with _LIVE_LOCK:
        items = list(_LIVE.values())
        _LIVE.clear()
    for dir_fd, name in items:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)


atexit.register(remove_partials)
_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    remove_partials()
    # Then die of the signal as the process would have without us.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def removing_partials_on_signal() -> Iterator[None]:
    """While fetching, SIGTERM and SIGHUP remove staged files before ending the process.

    Installed only from the main thread and only over the default disposition, so
    an application's own handlers are left alone.
    """
    installed: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for signum in _SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _on_signal)
                installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            if signal.getsignal(signum) is _on_signal:
                signal.signal(signum, signal.SIG_DFL)


# ---- the destination ----------------------------------------------------------------------


def _open_dir(name: str, parent_fd: int) -> int:
    return os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=parent_fd)


@dataclass
class Destination:
    """A destination folder, opened once; names below it never follow links.

    The folder itself is the caller's (it may be reached through a link they
    chose); everything below it is resolved component by component.
    """

    folder: Path
    fd: int = -1
    created: list[tuple[int, str]] = field(default_factory=list)  # folders this fetch made

    def __post_init__(self) -> None:
        if os.open not in os.supports_dir_fd or os.rename not in os.supports_dir_fd:
            raise FetchError("placing files safely needs openat/renameat (a POSIX system)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.folder, _DIR_FLAGS)
        except OSError as exc:
            raise FetchError(
                f"{self.folder}: cannot use as the destination: {exc.strerror or exc}"
            ) from None

    def close(self) -> None:
        """Remove folders this fetch created that stayed empty, then let go of the folder."""
        for parent_fd, name in reversed(self.created):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=parent_fd)  # fails, as it should, when not empty
            os.close(parent_fd)
        self.created.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parent(self, name: str, *, create: bool) -> tuple[int, str] | None:
        """A new descriptor of the folder that holds ``name``, and its last component.

        None when a folder on the way is missing and ``create`` is False.

        Raises:
            PlacementError: a component is a symbolic link or not a folder.
        """
        parts = PurePosixPath(name).parts
        fd = os.dup(self.fd)
        for index, part in enumerate(parts[:-1]):
            where = "/".join(parts[: index + 1])
            try:
                child = _open_dir(part, fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except OSError as exc:
                    os.close(fd)
                    raise PlacementError(
                        f"{self.folder / where}: cannot create folder: {exc.strerror or exc}"
                    ) from None
                self.created.append((os.dup(fd), part))
                child = _open_dir(part, fd)
            except OSError as exc:
                os.close(fd)
                raise PlacementError(self._in_the_way(where, exc)) from None
            os.close(fd)
            fd = child
        return fd, parts[-1]

    def _in_the_way(self, where: str, exc: OSError) -> str:
        path = self.folder / where
        if path.is_symlink():
            return f"{path} is a symbolic link; nothing is placed through it"
        return f"{path} is in the way: {exc.strerror or exc}"

    def lstat(self, name: str) -> os.stat_result | None:
        """What is at ``name`` now (a link is not followed), or None."""
        found = self.parent(name, create=False)
        if found is None:
            return None
        fd, last = found
        try:
            return os.stat(last, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def sha256_of(self, name: str) -> str | None:
        """sha256 of the regular file at ``name`` (not through a link), or None."""
        found = self.parent(name, create=False)
        if found is None:
            return None
        fd, last = found
        try:
            handle = os.open(last, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        hasher = MultiHasher(("sha256",))
        with os.fdopen(handle, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                return None
            while chunk := stream.read(CHUNK_BYTES):
                hasher.update(chunk)
        return hasher.hexdigests()["sha256"]


# ---- staging ------------------------------------------------------------------------------


@dataclass
class StagedFile:
    name: str  # POSIX path below the destination folder
    final: Path  # where it will be placed (for messages; placement uses descriptors)
    size: int
    digests: dict[str, str]
    dir_fd: int  # the folder it is staged in
    temp_name: str  # its hidden name there
    identity: tuple[int, ...]  # (dev, inode, size, mtime_ns, ctime_ns) when staging ended
    hops: list[Hop] = field(default_factory=list)  # where the bytes came from
    key: int = 0  # in the partial-file registry

    @property
    def temp(self) -> Path:
        return self.final.with_name(self.temp_name)

    @property
    def readable_path(self) -> str:
        """A path that reaches the staged file through its folder's descriptor."""
        proc = f"/proc/self/fd/{self.dir_fd}"
        return f"{proc}/{self.temp_name}" if os.path.isdir(proc) else str(self.temp)

    def unchanged(self) -> bool:
        """True when the staged file is still the one that was hashed."""
        try:
            info = os.stat(self.temp_name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return _identity(info) == self.identity


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _new_temp(dest: Destination, name: str) -> tuple[int, str, int]:
    """(folder descriptor, temporary name, open descriptor) of a fresh staged file."""
    found = dest.parent(name, create=True)
    assert found is not None  # create=True always finds or makes the folder
    dir_fd, last = found
    tail = last.encode("utf-8", "surrogateescape")[-_TEMP_NAME_ROOM:]
    suffix = tail.decode("utf-8", "ignore")
    while True:
        temp = f"{PARTIAL_PREFIX}{secrets.token_hex(6)}-{suffix}"
        try:
            fd = os.open(
                temp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                0o666,  # minus the umask, as any downloaded file
                dir_fd=dir_fd,
            )
        except FileExistsError:
            continue
        except OSError as exc:
            os.close(dir_fd)
            raise PlacementError(
                f"{dest.folder / name}: cannot create a file beside it: {exc.strerror or exc}"
            ) from None
        return dir_fd, temp, fd


def stage_stream(
    chunks: Iterable[bytes],
    name: str,
    dest: Destination,
    *,
    algorithms: Iterable[str],
    git_blob_size: int | None,
    options: DownloadOptions,
    total: int | None,
) -> StagedFile:
    """Write ``chunks`` to a hidden file beside ``name`` while hashing them."""
    dir_fd, temp, fd = _new_temp(dest, name)
    key = _track(dir_fd, temp)
    try:
        hasher = MultiHasher(algorithms, git_blob_size)
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                hasher.update(chunk)
                if hasher.size > options.max_bytes:
                    raise FetchError(
                        f"{name}: download exceeds the size cap of {options.max_bytes} bytes"
                    )
                handle.write(chunk)
                if options.progress is not None:
                    options.progress(name, hasher.size, total)
            handle.flush()
            info = os.fstat(handle.fileno())
        return StagedFile(
            name=name,
            final=dest.folder / name,
            size=hasher.size,
            digests=hasher.hexdigests(),
            dir_fd=dir_fd,
            temp_name=temp,
            identity=_identity(info),
            key=key,
        )
    except BaseException:
        # Errors, Ctrl-C, a dying server: never leave a partial file behind.
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        _untrack(key)
        os.close(dir_fd)
        raise


def _read_file(path: Path) -> Iterator[bytes]:
    with os.fdopen(open_regular(path), "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def stage_copy(
    source: Path,
    name: str,
    dest: Destination,
    *,
    algorithms: Iterable[str],
    git_blob_size: int | None,
    options: DownloadOptions,
) -> StagedFile:
    """Copy a downloaded file (from the HF cache) into staging, hashing it."""
    try:
        total = source.stat().st_size
        chunks = _read_file(source)
        return stage_stream(
            chunks,
            name,
            dest,
            algorithms=algorithms,
            git_blob_size=git_blob_size,
            options=options,
            total=total,
        )
    except FetchError:
        raise
    except OSError as exc:
        raise FetchError(f"{name}: cannot read downloaded file {source}: {exc}") from None


class _Transient(Exception):
    """Internal: a failure worth retrying (network, 5xx, truncated body)."""


def _http_chunks(response: http.client.HTTPResponse, declared: int | None) -> Iterator[bytes]:
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
    dest: Destination,
    *,
    algorithms: Iterable[str],
    options: DownloadOptions,
    allow_http: bool,
) -> StagedFile:
    """Download ``url`` into a hidden file beside ``name``, with retries and back-off.

    Raises:
        InsecureRedirect: a redirect to plain http without ``allow_http``.
        FetchError: the download failed for good.
    """
    algos = tuple(algorithms)
    attempt = 0
    while True:
        try:
            return _stage_url_once(url, name, dest, algos, options, allow_http)
        except _Transient as exc:
            if attempt >= options.retries:
                raise FetchError(
                    f"{url}: download failed after {attempt + 1} attempt(s): {exc}"
                ) from None
            time.sleep(options.backoff * (2**attempt))
            attempt += 1


def _open(url: str, options: DownloadOptions, allow_http: bool) -> tuple[BinaryIO, list[Hop]]:
    try:
        response, hops = open_url(url, {}, options.timeout, allow_http=allow_http)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(str(getattr(exc, "reason", exc))) from None
    return response, hops


def _stage_url_once(
    url: str,
    name: str,
    dest: Destination,
    algorithms: tuple[str, ...],
    options: DownloadOptions,
    allow_http: bool,
) -> StagedFile:
    response, hops = _open(url, options, allow_http)
    with response:
        length = getattr(response, "headers", {}).get("Content-Length")
        declared = int(length) if length and length.isdigit() else None
        if declared is not None and declared > options.max_bytes:
            raise FetchError(
                f"{url}: server announces {declared} bytes, over the size cap of "
                f"{options.max_bytes} bytes"
            )
        staged = stage_stream(
            _http_chunks(response, declared),  # type: ignore[arg-type]
            name,
            dest,
            algorithms=algorithms,
            git_blob_size=None,
            options=options,
            total=declared,
        )
    staged.hops = hops
    return staged


def read_text_url(url: str, options: DownloadOptions, max_bytes: int, *, allow_http: bool) -> str:
    """Fetch a small text document (a zoo readme), with the same retries and redirect rules."""
    attempt = 0
    while True:
        try:
            response, _ = _open(url, options, allow_http)
            with response:
                data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise FetchError(f"{url}: larger than {max_bytes} bytes; not a readme")
            return data.decode("utf-8", errors="replace")
        except _Transient as exc:
            problem = str(exc)
        except OSError as exc:
            problem = str(exc)
        if attempt >= options.retries:
            raise FetchError(f"{url}: failed after {attempt + 1} attempt(s): {problem}")
        time.sleep(options.backoff * (2**attempt))
        attempt += 1


# ---- after verification -------------------------------------------------------------------


def _release(staged: StagedFile) -> None:
    _untrack(staged.key)
    if staged.dir_fd >= 0:
        os.close(staged.dir_fd)
        staged.dir_fd = -1


def place(staged: StagedFile) -> Path:
    """Rename the verified file onto its name, atomically; a link there is replaced."""
    last = PurePosixPath(staged.name).name
    try:
        os.replace(staged.temp_name, last, src_dir_fd=staged.dir_fd, dst_dir_fd=staged.dir_fd)
    except OSError as exc:
        discard(staged)
        raise PlacementError(f"{staged.final}: cannot place: {exc.strerror or exc}") from None
    _release(staged)
    return staged.final


def discard(staged: StagedFile) -> None:
    if staged.dir_fd < 0:
        return
    with contextlib.suppress(OSError):
        os.unlink(staged.temp_name, dir_fd=staged.dir_fd)
    _release(staged)


def quarantine(staged: StagedFile, folder: Path) -> Path:
    """Move a flagged file out of the destination into ``folder``, read-only."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    flat = staged.name.replace("/", "__")
    target = folder / f"{stamp}-{flat}"
    counter = 1
    while target.exists():
        target = folder / f"{stamp}-{counter}-{flat}"
        counter += 1
    source_fd = os.open(staged.temp_name, os.O_RDONLY | _NOFOLLOW, dir_fd=staged.dir_fd)
    with os.fdopen(source_fd, "rb") as source:
        out_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o400)
        with os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
    discard(staged)
    return target

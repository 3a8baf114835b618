"""File hashing: one pass, several digests, parallel threads across files.

hashlib releases the GIL while it hashes a large buffer, so threads hashing
different files run on different cores. Within one file sha256 is inherently
sequential: a single large file is hashed at one core's speed, as sha256sum is.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelguard.errors import UnreadableInput, UsageError
from modelguard.files import NotARegularFile, open_regular

# Large enough that per-call overhead vanishes, small enough to stay in L2/L3.
CHUNK_BYTES = 1 << 20

_HEX_LENGTH = {"sha256": 64, "sha1": 40}


class MultiHasher:
    """Feeds the same bytes to several hash functions and counts them.

    ``git_blob_size`` additionally computes the git blob id (sha1 over
    ``b"blob <size>\\0" + content``), which is how the Hugging Face Hub names
    small (non-LFS) files; the size must be known up front.
    """

    def __init__(self, algorithms: Iterable[str] = ("sha256",), git_blob_size: int | None = None):
        self._hashes = {name: hashlib.new(name) for name in algorithms}
        self._git: hashlib._Hash | None = None
        if git_blob_size is not None:
            self._git = hashlib.sha1(f"blob {git_blob_size}\0".encode(), usedforsecurity=False)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        for h in self._hashes.values():
            h.update(data)
        if self._git is not None:
            self._git.update(data)
        self.size += len(data)

    def hexdigests(self) -> dict[str, str]:
        out = {name: h.hexdigest() for name, h in self._hashes.items()}
        if self._git is not None:
            out["git-blob-sha1"] = self._git.hexdigest()
        return out


def hash_file(
    path: str | os.PathLike[str],
    algorithms: Iterable[str] = ("sha256",),
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Hex digests of one file in a single read pass (reusing one buffer)."""
    hasher = MultiHasher(algorithms)
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    try:
        # A FIFO or device named in a tree is refused, never waited on.
        with os.fdopen(open_regular(path), "rb", buffering=0) as handle:
            while True:
                n = handle.readinto(buffer)
                if not n:
                    break
                hasher.update(view[:n])
                if progress is not None:
                    progress(n)
    except NotARegularFile:
        raise UnreadableInput(os.fspath(path), "not a regular file") from None
    except OSError as exc:
        raise UnreadableInput(os.fspath(path), exc.strerror or str(exc)) from None
    return hasher.hexdigests()


def hash_files(
    paths: Iterable[str | os.PathLike[str]],
    algorithms: Iterable[str] = ("sha256",),
    *,
    workers: int | None = None,
) -> dict[Path, dict[str, str]]:
    """Hash many files in parallel threads; returns digests keyed by the given path.

    Raises UnreadableInput for the first file that cannot be read (or is not a
    regular file), naming it.
    """
    items = [Path(p) for p in paths]
    algos = tuple(algorithms)
    if not items:
        return {}
    count = workers or min(len(items), max(1, os.cpu_count() or 1), 16)
    if count == 1 or len(items) == 1:
        return {p: hash_file(p, algos) for p in items}
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="modelguard-hash") as pool:
        results = pool.map(lambda p: hash_file(p, algos), items)
        return dict(zip(items, results, strict=True))


def expected_digests(sha256: str | None, sha1: str | None) -> dict[str, str]:
    """The digests a caller passed, checked and lower-cased.

    Raises:
        UsageError: a value is not a hex digest of its algorithm's length.
    """
    out: dict[str, str] = {}
    for name, value in (("sha256", sha256), ("sha1", sha1)):
        if not value:
            continue
        text = value.strip().lower()
        length = _HEX_LENGTH[name]
        if len(text) != length or any(c not in "0123456789abcdef" for c in text):
            raise UsageError(f"`{name}` {value!r} is not {length} hex digits")
        out[name] = text
    return out


def matches(actual: Mapping[str, str], expected: Mapping[str, str]) -> bool:
    """True when every expected digest the caller has is present and equal."""
    return all(actual.get(name, "").lower() == value.lower() for name, value in expected.items())

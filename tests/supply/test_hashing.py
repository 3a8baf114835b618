"""Hashing: one pass, several digests, threads across files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelguard.supply.hashing import CHUNK_BYTES, MultiHasher, hash_file, hash_files, matches


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 7]
)
def test_hash_file_matches_hashlib_across_chunk_boundaries(tmp_path: Path, size: int) -> None:
    data = bytes((i * 31 + 7) % 256 for i in range(size))
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert hash_file(path, ("sha256", "sha1")) == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest(),
    }


def test_hash_files_parallel_equals_sequential(tmp_path: Path) -> None:
    paths = []
    for i in range(12):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(bytes([i]) * (i * 10_000 + 1))
        paths.append(path)
    parallel = hash_files(paths, workers=4)
    assert parallel == {p: hash_file(p) for p in paths}
    assert parallel[paths[3]]["sha256"] == hashlib.sha256(bytes([3]) * 30_001).hexdigest()


def test_git_blob_id_matches_git() -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    hasher = MultiHasher((), git_blob_size=6)
    hasher.update(b"hello\n")
    assert hasher.hexdigests() == {"git-blob-sha1": "ce013625030ba8dba906f756967f9e9ca394464a"}
    assert hasher.size == 6


def test_matches_is_case_insensitive_and_requires_every_digest() -> None:
    actual = {"sha256": "ab" * 32, "sha1": "cd" * 20}
    assert matches(actual, {"sha256": "AB" * 32})
    assert not matches(actual, {"sha256": "ab" * 32, "sha1": "00" * 20})
    assert not matches({"sha256": "ab" * 32}, {"sha1": "cd" * 20})

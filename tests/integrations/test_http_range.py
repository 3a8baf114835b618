"""RangeFile: a seekable file over HTTP ranges must read exactly the server's bytes."""

from __future__ import annotations

import io
import os
import random
from typing import Any

import pytest

from modelguard.remote.http_range import (
    BLOCK_BYTES,
    CACHE_BLOCKS,
    RangeFile,
    RemoteReadError,
    TransferStats,
    probe,
)

DATA = os.urandom(3 * 1024 * 1024 + 123)  # not a whole number of blocks


def open_remote(server: Any, data: bytes = DATA, etag: str | None = '"e1"') -> RangeFile:
    url = server.serve("/blob", data, etag=etag)
    stats = TransferStats()
    found, first, response = probe(url, {}, 10, stats)
    assert response is None and found.ranges and found.size == len(data)
    return RangeFile(found, stats=stats, first_block=first)


def test_random_reads_match_the_bytes(range_server: Any) -> None:
    remote = open_remote(range_server)
    rng = random.Random(1)
    for _ in range(300):
        start = rng.randrange(0, len(DATA) + 10)
        length = rng.choice([0, 1, 7, BLOCK_BYTES - 1, BLOCK_BYTES + 1, 300_000])
        remote.seek(start)
        assert remote.read(length) == DATA[start : start + length]
        assert remote.tell() == min(len(DATA), start + length) or start > len(DATA)
    remote.seek(-5, io.SEEK_END)
    assert remote.read() == DATA[-5:]


def test_probe_block_is_reused_and_readall_is_one_request(range_server: Any) -> None:
    remote = open_remote(range_server)
    assert remote.read(100) == DATA[:100]
    assert remote.stats.requests == 1  # served from the probe's block
    remote.seek(2 * BLOCK_BYTES)
    assert remote.read() == DATA[2 * BLOCK_BYTES :]
    assert remote.stats.requests == 2


def test_sequential_small_reads_grow_their_fetches(range_server: Any) -> None:
    remote = open_remote(range_server)
    chunks = []
    while chunk := remote.read(8192):
        chunks.append(chunk)
    assert b"".join(chunks) == DATA
    blocks = len(DATA) // BLOCK_BYTES + 1
    assert remote.stats.requests < blocks // 4  # read-ahead, not one request per block
    assert remote.stats.bytes_received == len(DATA)  # and nothing fetched twice


def test_read_larger_than_the_block_cache_with_holes(range_server: Any) -> None:
    data = os.urandom((CACHE_BLOCKS + 40) * BLOCK_BYTES)
    remote = open_remote(range_server, data)
    remote.seek(100 * BLOCK_BYTES)
    remote.read(10)  # a cached block in the middle splits the big read into two runs
    remote.seek(0)
    assert remote.read(len(data)) == data


def test_server_ignoring_ranges_is_reported_by_probe(plain_server: Any) -> None:
    url = plain_server.serve("/blob", DATA)
    found, first, response = probe(url, {}, 10, TransferStats())
    assert response is not None and first is None and not found.ranges
    assert found.size == len(DATA)
    response.close()


def test_changed_file_fails_loudly(range_server: Any) -> None:
    remote = open_remote(range_server)
    range_server.serve("/blob", DATA[::-1], etag='"e2"')
    remote.seek(len(DATA) - 10)
    with pytest.raises(RemoteReadError, match="changed on the server"):
        remote.read(10)

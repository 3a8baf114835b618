"""gzip / bzip2 / xz: content scanned through bounded decompression."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import tarfile
from collections.abc import Callable

import pytest
from archive_helpers import BENIGN_PICKLE, MALICIOUS_PICKLE, make_zip, scan_bytes

from modelguard.findings import Location
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.scan.compressed import content_name
from modelguard.scan.context import ScanContext
from modelguard.scan.decompress import gzip_stream, inflate

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "bzip2": bz2.compress,
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ),
}
SUFFIX = {"gzip": ".gz", "bzip2": ".bz2", "xz": ".xz"}


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_malicious_pickle_inside(kind: str) -> None:
    result = scan_bytes(COMPRESSORS[kind](MALICIOUS_PICKLE), name=f"model.pkl{SUFFIX[kind]}")
    assert result.format == kind
    assert result.members_with("MG101") == {("model.pkl",)}


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_benign_content_is_clean(kind: str) -> None:
    assert scan_bytes(COMPRESSORS[kind](BENIGN_PICKLE)).serious() == []


def test_tar_gz_of_checkpoint() -> None:
    ckpt = make_zip([("archive/data.pkl", MALICIOUS_PICKLE)])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("ckpt.pt")
        info.size = len(ckpt)
        archive.addfile(info, io.BytesIO(ckpt))
    result = scan_bytes(buffer.getvalue(), name="bundle.tgz")
    assert result.members_with("MG101") == {("bundle.tar", "ckpt.pt", "archive/data.pkl")}


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_bomb_stops_on_ratio(kind: str) -> None:
    limits = Limits(bomb_min_size=1 << 20, max_compression_ratio=100)
    bomb = COMPRESSORS[kind](b"\x00" * (16 << 20))
    result = scan_bytes(bomb, limits=limits)
    assert "ratio" in {f.evidence for f in result.with_rule("MG204")}


def test_large_but_plausible_content_is_not_a_bomb() -> None:
    limits = Limits(bomb_min_size=1 << 20, max_compression_ratio=100)
    noisy = random.Random(0).randbytes(1 << 20) + b"\x00" * (1 << 20)  # 2 MiB, ratio ~2
    assert "MG204" not in scan_bytes(gzip.compress(noisy), limits=limits).rules


def test_member_cap_reports_mg002_and_scans_the_head() -> None:
    data = MALICIOUS_PICKLE + b"\x00" * 100_000
    result = scan_bytes(gzip.compress(data), limits=Limits(max_member_bytes=50_000))
    assert "MG002" in result.rules
    assert "MG101" in result.rules


def test_total_budget_reports_mg002() -> None:
    data = gzip.compress(BENIGN_PICKLE + b"\x00" * 100_000)
    result = scan_bytes(data, limits=Limits(max_total_decompressed=10_000))
    assert "decompressed bytes" in {f.evidence for f in result.with_rule("MG002")}


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_truncated_stream(kind: str) -> None:
    data = COMPRESSORS[kind](BENIGN_PICKLE * 50)
    result = scan_bytes(data[: len(data) // 2])
    assert f"{kind}: truncated" in {f.evidence for f in result.with_rule("MG205")}
    assert "MG004" not in result.rules


def test_corrupt_gzip() -> None:
    data = bytearray(gzip.compress(BENIGN_PICKLE * 50))
    data[20:30] = b"\xff" * 10
    result = scan_bytes(bytes(data))
    assert "MG205" in result.rules
    assert "MG004" not in result.rules


def test_concatenated_gzip_members_are_all_read() -> None:
    # gzip.open reads every member; the payload in the second must be seen.
    data = gzip.compress(BENIGN_PICKLE) + gzip.compress(MALICIOUS_PICKLE)
    assert gzip.decompress(data).endswith(MALICIOUS_PICKLE)
    assert "MG101" in scan_bytes(data).rules


def test_trailing_garbage_after_gzip() -> None:
    result = scan_bytes(gzip.compress(BENIGN_PICKLE) + b"GARBAGE!")
    assert "gzip: trailing" in {f.evidence for f in result.with_rule("MG205")}


def test_nested_compression_stops_at_depth_cap() -> None:
    data = MALICIOUS_PICKLE
    for _ in range(6):
        data = gzip.compress(data)
    result = scan_bytes(data, limits=Limits(max_archive_depth=3))
    assert "archive nesting depth" in {f.evidence for f in result.with_rule("MG002")}
    assert "MG101" not in result.rules
    shallow = gzip.compress(gzip.compress(MALICIOUS_PICKLE))
    assert "MG101" in scan_bytes(shallow, limits=Limits(max_archive_depth=3)).rules


@pytest.mark.parametrize(
    ("name", "expected"),
    [("model.pt.gz", "model.pt"), ("x/y/w.pkl.bz2", "w.pkl"), ("a.tgz", "a.tar"),
     ("noext", "<decompressed>"), ("outer.zip!/inner.pkl.xz", "inner.pkl")],
)  # fmt: skip
def test_content_name(name: str, expected: str) -> None:
    assert content_name(name, (".gz", ".tgz", ".bz2", ".xz")) == expected


def test_output_never_exceeds_the_member_cap_across_streams() -> None:
    # A first stream ending exactly at the cap must not leave the next one unbounded.
    data = gzip.compress(b"\x00" * 1000) + gzip.compress(b"\x00" * 3_000_000)
    ctx = ScanContext(location=Location("x"), settings=ScanSettings(Limits(max_member_bytes=1000)))
    result = inflate(
        io.BytesIO(data), len(data), gzip_stream, ctx, what="x", multi_stream=True,
        stream_magic=b"\x1f\x8b",
    )  # fmt: skip
    assert result.size <= 1000
    assert result.stopped == "member cap"
    assert [f.rule_id for f in ctx.findings] == ["MG002"]

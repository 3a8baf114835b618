"""Hostile-input robustness: random bytes and damaged fixtures never crash a scanner.

For every input, ``modelguard.scan`` must return a Report, no scanner may crash
(MG004 "scanner-error"), the file must count as read (no input error) and no
payload may run (the canary marker never appears). Damaged files get a finding
or a clean result, never a traceback. Examples are derandomised so CI is
reproducible; max_examples is kept modest so the module runs in well under a
minute on two cores.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelguard
from modelguard.findings import Report
from modelguard.policy import Policy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAMPLES: list[Path] = sorted(
    p
    for sub in ("benign", "malicious")
    for p in (FIXTURES / sub).iterdir()
    if p.is_file() and not p.name.endswith(".data")  # ONNX external data is not a model
)
DATA: dict[Path, bytes] = {p: p.read_bytes() for p in SAMPLES}
POLICY = Policy()

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A folder for mutated files, and a canary set for the whole module."""
    with tempfile.TemporaryDirectory(prefix="modelguard-fuzz-") as tmp:
        folder = Path(tmp)
        old = os.environ.get("MODELGUARD_CANARY")
        os.environ["MODELGUARD_CANARY"] = str(folder / "canary")
        try:
            yield folder
        finally:
            if old is None:
                os.environ.pop("MODELGUARD_CANARY", None)
            else:
                os.environ["MODELGUARD_CANARY"] = old


def scan_bytes(workdir: Path, data: bytes, name: str) -> Report:
    """Write ``data`` under ``name`` (keeping the suffix, for scanners that look) and scan it."""
    target = workdir / f"case-{name}"
    target.write_bytes(data)
    try:
        report = modelguard.scan(target, policy=POLICY, root=workdir, workers=1)
    finally:
        target.unlink()
    assert isinstance(report, Report)
    assert not report.errors, report.errors
    # A mutation that leaves no model format in a file that is no model by name is
    # reported as skipped (not a model file), which is a result too.
    assert len(report.artifacts) + len(report.skipped) == 1
    crashes = [f"{f.location}: {f.message}" for f in report.findings if f.rule_id == "MG004"]
    assert not crashes, crashes
    assert not (workdir / "canary").exists()
    return report


@settings(FUZZ, max_examples=100)
@given(data=st.binary(max_size=2048))
def test_random_bytes(workdir: Path, data: bytes) -> None:
    scan_bytes(workdir, data, "random.bin")


# Random bodies behind real magic numbers reach each format's parser, not just sniffing.
MAGICS = [
    b"\x80\x04\x95",  # pickle protocol 4 + FRAME
    b"PK\x03\x04",  # zip
    b"\x93NUMPY\x01\x00",  # npy
    b"\x89HDF\r\n\x1a\n",  # hdf5
    b"\x1f\x8b\x08\x00",  # gzip
    b"BZh9",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"\x08\x08\x12",  # onnx ir_version + producer_name
    b"\x10\x00\x00\x00\x00\x00\x00\x00{",  # safetensors header length + '{'
    b"V\x01\x00\x00\x00\x00\x00\x00{",  # safetensors whose length is a pickle opcode
    b"7z\xbc\xaf\x27\x1c",  # 7z
    b"cos\nsystem\n",  # protocol 0 GLOBAL: a pickle of any length
    b"S'" + b"a" * 3000,  # a first argument longer than any sniff window
    b"x\x9c",  # zlib (joblib)
    b"\x5d\x00\x00\x80\x00",  # .lzma (joblib)
    b"\x04\x22\x4d\x18",  # LZ4 frame (joblib)
    b"ZF0x40               ",  # joblib <= 0.9 ZF file
    b"\x80\x04\x95\x08\x00\x00\x00\x00\x00\x00\x00",  # a FRAME the body may cross
    b"\x80\x04\x8c\x13joblib.numpy_pickle\x8c\x11NumpyArrayWrapper\x93)\x81}(",
]


@settings(FUZZ, max_examples=150)
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=1024))
def test_random_bodies_behind_magic_numbers(workdir: Path, magic: bytes, body: bytes) -> None:
    scan_bytes(workdir, magic + body, "magic.bin")


@settings(FUZZ, max_examples=200)
@given(sample=st.sampled_from(SAMPLES), cut=st.floats(min_value=0.0, max_value=1.0))
def test_truncated_fixtures(workdir: Path, sample: Path, cut: float) -> None:
    data = DATA[sample]
    scan_bytes(workdir, data[: int(len(data) * cut)], sample.name)


@settings(FUZZ, max_examples=300)
@given(
    sample=st.sampled_from(SAMPLES),
    where=st.floats(min_value=0.0, max_value=1.0),
    bit=st.integers(0, 7),
)
def test_bit_flipped_fixtures(workdir: Path, sample: Path, where: float, bit: int) -> None:
    data = bytearray(DATA[sample])
    offset = min(int(len(data) * where), len(data) - 1)
    data[offset] ^= 1 << bit
    scan_bytes(workdir, bytes(data), sample.name)


@settings(FUZZ, max_examples=150)
@given(
    sample=st.sampled_from(SAMPLES),
    where=st.floats(min_value=0.0, max_value=1.0),
    patch=st.binary(min_size=1, max_size=16),
)
def test_overwritten_fixture_bytes(workdir: Path, sample: Path, where: float, patch: bytes) -> None:
    """Several bytes at once: header lengths, sizes and counts get implausible values."""
    data = bytearray(DATA[sample])
    offset = min(int(len(data) * where), len(data))
    data[offset : offset + len(patch)] = patch
    scan_bytes(workdir, bytes(data), sample.name)


def test_every_fixture_header_truncation_is_handled(workdir: Path) -> None:
    """Deterministic sweep of the first bytes, where the format headers live."""
    for sample in SAMPLES:
        data = DATA[sample]
        for cut in (1, 2, 4, 8, 9, 16, 32, 64, 128, 512):
            if cut < len(data):
                scan_bytes(workdir, data[:cut], sample.name)


# The readings: bytes before an archive, a user block before HDF5, names that
# claim a format, tar headers of every dialect.
CLAIMED_NAMES = ["x.safetensors", "x.npy", "x.npz", "x.onnx", "x.keras", "x.h5", "x.pt", "x.pth"]


@settings(FUZZ, max_examples=100)
@given(sample=st.sampled_from(SAMPLES), prefix=st.binary(max_size=700))
def test_fixtures_behind_random_prefixes(workdir: Path, sample: Path, prefix: bytes) -> None:
    scan_bytes(workdir, prefix + DATA[sample], sample.name)


@settings(FUZZ, max_examples=60)
@given(
    block=st.sampled_from([512, 1024, 2048, 4096]),
    user=st.binary(max_size=512),
    body=st.binary(max_size=256),
)
def test_random_user_blocks_before_hdf5(
    workdir: Path, block: int, user: bytes, body: bytes
) -> None:
    data = user.ljust(block, b"\0") + b"\x89HDF\r\n\x1a\n" + body
    scan_bytes(workdir, data, "model.h5")


@settings(FUZZ, max_examples=80)
@given(name=st.sampled_from(CLAIMED_NAMES), body=st.binary(max_size=512))
def test_random_bytes_under_claiming_names(workdir: Path, name: str, body: bytes) -> None:
    scan_bytes(workdir, body, name)


@settings(FUZZ, max_examples=60)
@given(
    fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    name=st.text(min_size=1, max_size=120),
    body=st.binary(max_size=600),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_tar_dialects_with_random_members(
    workdir: Path, fmt: int, name: str, body: bytes, cut: float
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    data = buffer.getvalue()
    scan_bytes(workdir, data[: max(512, int(len(data) * cut))], "bundle.tar")

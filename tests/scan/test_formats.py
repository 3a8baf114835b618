"""Readings by content: every interpretation a loader could take, and those that hold."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import struct
import tarfile

import pytest
from archive_helpers import BENIGN_PICKLE, MALICIOUS_PICKLE, make_zip, torch_zip

from modelguard.findings import Location
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import TORCH_LEGACY_MAGIC, scan_readings


def formats(data: bytes, name: str = "x") -> list[str]:
    """The readings that held when the bytes were scanned."""
    inp = Input(stream=io.BytesIO(data), size=len(data), name=name)
    return scan_readings(inp, ScanContext(location=Location(name)))


def _tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("a")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


def _legacy_torch() -> bytes:
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    assert TORCH_LEGACY_MAGIC in magic
    return magic + pickle.dumps(1001, protocol=2) + BENIGN_PICKLE


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (torch_zip(BENIGN_PICKLE), ["zip"]),
        (make_zip([]), ["zip"]),
        (BENIGN_PICKLE, ["pickle"]),
        (MALICIOUS_PICKLE, ["pickle"]),
        (pickle.dumps([1, 2], protocol=0), ["pickle"]),
        (_legacy_torch(), ["torch-legacy"]),
        (gzip.compress(b"abc"), ["gzip"]),
        (bz2.compress(b"abc"), ["bzip2"]),
        (lzma.compress(b"abc"), ["xz"]),
        (_tar(), ["tar"]),
        (b"\x93NUMPY\x01\x00" + b"\x00" * 20, ["numpy"]),
        (struct.pack("<Q", 2) + b"{}", ["safetensors"]),
        (b"plain text, nothing to see", []),
        (b"", []),
    ],
    ids=["torch-zip", "empty-zip", "pickle2", "evil-pickle", "pickle0", "torch-legacy",
         "gzip", "bzip2", "xz", "tar", "npy", "safetensors", "text", "empty"],
)  # fmt: skip
def test_formats(data: bytes, expected: list[str]) -> None:
    assert formats(data) == expected


def test_pickle_with_zip_appended_is_both() -> None:
    assert formats(MALICIOUS_PICKLE + torch_zip(BENIGN_PICKLE)) == ["pickle", "zip"]


def test_legacy_torch_with_zip_appended_is_both() -> None:
    assert formats(_legacy_torch() + make_zip([("a", b"b")])) == ["torch-legacy", "zip"]


def test_junk_before_zip_is_zip_only() -> None:
    assert formats(b"\x00\x01JUNK" * 5 + make_zip([("a", b"b")])) == ["zip"]


def test_stray_end_record_bytes_are_not_a_zip() -> None:
    # Four bytes that spell an end record, e.g. inside tensor data after a pickle.
    data = BENIGN_PICKLE + b"\x01" * 100 + b"PK\x05\x06" + b"\x07" * 30
    assert formats(data) == ["pickle"]


def test_extension_is_ignored() -> None:
    data = gzip.compress(b"abc")
    assert formats(data, "model.safetensors") == ["gzip"]

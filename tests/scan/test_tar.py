"""Tar scanner: members scanned, traversal, links and devices, legacy torch tar."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile

import pytest
from archive_helpers import BENIGN_PICKLE, MALICIOUS_PICKLE, make_zip, scan_bytes

from modelguard.limits import Limits


def make_tar(
    members: list[tarfile.TarInfo | tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_benign_tar_is_clean() -> None:
    result = scan_bytes(make_tar([("model/data.pkl", BENIGN_PICKLE), ("model/README", b"hi")]))
    assert result.format == "tar"
    assert result.serious() == []


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_malicious_member_is_found(fmt: int) -> None:
    result = scan_bytes(make_tar([("weights.pkl", MALICIOUS_PICKLE)], fmt))
    assert result.members_with("MG101") == {("weights.pkl",)}


def test_checkpoint_inside_tar_is_scanned_as_zip() -> None:
    ckpt = make_zip([("archive/data.pkl", MALICIOUS_PICKLE)])
    result = scan_bytes(make_tar([("ckpt.pt", ckpt)]))
    assert result.members_with("MG101") == {("ckpt.pt", "archive/data.pkl")}


@pytest.mark.parametrize("name", ["../escape.pkl", "/etc/cron.d/job", "a/../../b"])
def test_traversal(name: str) -> None:
    result = scan_bytes(make_tar([(name, b"x")]))
    assert [f.evidence for f in result.with_rule("MG201")] == [name]


@pytest.mark.parametrize(
    ("kind", "linkname"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "other"), (tarfile.CHRTYPE, ""),
     (tarfile.BLKTYPE, ""), (tarfile.FIFOTYPE, "")],
)  # fmt: skip
def test_links_and_devices(kind: bytes, linkname: str) -> None:
    members: list[tarfile.TarInfo | tuple[str, bytes]] = [("other", b"x")]
    members.append(special("node", kind, linkname))
    result = scan_bytes(make_tar(members))
    assert len(result.with_rule("MG206")) == 1


def test_directories_are_not_links() -> None:
    result = scan_bytes(make_tar([special("dir", tarfile.DIRTYPE), ("dir/f", b"x")]))
    assert "MG206" not in result.rules


def test_duplicates_every_copy_scanned() -> None:
    result = scan_bytes(make_tar([("w.pkl", MALICIOUS_PICKLE), ("w.pkl", BENIGN_PICKLE)]))
    assert [f.evidence for f in result.with_rule("MG202")] == ["w.pkl"]
    assert result.members_with("MG101") == {("w.pkl (copy 1 of 2)",)}


def _text(value: str) -> bytes:
    return b"X" + struct.pack("<I", len(value)) + value.encode()


def _record(*parts: bytes) -> bytes:
    """A protocol 2 pickle of a 3-tuple built from already-pickled parts."""
    return b"\x80\x02" + b"".join(parts) + b"\x87."


FLOAT_STORAGE = b"ctorch\nFloatStorage\n"
DOUBLE_STORAGE = b"ctorch\nDoubleStorage\n"
FLOAT_TENSOR = b"ctorch\nFloatTensor\n"


def _storages(records: list[bytes], views: bytes = pickle.dumps([], protocol=2)) -> bytes:
    """The storages member: count, records, then the pickled storage views list."""
    return pickle.dumps(len(records), protocol=2) + b"".join(records) + views


def _tensors(records: list[bytes]) -> bytes:
    return pickle.dumps(len(records), protocol=2) + b"".join(records)


def _storage(key: str, storage_class: bytes, numel: int, element: int) -> bytes:
    record = _record(_text(key), _text("cpu"), storage_class)
    return record + struct.pack("<q", numel) + b"\x00" * (numel * element)


def _tensor(key: str, storage: str, shape: tuple[int, ...]) -> bytes:
    record = _record(_text(key), _text(storage), FLOAT_TENSOR)
    strides = (1,) * len(shape)
    raw = struct.pack("<i", len(shape)) + b"\x00" * 4
    return record + raw + struct.pack(f"<{2 * len(shape)}q", *shape, *strides) + b"\x00" * 8


def _legacy_tar(storages: bytes, tensors: bytes, pickled: bytes = BENIGN_PICKLE) -> bytes:
    sys_info = pickle.dumps({"protocol_version": 1000, "little_endian": True}, protocol=2)
    return make_tar(
        [("sys_info", sys_info), ("pickle", pickled), ("storages", storages), ("tensors", tensors)]
    )


def _clean_records() -> tuple[bytes, bytes]:
    storages = _storages([_storage("0", FLOAT_STORAGE, 6, 4), _storage("1", DOUBLE_STORAGE, 3, 8)])
    tensors = _tensors([_tensor("t0", "0", (2, 3)), _tensor("t1", "1", (3,))])
    return storages, tensors


def test_legacy_torch_tar_clean() -> None:
    result = scan_bytes(_legacy_tar(*_clean_records()))
    assert result.format == "torch-legacy-tar"
    assert result.serious() == []
    assert "MG106" not in result.rules


def test_legacy_torch_tar_every_record_pickle_is_walked() -> None:
    storages, tensors = _clean_records()
    # A payload as the last storage record, after raw bytes of the earlier ones.
    evil = MALICIOUS_PICKLE + struct.pack("<q", 0)
    storages = _storages(
        [_storage("0", FLOAT_STORAGE, 6, 4), _storage("1", DOUBLE_STORAGE, 3, 8), evil]
    )
    result = scan_bytes(_legacy_tar(storages, tensors))
    assert result.members_with("MG101") == {("storages",)}


def test_legacy_torch_tar_storage_views_pickle_is_walked() -> None:
    _, tensors = _clean_records()
    storages = _storages([_storage("0", FLOAT_STORAGE, 6, 4)], views=MALICIOUS_PICKLE)
    assert scan_bytes(_legacy_tar(storages, tensors)).members_with("MG101") == {("storages",)}


def test_legacy_torch_tar_main_pickle_is_scanned_whatever_it_looks_like() -> None:
    result = scan_bytes(_legacy_tar(*_clean_records(), pickled=b"\x00" + MALICIOUS_PICKLE))
    assert "MG105" in result.rules  # walked as a pickle despite the bad first byte
    evil = scan_bytes(_legacy_tar(*_clean_records(), pickled=MALICIOUS_PICKLE))
    assert evil.members_with("MG101") == {("pickle",)}


def test_legacy_torch_tar_broken_framing() -> None:
    storages, tensors = _clean_records()
    lying = _record(_text("0"), _text("cpu"), FLOAT_STORAGE) + struct.pack("<q", 10**6) + bytes(24)
    result = scan_bytes(_legacy_tar(_storages([lying]), tensors))
    assert "legacy-record-framing" in {f.evidence for f in result.with_rule("MG205")}
    result = scan_bytes(_legacy_tar(storages + b"hidden", tensors))
    assert result.members_with("MG106") == {("storages",)}


def test_legacy_torch_tar_with_symlink() -> None:
    data = make_tar([
        ("sys_info", BENIGN_PICKLE), ("pickle", BENIGN_PICKLE), ("tensors", BENIGN_PICKLE),
        special("storages", tarfile.SYMTYPE, "/root/.ssh/authorized_keys"),
    ])  # fmt: skip
    result = scan_bytes(data)
    assert result.format == "torch-legacy-tar"
    assert [f.evidence for f in result.with_rule("MG206")] == [
        "storages -> /root/.ssh/authorized_keys"
    ]


def test_member_cap() -> None:
    data = make_tar([(f"f{i}", b"x") for i in range(10)])
    result = scan_bytes(data, limits=Limits(max_archive_members=3))
    assert "archive members" in {f.evidence for f in result.with_rule("MG002")}


def test_hidden_data_after_damaged_header() -> None:
    good = make_tar([("a.txt", b"hello")])
    data = bytearray(make_tar([("a.txt", b"hello"), ("evil.pkl", MALICIOUS_PICKLE)]))
    # Break the second header's checksum: tar readers stop there and never see evil.pkl.
    data[512 + 512 + 148 : 512 + 512 + 156] = b"0000000\x00"
    result = scan_bytes(bytes(data))
    assert "trailing" in {f.evidence for f in result.with_rule("MG205")}
    assert "MG205" not in scan_bytes(good).rules


@pytest.mark.parametrize("cut", [100, 600, 1100, 1600])
def test_truncated_tar(cut: int) -> None:
    data = make_tar([("a.pkl", BENIGN_PICKLE * 20), ("b.pkl", MALICIOUS_PICKLE)])
    result = scan_bytes(data[:cut])
    assert result.findings
    assert "MG004" not in result.rules


def test_oversized_pax_header_is_not_read_into_memory() -> None:
    info = tarfile.TarInfo("weights.pkl")
    info.size = len(BENIGN_PICKLE)
    info.pax_headers = {"comment": "x" * 5000}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(info, io.BytesIO(BENIGN_PICKLE))
    data = buffer.getvalue()
    result = scan_bytes(data, limits=Limits(max_header_bytes=1000))
    assert "tar extended header size" in {f.evidence for f in result.with_rule("MG002")}
    assert "MG002" not in scan_bytes(data).rules


def test_oversized_long_name_after_first_member() -> None:
    long_name = "d/" * 3000 + "evil.pkl"
    data = make_tar([("a.txt", b"x"), (long_name, MALICIOUS_PICKLE)], tarfile.GNU_FORMAT)
    result = scan_bytes(data, limits=Limits(max_header_bytes=1000))
    assert "tar extended header size" in {f.evidence for f in result.with_rule("MG002")}
    assert "MG101" in scan_bytes(data).rules

"""Tar scanner: members scanned, traversal, links and devices, legacy torch tar."""

from __future__ import annotations

import io
import tarfile

import pytest
from archive_helpers import BENIGN_PICKLE, MALICIOUS_PICKLE, make_zip, scan_bytes

from modelguard.scan.limits import Limits


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


def test_legacy_torch_tar_pickles_are_scanned() -> None:
    # torch.save before 0.4: a tar whose members are unpickled whatever they look like.
    data = make_tar([
        ("sys_info", BENIGN_PICKLE), ("pickle", b"\x00" + MALICIOUS_PICKLE),
        ("storages", BENIGN_PICKLE), ("tensors", BENIGN_PICKLE),
    ])  # fmt: skip
    result = scan_bytes(data)
    assert result.format == "torch-legacy-tar"
    assert "MG105" in result.rules  # scanned as a pickle even with a bad first byte
    clean = make_tar([(n, BENIGN_PICKLE) for n in ("sys_info", "pickle", "storages", "tensors")])
    assert scan_bytes(clean).serious() == []
    evil = make_tar([(n, MALICIOUS_PICKLE) for n in ("sys_info", "pickle", "storages", "tensors")])
    assert len(scan_bytes(evil).members_with("MG101")) == 4


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

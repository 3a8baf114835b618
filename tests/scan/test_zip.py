"""Zip scanner: flavours, anomalies a loader could read differently, bounded reading."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import h5py
import pytest
from archive_helpers import (
    BENIGN_PICKLE,
    MALICIOUS_PICKLE,
    local_offset,
    make_zip,
    patch_central,
    patch_local,
    scan_bytes,
    torch_zip,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard.limits import Limits
from modelguard.scan import zip_layout


def test_benign_torch_layout_is_clean_and_named() -> None:
    result = scan_bytes(torch_zip(BENIGN_PICKLE))
    assert result.format == "pytorch-zip"
    assert result.serious() == []


@pytest.mark.parametrize("prefix", ["archive", "mymodel", "resnet50_v2"])
def test_malicious_data_pkl_found_under_any_prefix(prefix: str) -> None:
    result = scan_bytes(torch_zip(MALICIOUS_PICKLE, prefix=prefix))
    assert result.format == "pytorch-zip"
    assert result.members_with("MG101") == {(f"{prefix}/data.pkl",)}


def test_pickle_member_scanned_even_if_it_does_not_look_like_one() -> None:
    # torch unpickles data.pkl whatever its first byte; so does the scan.
    odd = b"\x00" + MALICIOUS_PICKLE
    result = scan_bytes(torch_zip(odd))
    assert "MG105" in result.rules  # the walker sees the damage, not "unknown format"
    assert "MG001" not in result.rules


def test_pkl_anywhere_is_scanned() -> None:
    data = make_zip([("nested/dir/extra.pkl", MALICIOUS_PICKLE), ("readme.txt", b"hi")])
    result = scan_bytes(data)
    assert result.format == "zip"
    assert result.members_with("MG101") == {("nested/dir/extra.pkl",)}


def test_storage_holding_a_pickle_with_imports_is_flagged() -> None:
    # torch reads a storage as raw bytes, but a pickle there is a payload waiting for
    # whoever unpickles the member; tensor bytes that merely start with an opcode are not.
    data = torch_zip(BENIGN_PICKLE, extra=[("archive/data/1", MALICIOUS_PICKLE)])
    assert scan_bytes(data).members_with("MG101") == {("archive/data/1",)}
    floats = bytes(range(0x20, 0x80)) * 64  # starts with an opcode letter, then data
    assert scan_bytes(torch_zip(BENIGN_PICKLE, extra=[("archive/data/1", floats)])).serious() == []
    # The same bytes outside a storage slot are sniffed and scanned.
    data = torch_zip(BENIGN_PICKLE, extra=[("archive/notes/1", MALICIOUS_PICKLE)])
    assert "MG101" in scan_bytes(data).rules


def test_deflated_members_are_decompressed() -> None:
    data = make_zip([("a/data.pkl", MALICIOUS_PICKLE)], zipfile.ZIP_DEFLATED)
    assert "MG101" in scan_bytes(data).rules


def test_bzip2_members_are_decompressed() -> None:
    data = make_zip([("payload.pkl", MALICIOUS_PICKLE)], zipfile.ZIP_BZIP2)
    assert "MG101" in scan_bytes(data).rules


def test_unsupported_method_is_reported_not_passed() -> None:
    # Method 98 (PPMd): neither zipfile nor PyTorch's reader reads it.
    data = make_zip([("payload.pkl", MALICIOUS_PICKLE)], zipfile.ZIP_LZMA)
    data = patch_local(patch_central(data, "payload.pkl", method=98), "payload.pkl", method=98)
    result = scan_bytes(data)
    assert result.members_with("MG208") == {()}
    assert "MG004" not in result.rules


@pytest.mark.parametrize(
    "name", ["../../etc/cron.d/x", "/etc/passwd", "a/../../b.txt", "C:\\Windows\\x.dll", "..\\x"]
)
def test_traversal_names(name: str) -> None:
    result = scan_bytes(make_zip([(name, b"hello")]))
    assert [f.evidence for f in result.with_rule("MG201")] == [name]


def test_ordinary_names_are_not_traversal() -> None:
    data = make_zip([("a/b..c/d.txt", b"x"), ("x/.hidden", b"y"), ("dots..", b"z")])
    assert "MG201" not in scan_bytes(data).rules


def test_duplicates_every_copy_is_scanned() -> None:
    # zipfile returns the last copy (benign); PyTorch's reader may return the first.
    data = make_zip([("archive/data.pkl", MALICIOUS_PICKLE), ("archive/data.pkl", BENIGN_PICKLE)])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("archive/data.pkl") == BENIGN_PICKLE  # what a naive scanner sees
    result = scan_bytes(data)
    assert [f.evidence for f in result.with_rule("MG202")] == ["archive/data.pkl"]
    assert result.members_with("MG101") == {("archive/data.pkl (copy 1 of 2)",)}


def test_unique_names_have_no_duplicate_finding() -> None:
    assert "MG202" not in scan_bytes(torch_zip(BENIGN_PICKLE)).rules


def test_encrypted_flag_on_plain_bytes_does_not_hide_them() -> None:
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        data = make_zip([("secret.pkl", MALICIOUS_PICKLE)], method)
        data = patch_central(data, "secret.pkl", flags=0x1)
        data = patch_local(data, "secret.pkl", flags=0x1)
        result = scan_bytes(data)
        assert {f.evidence for f in result.with_rule("MG203")} == {"secret.pkl: plain"}
        assert result.members_with("MG101") == {("secret.pkl",)}


def test_really_encrypted_member_is_reported_and_not_read() -> None:
    data = make_zip([("secret.pkl", MALICIOUS_PICKLE)])
    data = patch_central(data, "secret.pkl", flags=0x1, crc=0x12345678)
    data = patch_local(data, "secret.pkl", flags=0x1)
    result = scan_bytes(data)
    assert {f.evidence for f in result.with_rule("MG203")} == {"secret.pkl"}
    assert "MG101" not in result.rules


def test_declared_bomb_is_reported_without_decompressing() -> None:
    data = make_zip([("big.bin", b"x" * 1000)], zipfile.ZIP_DEFLATED)
    data = patch_central(data, "big.bin", size=0xFFFF0000)
    result = scan_bytes(data)
    assert [f.evidence for f in result.with_rule("MG204")] == ["big.bin"]


def test_real_bomb_stops_on_ratio() -> None:
    limits = Limits(bomb_min_size=1 << 20, max_compression_ratio=50)
    data = make_zip([("zeros.bin", b"\x00" * (8 << 20))], zipfile.ZIP_DEFLATED)
    # Declared size honest but small-looking: lie about it so only decompression reveals it.
    compressed = zipfile.ZipFile(io.BytesIO(data)).getinfo("zeros.bin").compress_size
    data = patch_central(data, "zeros.bin", size=compressed * 2)
    result = scan_bytes(data, limits=limits)
    assert "MG205" in result.rules  # more output than declared
    honest = make_zip([("zeros.bin", b"\x00" * (8 << 20))], zipfile.ZIP_DEFLATED)
    assert "MG204" in scan_bytes(honest, limits=limits).rules


def test_highly_compressible_small_member_is_not_a_bomb() -> None:
    # np.savez_compressed of zeros: huge ratio, tiny size.
    data = make_zip([("zeros.npy", b"\x00" * 200_000)], zipfile.ZIP_DEFLATED)
    assert "MG204" not in scan_bytes(data).rules


def test_member_cap_reports_mg002() -> None:
    limits = Limits(max_member_bytes=1000)
    data = make_zip([("blob.pkl", BENIGN_PICKLE + b"\x00" * 5000)], zipfile.ZIP_DEFLATED)
    assert "MG002" in scan_bytes(data, limits=limits).rules


def test_member_count_cap_reports_mg002() -> None:
    data = make_zip([(f"m{i}.txt", b"x") for i in range(20)])
    result = scan_bytes(data, limits=Limits(max_archive_members=5))
    assert [f.evidence for f in result.with_rule("MG002")] == ["archive members"]


def test_crc_mismatch_is_reported() -> None:
    data = make_zip([("archive/data.pkl", BENIGN_PICKLE)])
    result = scan_bytes(patch_central(data, "archive/data.pkl", crc=0xDEADBEEF))
    assert "archive/data.pkl: crc" in {f.evidence for f in result.with_rule("MG205")}
    assert "MG205" not in scan_bytes(data).rules


def test_crc_mismatch_in_deflated_member() -> None:
    data = make_zip([("m.pkl", BENIGN_PICKLE)], zipfile.ZIP_DEFLATED)
    data = patch_central(data, "m.pkl", crc=0x12345678)
    assert "m.pkl: crc" in {f.evidence for f in scan_bytes(data).with_rule("MG205")}


def test_corrupt_deflate_stream_is_a_finding() -> None:
    data = bytearray(make_zip([("m.pkl", BENIGN_PICKLE * 20)], zipfile.ZIP_DEFLATED))
    start = local_offset(bytes(data), "m.pkl") + 30 + len("m.pkl")
    data[start : start + 4] = b"\xff\xff\xff\xff"
    result = scan_bytes(bytes(data))
    assert "MG205" in result.rules
    assert "MG004" not in result.rules


def test_local_name_disagreeing_with_directory() -> None:
    data = make_zip([("archive/data.pkl", BENIGN_PICKLE)])
    pos = local_offset(data, "archive/data.pkl") + 30
    forged = data[:pos] + b"archive/evil.pkl" + data[pos + len("archive/evil.pkl") :]
    result = scan_bytes(forged)
    assert any("local header names it" in f.message for f in result.with_rule("MG205"))


def test_overlapping_members() -> None:
    data = make_zip([("a.txt", b"A" * 100), ("b.txt", b"B" * 100)])
    # Point b's directory record at a's local header: two names, one byte range.
    data = patch_central(data, "b.txt", header_offset=local_offset(data, "a.txt"))
    result = scan_bytes(data)
    assert any("overlap" in (f.evidence or "") for f in result.with_rule("MG205"))


def test_hidden_bytes_between_members() -> None:
    first = make_zip([("a.txt", b"A")])
    # Rebuild with 50 junk bytes after a's data by editing offsets of a 2-member zip.
    data = make_zip([("a.txt", b"A"), ("b.txt", b"B")])
    b_off = local_offset(data, "b.txt")
    junk = b"J" * 50
    cd_start = struct.unpack_from("<I", data, data.rfind(b"PK\x05\x06") + 16)[0]
    body = data[:b_off] + junk + data[b_off:cd_start]
    central = bytearray(data[cd_start:])
    fixed = patch_central(
        bytes(data[:cd_start]) + bytes(central), "b.txt", header_offset=b_off + 50
    )
    central = bytearray(fixed[cd_start:])
    eocd = central.rfind(b"PK\x05\x06")
    struct.pack_into("<I", central, eocd + 16, cd_start + 50)
    result = scan_bytes(body + bytes(central))
    assert "gap:a.txt" in {f.evidence for f in result.with_rule("MG205")}
    assert "MG205" not in scan_bytes(first).rules


def test_pickle_zip_polyglot_scans_both() -> None:
    # torch.load reads the leading pickle; zipfile reads the archive after it.
    data = MALICIOUS_PICKLE + torch_zip(BENIGN_PICKLE)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("archive/data.pkl") == BENIGN_PICKLE
    result = scan_bytes(data)
    assert result.format == "pickle"  # what torch.load reads it as
    assert {"MG207", "MG101"} <= result.rules
    assert "prefix" in {f.evidence for f in result.with_rule("MG205")}
    assert () in result.members_with("MG101")  # the leading pickle itself


def test_zip_behind_junk_prefix_is_still_scanned() -> None:
    data = b"\x00JUNK" * 10 + make_zip([("evil.pkl", MALICIOUS_PICKLE)])
    result = scan_bytes(data)
    assert result.members_with("MG101") == {("evil.pkl",)}


def test_nested_zip_members_are_scanned() -> None:
    inner = make_zip([("evil.pkl", MALICIOUS_PICKLE)])
    outer = make_zip([("inner.zip", inner)])
    assert scan_bytes(outer).members_with("MG101") == {("inner.zip", "evil.pkl")}


def test_zip_bomb_by_nesting_stops_at_depth_cap() -> None:
    data = make_zip([("evil.pkl", MALICIOUS_PICKLE)])
    for level in range(6):
        data = make_zip([(f"level{level}.zip", data)])
    result = scan_bytes(data, limits=Limits(max_archive_depth=3))
    assert "archive nesting depth" in {f.evidence for f in result.with_rule("MG002")}
    assert "MG101" not in result.rules


def test_zip64_archive_parses() -> None:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w") as archive,
        archive.open("big/data.pkl", "w", force_zip64=True) as member,
    ):
        member.write(MALICIOUS_PICKLE)
    result = scan_bytes(buffer.getvalue())
    assert result.members_with("MG101") == {("big/data.pkl",)}
    assert "MG205" not in result.rules


def _keras_config(layer: dict[str, object]) -> bytes:
    model = {"module": "keras", "class_name": "Sequential", "config": {"layers": [layer]}}
    return json.dumps(model).encode()


def _keras(config: bytes) -> bytes:
    weights = io.BytesIO()
    with h5py.File(weights, "w"):
        pass
    members = [("metadata.json", b"{}"), ("config.json", config)]
    return make_zip([*members, ("model.weights.h5", weights.getvalue())])


def test_keras_config_is_scanned_as_a_model_config() -> None:
    lambda_layer = {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {"name": "l", "function": {"class_name": "__lambda__", "config": {}}},
    }
    result = scan_bytes(_keras(_keras_config(lambda_layer)))
    assert result.format == "keras"
    assert result.members_with("MG330") == {("config.json",)}
    foreign = {"module": "evilpkg.layers", "class_name": "Backdoor", "config": {}}
    assert scan_bytes(_keras(_keras_config(foreign))).members_with("MG331") == {("config.json",)}
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2}}
    assert scan_bytes(_keras(_keras_config(dense))).serious() == []


def test_keras_config_over_header_cap() -> None:
    config = _keras_config({"module": "keras.layers", "class_name": "Dense", "config": {}})
    result = scan_bytes(_keras(config + b" " * 2000), limits=Limits(max_header_bytes=1000))
    assert "MG002" in result.rules


def test_npz_and_keras_flavours() -> None:
    npy = b"\x93NUMPY\x01\x00v\x00" + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }"
    npy = npy.ljust(10 + 118, b" ")[:-1] + b"\n" + b"\x00\x00\x80?"
    assert scan_bytes(make_zip([("a.npy", npy), ("b.npy", npy)])).format == "npz"
    keras = make_zip([("metadata.json", b"{}"), ("config.json", b"{}"), ("model.weights.h5", b"")])
    assert scan_bytes(keras).format == "keras"


@pytest.mark.parametrize("cut", [10, 100, 300, -60, -22, -5])
def test_truncated_zip_is_a_finding(cut: int) -> None:
    data = torch_zip(MALICIOUS_PICKLE)
    result = scan_bytes(data[:cut])
    assert result.findings, "truncation must be visible"
    assert "MG004" not in result.rules


def test_garbage_directory_is_a_finding() -> None:
    data = bytearray(make_zip([("a.txt", b"A"), ("b.txt", b"B")]))
    cd_start = struct.unpack_from("<I", data, data.rfind(b"PK\x05\x06") + 16)[0]
    data[cd_start + 60 : cd_start + 80] = b"\xff" * 20
    result = scan_bytes(bytes(data))
    assert "MG205" in result.rules


def _split(archive: bytes) -> tuple[bytes, bytes]:
    """(local entries, central directory) of a zip without comment."""
    eocd = archive.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", archive, eocd + 12)
    return archive[:cd_offset], archive[cd_offset : cd_offset + cd_size]


def test_two_central_directories_zipfile_and_pytorch_disagree() -> None:
    # One end record, two readings: miniz (torch.load) takes the recorded directory
    # offset as is and reads archive A; zipfile subtracts the "prefix" it infers
    # and reads archive B, built to sit exactly where that shift lands.
    benign = pickle.dumps("x" * (len(MALICIOUS_PICKLE) - 10), protocol=2)
    assert len(benign) == len(MALICIOUS_PICKLE)
    a_body, a_cd = _split(make_zip([("archive/data.pkl", MALICIOUS_PICKLE)]))
    b_body, b_cd = _split(make_zip([("archive/data.pkl", benign)]))
    assert len(a_body) == len(b_body) and len(a_cd) == len(b_cd)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(b_cd), len(a_body), 0)
    data = a_body + a_cd + b_body + b_cd + eocd
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("archive/data.pkl") == benign  # what zipfile-based tools see
    result = scan_bytes(data)
    assert "second-directory" in {f.evidence for f in result.with_rule("MG205")}
    assert result.members_with("MG101") == {("archive/data.pkl (as PyTorch reads it)",)}


_SEED = make_zip(
    [("archive/data.pkl", MALICIOUS_PICKLE), ("archive/data/0", b"\x00" * 64),
     ("inner.zip", make_zip([("x.pkl", BENIGN_PICKLE)], zipfile.ZIP_DEFLATED))],
    zipfile.ZIP_DEFLATED,
)  # fmt: skip


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_SEED) - 1), st.integers(0, 255), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_damaged_archives_never_crash(edits: list[tuple[int, int, bool]]) -> None:
    data = bytearray(_SEED)
    for pos, value, delete in edits:
        if delete:
            del data[pos % max(1, len(data)) : pos % max(1, len(data)) + 7]
        else:
            data[pos % len(data)] = value
    result = scan_bytes(bytes(data))  # raises on any scanner bug
    assert "MG004" not in result.rules


def test_directory_is_read_in_bounded_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Records straddle chunk borders; every one must still be parsed.
    monkeypatch.setattr(zip_layout._Window, "CHUNK", 50)
    members = [(f"dir/member-{i:03d}.txt", b"x") for i in range(40)]
    members.append(("dir/evil.pkl", MALICIOUS_PICKLE))
    result = scan_bytes(make_zip(members))
    assert result.members_with("MG101") == {("dir/evil.pkl",)}
    assert "MG205" not in result.rules


# -- members compressed as zipfile (numpy's npz, Keras) can, PyTorch's reader cannot ----------
def _npz(arrays: dict[str, object], method: int) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, value in arrays.items():
            member = io.BytesIO()
            np.save(member, value, allow_pickle=True)
            archive.writestr(f"{name}.npy", member.getvalue())
    return buffer.getvalue()


class _Touch:
    """Pickles to exec() of code that creates ``path``: the positive control's payload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({self.path!r}, 'w').close()",))


@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2])
def test_npz_members_zipfile_decompresses_are_scanned(method: int, tmp_path: Path) -> None:
    import subprocess
    import sys

    import numpy as np

    marker = tmp_path / "ran"
    data = _npz({"a": np.array([_Touch(str(marker))], dtype=object)}, method)
    path = tmp_path / "evil.npz"
    path.write_bytes(data)
    # Positive control: numpy.load reads the member through zipfile and unpickles it.
    load = "import numpy, sys; z = numpy.load(sys.argv[1], allow_pickle=True); z['a']"
    subprocess.run([sys.executable, "-c", load, str(path)], check=True)
    assert marker.exists()
    result = scan_bytes(data, name="evil.npz")
    assert result.members_with("MG101") == {("a.npy", "<object data>")}
    benign = _npz({"w": np.arange(12, dtype=np.float32)}, method)
    assert scan_bytes(benign, name="w.npz").serious() == []


def test_lzma_member_header_may_arrive_in_pieces() -> None:
    import lzma

    from modelguard.scan.decompress import zip_lzma_stream

    payload = b"modelguard " * 1000
    compressor = zipfile._get_compressor(zipfile.ZIP_LZMA)  # type: ignore[attr-defined]
    raw = compressor.compress(payload) + compressor.flush()
    stream, out = zip_lzma_stream(), b""
    for i in range(len(raw)):
        out += stream.pull(raw[i : i + 1], 1 << 20)
    assert out == payload and stream.eof
    with pytest.raises(lzma.LZMAError):
        zip_lzma_stream().pull(b"\x09\x14\x05\x00\xff\xff\xff\xff\xff", 100)

"""Every reading a loader can take is scanned; a file is clean only when all are.

The ``readings_*`` fixtures (``fixtures/gen_readings.py``) each hide a payload
where a one-format sniffer does not look; ``tests/test_canary.py`` proves the
real loader runs each one. Here the CLI must fail on each (``--fail-on
medium``) and pass its benign twin, and the mechanisms are checked one by one
on bytes built in the test.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import BENIGN_PICKLE, MALICIOUS_PICKLE, make_zip, scan_bytes, torch_zip
from click.testing import CliRunner

from modelguard.cli.main import cli
from modelguard.findings import Location
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import claimed_suffix, hdf5_superblock_offsets, scan_readings
from modelguard.scan.pickle_file import starts_pickle

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ENTRIES: list[dict[str, Any]] = [
    e
    for e in json.loads((FIXTURES / "manifest.json").read_text())["files"]
    if Path(e["path"]).name.startswith("readings_")
]


def readings(data: bytes, name: str = "x") -> list[str]:
    inp = Input(io.BytesIO(data), len(data), name)
    return scan_readings(inp, ScanContext(location=Location(name)))


def test_every_family_has_malicious_and_benign_files() -> None:
    kinds = {e["kind"] for e in ENTRIES}
    assert kinds == {"benign", "malicious"}
    assert sum(e["kind"] == "malicious" for e in ENTRIES) >= 20


@pytest.mark.parametrize("entry", ENTRIES, ids=[Path(e["path"]).name for e in ENTRIES])
def test_cli_fails_on_the_malicious_and_passes_the_twin(entry: dict[str, Any]) -> None:
    path = FIXTURES / entry["path"]
    result = CliRunner().invoke(
        cli, ["scan", "--no-cache", "--fail-on", "medium", str(path)], catch_exceptions=False
    )
    expected = 1 if entry["kind"] == "malicious" else 0
    assert result.exit_code == expected, result.output


# -- pickle.load starts at byte 0 ------------------------------------------------------
def test_a_first_argument_longer_than_any_window_does_not_hide_a_pickle() -> None:
    payload = b"cos\nsystem\n(S'id'\ntR."
    for length in (10, 5_000, 300_000):
        result = scan_bytes(b"S'" + b"a" * length + b"'\n0" + payload, name="x.bin")
        assert ("MG101", "os.system") in {(f.rule_id, f.evidence) for f in result.findings}


def test_an_instance_call_in_three_opcodes_counts_though_the_stream_breaks() -> None:
    # MARK, STRING, INST: pickle.load has run os.system before it finds no STOP.
    result = scan_bytes(b"(S'id'\nios\nsystem\n", name="x.bin")
    assert "MG101" in result.rules


def test_text_that_starts_with_an_opcode_is_not_a_pickle() -> None:
    for text in (b"lorem ipsum\n", b"class Foo:\n    pass\n", b"cmod\n\xf8\n", b"N."):
        result = scan_bytes(text + b"\x00trailing", name="notes.bin")
        assert result.serious() == [], text
        assert "MG001" in result.rules, text


@pytest.mark.parametrize("first", [b"P", b"Q", b"\x80\x09", b"\x00", b""])
def test_first_bytes_no_unpickler_gets_past(first: bytes) -> None:
    assert not starts_pickle(first)


# -- several readings of one file -------------------------------------------------------
def test_a_zip_behind_any_format_is_a_second_reading() -> None:
    npy = (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", 118)
        + (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }".ljust(117) + b"\n")
    )
    data = npy + b"\x00" * 4 + torch_zip(MALICIOUS_PICKLE)
    assert readings(data) == ["numpy", "zip"]
    result = scan_bytes(data)
    assert "MG101" in result.rules
    assert {f.evidence for f in result.with_rule("MG207")} == {"numpy+zip"}


def test_a_zip_that_is_a_tar_member_is_that_member_only() -> None:
    buffer = io.BytesIO()
    inner = torch_zip(BENIGN_PICKLE)
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("release/model.pt")
        info.size = len(inner)
        archive.addfile(info, io.BytesIO(inner))
    assert readings(buffer.getvalue()) == ["tar"]


def test_hdf5_superblock_is_looked_for_where_the_library_looks() -> None:
    assert hdf5_superblock_offsets(100) == [0]
    assert hdf5_superblock_offsets(4097) == [0, 512, 1024, 2048, 4096]
    assert hdf5_superblock_offsets((1 << 30) + 5)[-1] == 1 << 30


@pytest.mark.parametrize("block", [512, 1024, 2048, 4096, 8192, 65536])
def test_user_block_of_any_power_of_two_holding_a_pickle(block: int) -> None:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=block) as handle:
        handle.attrs["note"] = "weights"
    data = bytearray(buffer.getvalue())
    data[: len(MALICIOUS_PICKLE)] = MALICIOUS_PICKLE
    assert readings(bytes(data)) == ["hdf5", "pickle"]
    assert "MG101" in scan_bytes(bytes(data)).rules


@pytest.mark.parametrize("dialect", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_is_read_in_every_dialect_tarfile_accepts(dialect: int) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=dialect) as archive:
        info = tarfile.TarInfo("payload.pkl")
        info.size = len(MALICIOUS_PICKLE)
        archive.addfile(info, io.BytesIO(MALICIOUS_PICKLE))
    assert readings(buffer.getvalue())[0] == "tar"
    assert scan_bytes(buffer.getvalue()).members_with("MG101") == {("payload.pkl",)}


def test_v7_tar_without_magic_is_a_tar() -> None:
    v7 = (FIXTURES / "benign/readings_torch_legacy_tar_v7.pt").read_bytes()
    assert v7[257:262] != b"ustar"
    assert readings(v7) == ["tar"]


@pytest.mark.parametrize("protocol", range(6))
def test_torch_legacy_is_told_by_its_magic_at_any_protocol(protocol: int) -> None:
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=protocol)
    data = magic + pickle.dumps(1001, protocol=protocol) + BENIGN_PICKLE
    assert readings(data) == ["torch-legacy"]


# -- names that claim a format ---------------------------------------------------------
def test_claimed_suffix_ignores_container_notes() -> None:
    assert claimed_suffix("a.zip!/w/x.NPY (copy 1 of 2)") == ".npy"
    assert claimed_suffix("dir.d/README") == ""


@pytest.mark.parametrize(
    "name",
    ["x.safetensors", "x.npy", "x.onnx", "x.keras", "x.h5", "x.pt", "x.npz", "x.joblib", "x.pkl"],
)
def test_a_claim_the_bytes_do_not_meet_is_medium(name: str) -> None:
    result = scan_bytes(b"just some text\n", name=name)
    claims = result.with_rule("MG005")
    assert [f.severity.label for f in claims] == ["medium"]
    assert "do not parse" in claims[0].message


def test_a_claim_inside_a_container_is_checked_too() -> None:
    result = scan_bytes(make_zip([("weights/x.npy", b"not an array")]))
    assert result.members_with("MG005") == {("weights/x.npy",)}


@pytest.mark.parametrize("name", ["m.pkl", "m.joblib", "m.pickle"])
def test_what_pickle_names_hold_meets_their_claim(name: str) -> None:
    # torch.save, joblib.dump (compressed too) and pickle.dump all write such names.
    import gzip
    import zlib

    for data in (BENIGN_PICKLE, gzip.compress(BENIGN_PICKLE), zlib.compress(BENIGN_PICKLE)):
        assert "MG005" not in scan_bytes(data, name=name).rules, data[:4]
    # A zip is a checkpoint named .pkl, but nothing joblib.load can read.
    torch_named = scan_bytes(torch_zip(BENIGN_PICKLE), name=name).rules
    assert ("MG005" in torch_named) is name.endswith(".joblib")


def test_a_met_claim_is_silent() -> None:
    assert "MG005" not in scan_bytes(torch_zip(BENIGN_PICKLE), name="m.pt").rules
    assert "MG005" not in scan_bytes(BENIGN_PICKLE, name="m.pkl").rules


# -- torch zips as PyTorch's reader sees them ------------------------------------------
def test_member_names_differing_in_case_are_duplicates_to_torch() -> None:
    data = make_zip([("archive/data.pkl", BENIGN_PICKLE), ("archive/DATA.pkl", MALICIOUS_PICKLE)])
    result = scan_bytes(data)
    assert {f.evidence for f in result.with_rule("MG202")} == {"case:archive/DATA.pkl"}
    assert result.members_with("MG101") == {("archive/DATA.pkl",)}


def test_storage_blob_is_glanced_at_not_read() -> None:
    # A storage that starts like a pickle but is data costs a few kilobytes at most.
    blob = b"K\x01" + bytes(range(256)) * 4096
    result = scan_bytes(torch_zip(BENIGN_PICKLE, extra=[("archive/data/1", blob)]))
    assert result.serious() == []


@pytest.mark.parametrize("seed", [0, 1])
def test_random_tensor_bytes_are_not_findings(seed: int) -> None:
    # Tensor data is noise to the scanner: about 1 in 100 random blobs starts with
    # EXT4 (0x84), which a standard unpickler cannot resolve. Seeded, not os.urandom.
    rng = random.Random(seed)
    blobs = [bytes([0x84]) + rng.randbytes(1023) for _ in range(50)]
    blobs += [rng.randbytes(1024) for _ in range(300)]
    assert all(starts_pickle(blob) for blob in blobs[:50])  # each one is walked
    extra = [(f"archive/data/{i}", blob) for i, blob in enumerate(blobs, start=1)]
    assert scan_bytes(torch_zip(BENIGN_PICKLE, extra=extra)).serious() == []
    for blob in blobs:
        assert scan_bytes(blob, name="w.bin").serious() == [], blob[:8].hex()


# -- TorchScript code ------------------------------------------------------------------
def test_torchscript_file_and_pickle_operations_are_named() -> None:
    source = (
        b"class M(Module):\n  def forward(self, x: Tensor) -> Tensor:\n"
        b'    _0 = torch.load("w.pt")\n    return x\n'
        b"  def __setstate__(self, state: Tuple[Tensor]) -> NoneType:\n"
        b'    torch.save(state, "x")\n    _1 = torch.from_file("y", True, 4)\n'
        b"    return None\n"
    )
    data = torch_zip(BENIGN_PICKLE, extra=[("archive/code/__torch__.py", source)])
    found = {f.evidence for f in scan_bytes(data).with_rule("MG340")}
    assert found == {
        "torch.load:forward",
        "torch.save:__setstate__",
        "torch.from_file:__setstate__",
    }


def test_torchscript_code_without_such_calls_is_quiet() -> None:
    source = b"class M(Module):\n  def forward(self, x: Tensor) -> Tensor:\n    return x\n"
    data = torch_zip(BENIGN_PICKLE, extra=[("archive/code/__torch__.py", source)])
    assert "MG340" not in scan_bytes(data).rules


# -- Keras layers that deserialise code --------------------------------------------------
def _keras_archive(layer: dict[str, Any]) -> bytes:
    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": [layer]}}
    return make_zip([("config.json", json.dumps(config).encode())])


def test_torch_module_wrapper_pickle_is_decoded_and_scanned() -> None:
    import base64

    pickled = base64.b64encode(MALICIOUS_PICKLE).decode()
    layer = {
        "module": "keras.layers",
        "class_name": "TorchModuleWrapper",
        "config": {"name": "w", "module": pickled},
    }
    result = scan_bytes(_keras_archive(layer), name="model.keras")
    assert result.format == "keras"
    assert "MG333" in result.rules
    assert result.members_with("MG101") == {("config.json", "$.config.layers[0].config.module")}


@pytest.mark.parametrize(
    ("function", "flagged"),
    [("io.write_file", True), ("raw_ops.ReadFile", True), ("math.add", False)],
)
def test_tf_op_lambda_naming_file_or_code_operations(function: str, flagged: bool) -> None:
    layer = {"class_name": "TFOpLambda", "config": {"name": "op", "function": function}}
    result = scan_bytes(_keras_archive(layer), name="model.keras")
    assert ("MG330" in result.rules) is flagged


def test_keras_archive_is_keras_by_name_without_metadata() -> None:
    lam = {"class_name": "Lambda", "config": {"function": {"class_name": "__lambda__"}}}
    assert "MG330" in scan_bytes(_keras_archive(lam), name="m.keras").rules


# -- archives --------------------------------------------------------------------------
def test_7z_without_py7zr_is_a_medium_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (FIXTURES / "malicious/readings_7z_exec_pickle.7z").read_bytes()
    monkeypatch.setitem(sys.modules, "py7zr", None)  # import fails as if not installed
    result = scan_bytes(data, name="bundle.7z")
    assert [f.severity.label for f in result.with_rule("MG003")] == ["medium"]


def test_7z_members_are_scanned() -> None:
    data = (FIXTURES / "malicious/readings_7z_exec_pickle.7z").read_bytes()
    result = scan_bytes(data, name="bundle.7z")
    assert result.format == "7z"
    assert result.members_with("MG101") == {("model.pkl",)}


def test_a_zip_start_is_probed_for_hdf5_only_under_an_hdf5_name() -> None:
    zipped = torch_zip(BENIGN_PICKLE)
    data = zipped.ljust(4096, b"\0") + b"\x89HDF\r\n\x1a\n" + b"\0" * 64
    assert "hdf5" not in readings(data, "model.pt")
    assert "hdf5" in readings(data, "model.h5")

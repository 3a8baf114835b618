"""PyTorch checkpoints made by torch itself: zip, TorchScript and legacy formats."""

from __future__ import annotations

import collections
import io
import os
import struct
import zipfile
from pathlib import Path

import pytest
from archive_helpers import BENIGN_PICKLE, MALICIOUS_PICKLE, scan_bytes, scan_path, scan_stream

from modelguard.scan.torch import MemberRole, zip_flavour

torch = pytest.importorskip("torch")
nn = torch.nn


class Evil:
    """Pickles as a call to os.system; saving it runs nothing."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1)[:, :8])


def _models() -> dict[str, object]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    lstm = nn.LSTM(4, 6, num_layers=2)
    block = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.Adam(mlp.parameters())
    mlp(torch.ones(1, 4)).sum().backward()
    opt.step()
    return {
        "mlp": mlp.state_dict(),
        "lstm": lstm.state_dict(),
        "transformer": block.state_dict(),
        "conv_bn": bn.state_dict(),
        "optimizer": {"model": mlp.state_dict(), "optim": opt.state_dict(), "epoch": 3},
        "half": {k: v.half() for k, v in mlp.state_dict().items()},
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    paths: dict[str, Path] = {}
    for name, obj in _models().items():
        paths[name] = folder / f"{name}.pt"
        torch.save(obj, paths[name])
        paths[f"{name}-legacy"] = folder / f"{name}-legacy.pt"
        torch.save(obj, paths[f"{name}-legacy"], _use_new_zipfile_serialization=False)
    net = TinyNet().eval()
    paths["scripted"] = folder / "scripted.pt"
    torch.jit.save(torch.jit.script(net), paths["scripted"])
    paths["traced"] = folder / "traced.pt"
    torch.jit.save(torch.jit.trace(net, torch.ones(1, 1, 4, 4)), paths["traced"])
    paths["evil"] = folder / "evil.pt"
    torch.save({"w": torch.ones(2), "x": Evil()}, paths["evil"])
    paths["evil-legacy"] = folder / "evil-legacy.pt"
    torch.save({"w": torch.ones(2), "x": Evil()}, paths["evil-legacy"],
               _use_new_zipfile_serialization=False)  # fmt: skip
    return paths


BENIGN_ZIP = ["mlp", "lstm", "transformer", "conv_bn", "optimizer", "half"]


@pytest.mark.parametrize("name", BENIGN_ZIP)
def test_benign_zip_checkpoints_are_clean(checkpoints: dict[str, Path], name: str) -> None:
    result = scan_path(checkpoints[name])
    assert result.format == "pytorch-zip"
    assert result.serious() == []


@pytest.mark.parametrize("name", BENIGN_ZIP)
def test_benign_legacy_checkpoints_are_clean(checkpoints: dict[str, Path], name: str) -> None:
    result = scan_path(checkpoints[f"{name}-legacy"])
    assert result.format == "torch-legacy"
    assert result.serious() == []
    assert "MG106" not in result.rules  # storage bytes after the pickles are expected


@pytest.mark.parametrize("name", ["scripted", "traced"])
def test_benign_torchscript_is_clean(checkpoints: dict[str, Path], name: str) -> None:
    result = scan_path(checkpoints[name])
    assert result.format == "torchscript"
    assert result.serious() == []


def test_malicious_zip_checkpoint(checkpoints: dict[str, Path]) -> None:
    result = scan_path(checkpoints["evil"])
    assert result.members_with("MG101") == {("evil/data.pkl",)}


def test_malicious_legacy_checkpoint(checkpoints: dict[str, Path]) -> None:
    result = scan_path(checkpoints["evil-legacy"])
    assert result.format == "torch-legacy"
    assert result.members_with("MG101") == {()}
    assert any("system" in (f.evidence or "") for f in result.with_rule("MG101"))


def test_legacy_with_appended_bytes_is_reported(checkpoints: dict[str, Path]) -> None:
    data = checkpoints["mlp-legacy"].read_bytes()
    assert "MG205" not in scan_bytes(data).rules
    result = scan_bytes(data + b"\x80\x02hidden" * 3)
    assert "legacy-storage-framing" in {f.evidence for f in result.with_rule("MG205")}


def test_torchscript_with_injected_payload_is_reported(checkpoints: dict[str, Path]) -> None:
    # Only the list builders and __torch__ classes are exempt in TorchScript pickles.
    data = checkpoints["scripted"].read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        members = [(i.filename, src.read(i)) for i in src.infolist()]
    members = [(n, MALICIOUS_PICKLE if n.endswith("constants.pkl") else d) for n, d in members]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name, payload in members:
            dst.writestr(name, payload)
    result = scan_bytes(out.getvalue())
    assert result.format == "torchscript"
    assert result.members_with("MG101") == {("scripted/constants.pkl",)}


def test_builders_outside_torchscript_are_not_exempt() -> None:
    # torch.jit._pickle in a plain checkpoint is read by Python's unpickler: no exemption.
    payload = b"\x80\x02ctorch.jit._pickle\nbuild_intlist\nq\x00]q\x01\x85q\x02Rq\x03."
    from archive_helpers import torch_zip

    result = scan_bytes(torch_zip(payload))
    assert result.format == "pytorch-zip"
    assert result.serious(), "an unexempted import must be reported"


def test_scan_reads_only_directory_and_pickles(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "big.pt"
    torch.save(nn.Linear(1024, 1024).state_dict(), path)  # ~4 MiB of storage
    data = path.read_bytes()
    storages = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename:
                name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
                start = info.header_offset + 30 + name_len + extra_len
                storages.append((start, start + info.compress_size))

    class Recorder(io.BytesIO):
        def __init__(self, initial: bytes) -> None:
            super().__init__(initial)
            self.reads: list[tuple[int, int]] = []

        def read(self, size: int | None = -1) -> bytes:
            at = self.tell()
            out = super().read(size)
            self.reads.append((at, at + len(out)))
            return out

    stream = Recorder(data)
    result = scan_stream(stream, len(data), "big.pt")
    assert result.serious() == []
    total = sum(b - a for a, b in stream.reads)
    assert total < 64 * 1024 < len(data) // 50
    # A storage is only glanced at (in case it holds a pickle): never read through.
    for s, e in storages:
        inside = sum(min(b, e) - max(a, s) for a, b in stream.reads if a < e and b > s)
        assert inside <= 8192, "a tensor storage was read"


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.8, 0.97])
@pytest.mark.parametrize("name", ["mlp", "mlp-legacy", "scripted", "evil-legacy"])
def test_truncated_checkpoints_give_findings(
    checkpoints: dict[str, Path], name: str, fraction: float
) -> None:
    data = checkpoints[name].read_bytes()
    result = scan_bytes(data[: int(len(data) * fraction)])
    assert result.findings, "truncation must be visible"
    assert "MG004" not in result.rules


def test_legacy_truncated_inside_pickles_is_reported(checkpoints: dict[str, Path]) -> None:
    data = checkpoints["mlp-legacy"].read_bytes()
    result = scan_bytes(data[:60])
    assert "MG105" in result.rules


def test_roles_of_torch_members() -> None:
    names = [
        "m/data.pkl", "m/data/0", "m/data/1", "m/byteorder", "m/version",
        "m/.data/serialization_id", "m/data/notes.txt", "m/extra/readme", "m/data/0.pkl",
    ]  # fmt: skip
    flavour, roles = zip_flavour(names)
    assert flavour == "pytorch-zip"
    assert roles == [
        MemberRole.PICKLE, MemberRole.STORAGE, MemberRole.STORAGE, MemberRole.METADATA,
        MemberRole.METADATA, MemberRole.METADATA, MemberRole.OTHER, MemberRole.OTHER,
        MemberRole.PICKLE,
    ]  # fmt: skip


def test_roles_of_torchscript_members() -> None:
    names = [
        "ts/data.pkl", "ts/constants.pkl", "ts/constants/0", "ts/code/__torch__.py",
        "ts/code/__torch__.py.debug_pkl", "other/x.pkl",
    ]  # fmt: skip
    flavour, roles = zip_flavour(names)
    assert flavour == "torchscript"
    assert roles == [
        MemberRole.TORCHSCRIPT_PICKLE, MemberRole.TORCHSCRIPT_PICKLE, MemberRole.STORAGE,
        MemberRole.TORCHSCRIPT_CODE, MemberRole.TORCHSCRIPT_PICKLE, MemberRole.PICKLE,
    ]  # fmt: skip


def test_storage_slot_needs_its_pickle() -> None:
    # "data/0" is raw storage only beside a data.pkl; in a plain zip it is sniffed.
    flavour, roles = zip_flavour(["x/data/0", "x/readme"])
    assert flavour == "zip"
    assert roles == [MemberRole.OTHER, MemberRole.OTHER]


def test_benign_pickle_is_not_mistaken_for_legacy() -> None:
    assert scan_bytes(BENIGN_PICKLE).format == "pickle"


def test_second_directory_is_what_torch_load_reads() -> None:
    # The zip scanner's two-directory case, checked against torch itself: torch.load
    # returns archive A while zipfile reads archive B. A carries an import
    # (collections.UserList) that only a scan of PyTorch's view can report.
    def save(obj: object) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    def split(archive: bytes) -> tuple[bytes, bytes, int]:
        eocd = archive.rfind(b"PK\x05\x06")
        count, size, offset = struct.unpack_from("<HII", archive, eocd + 10)
        return archive[:offset], archive[offset : offset + size], count

    a_body, a_cd, count = split(save({"v": collections.UserList([1, 3])}))
    for width in range(1, 200):  # a plain-string B whose layout matches A's byte for byte
        b_body, b_cd, _ = split(save({"v": "x" * width}))
        if (len(b_body), len(b_cd)) == (len(a_body), len(a_cd)):
            break
    else:
        pytest.fail("no same-size benign archive")
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(b_cd), len(a_body), 0)
    data = a_body + a_cd + b_body + b_cd + eocd
    # Our own benign objects: loading them runs nothing.
    assert torch.load(io.BytesIO(data), weights_only=False) == {"v": collections.UserList([1, 3])}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert b"UserList" not in archive.read("archive/data.pkl")
    result = scan_bytes(data)
    assert result.format == "pytorch-zip"
    assert "second-directory" in {f.evidence for f in result.with_rule("MG205")}
    flagged = {f.location.members for f in result.findings if f.rule_id in ("MG102", "MG103")}
    assert flagged == {("archive/data.pkl (as PyTorch reads it)",)}

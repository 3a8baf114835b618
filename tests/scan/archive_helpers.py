"""Builders and scan shortcuts shared by the archive scanner tests."""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

from modelguard.findings import Finding, Location, Severity
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import dispatch

# posix.system("id") via GLOBAL + REDUCE, protocol 2: what a malicious checkpoint carries.
MALICIOUS_PICKLE = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."
BENIGN_PICKLE = pickle.dumps({"weights": [1.0, 2.0, 3.0], "step": 7}, protocol=2)


class Scanned:
    """The outcome of scanning one artifact: findings and the format label."""

    def __init__(self, ctx: ScanContext, fmt: str) -> None:
        self.findings: list[Finding] = list(ctx.findings)
        self.format = ctx.format_label or fmt

    @property
    def rules(self) -> set[str]:
        return {f.rule_id for f in self.findings}

    def with_rule(self, rule_id: str) -> list[Finding]:
        return [f for f in self.findings if f.rule_id == rule_id]

    def serious(self) -> list[Finding]:
        return [f for f in self.findings if f.severity >= Severity.MEDIUM]

    def members_with(self, rule_id: str) -> set[tuple[str, ...]]:
        return {f.location.members for f in self.with_rule(rule_id)}


def scan_stream(
    stream: io.RawIOBase | io.BufferedIOBase | io.BytesIO,
    size: int,
    name: str = "artifact",
    limits: Limits | None = None,
) -> Scanned:
    ctx = ScanContext(location=Location(name), settings=ScanSettings(limits or Limits()))
    fmt = dispatch(Input(stream=stream, size=size, name=name), ctx)  # type: ignore[arg-type]
    return Scanned(ctx, fmt)


def scan_bytes(data: bytes, name: str = "artifact", limits: Limits | None = None) -> Scanned:
    return scan_stream(io.BytesIO(data), len(data), name, limits)


def scan_path(path: str | os.PathLike[str], limits: Limits | None = None) -> Scanned:
    with open(path, "rb") as handle:
        return scan_stream(handle, os.path.getsize(path), Path(path).name, limits)


def make_zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip with the members in order; duplicate names are allowed on purpose."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is what some tests want
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return buffer.getvalue()


def torch_zip(
    data_pkl: bytes, prefix: str = "archive", extra: list[tuple[str, bytes]] | None = None
) -> bytes:
    """A zip laid out like torch.save's, with a chosen data.pkl."""
    members = [
        (f"{prefix}/data.pkl", data_pkl),
        (f"{prefix}/byteorder", b"little"),
        (f"{prefix}/data/0", b"\x00" * 64),
        (f"{prefix}/version", b"3\n"),
    ]
    return make_zip(members + (extra or []))


# Central directory record field offsets (APPNOTE 4.3.12) and local header (4.3.7).
CENTRAL_FIELDS = {
    "flags": (8, "<H"),
    "method": (10, "<H"),
    "crc": (16, "<I"),
    "compressed_size": (20, "<I"),
    "size": (24, "<I"),
    "header_offset": (42, "<I"),
}
LOCAL_FIELDS = {
    "flags": (6, "<H"),
    "method": (8, "<H"),
    "crc": (14, "<I"),
    "compressed_size": (18, "<I"),
    "size": (22, "<I"),
}


def _central_offsets(data: bytes) -> list[tuple[int, str]]:
    eocd = data.rfind(b"PK\x05\x06")
    count, _, cd_offset = struct.unpack_from("<HII", data, eocd + 10)
    out = []
    pos = cd_offset
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        out.append((pos, data[pos + 46 : pos + 46 + name_len].decode()))
        pos += 46 + name_len + extra_len + comment_len
    return out


def patch_central(data: bytes, name: str, index: int = 0, **fields: int) -> bytes:
    """Overwrite fields of the ``index``-th central record named ``name``."""
    buf = bytearray(data)
    pos = [p for p, n in _central_offsets(data) if n == name][index]
    for field, value in fields.items():
        off, fmt = CENTRAL_FIELDS[field]
        struct.pack_into(fmt, buf, pos + off, value)
    return bytes(buf)


def local_offset(data: bytes, name: str, index: int = 0) -> int:
    pos = [p for p, n in _central_offsets(data) if n == name][index]
    return int(struct.unpack_from("<I", data, pos + 42)[0])


def patch_local(data: bytes, name: str, index: int = 0, **fields: int) -> bytes:
    buf = bytearray(data)
    pos = local_offset(data, name, index)
    for field, value in fields.items():
        off, fmt = LOCAL_FIELDS[field]
        struct.pack_into(fmt, buf, pos + off, value)
    return bytes(buf)

"""The readings table: what a loader could take bytes for, and the one way down.

Format is decided by content, never by file name. ``FORMATS`` is an ordered
table of readings, each with a cheap predicate on the first bytes (and the
input, for readings found elsewhere than at offset 0) and the scanner that
reads it, named by dotted path so that a heavy library (onnx, h5py) loads only
when such a file is met. Readings without a predicate are reached only when a
container knows what its member is (``descend(..., as_format=...)``).

``descend`` is the one entrance to an inner file (archive member, embedded
pickle): it enforces the nesting cap, builds the child context from the
artifact's shared state and either sniffs the member or scans it as the format
its container's loader reads it as.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from modelguard.findings import Finding
from modelguard.rules.scan import ARCHIVE_POLYGLOT, UNSUPPORTED_FORMAT
from modelguard.scan.context import Input, ScanContext

HEAD_BYTES = 4096
ZIP_LOCAL = b"PK\x03\x04"
ZIP_EMPTY = b"PK\x05\x06"
NPY_MAGIC = b"\x93NUMPY"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
# torch.save's legacy (non-zip) format starts with the pickled magic number
# 0x1950a86a20f9469cfc6c, which pickles as LONG1 with these 10 payload bytes.
TORCH_LEGACY_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


class Scanner(Protocol):
    """A format scanner: reads ``inp`` without executing it, reports into ``ctx``."""

    def __call__(self, inp: Input, ctx: ScanContext) -> None: ...


Detector = Callable[[bytes, Input], bool]


@dataclass(frozen=True)
class Format:
    """One reading: its name, when it applies, and the scanner (``module:function``)."""

    name: str
    detect: Detector | None
    scanner: str

    def scan(self, inp: Input, ctx: ScanContext) -> None:
        module_name, _, func_name = self.scanner.partition(":")
        function: Scanner = getattr(importlib.import_module(module_name), func_name)
        inp.stream.seek(0)
        function(inp, ctx)


# -- predicates ------------------------------------------------------------------------
def _is_zip_start(head: bytes, inp: Input) -> bool:
    return head.startswith((ZIP_LOCAL, ZIP_EMPTY))


def _is_npy(head: bytes, inp: Input) -> bool:
    return head.startswith(NPY_MAGIC)


def _is_hdf5(head: bytes, inp: Input) -> bool:
    return head.startswith(HDF5_MAGIC) or any(
        inp.read_at(off, 8) == HDF5_MAGIC for off in (512, 1024, 2048) if off < inp.size
    )


def _is_ustar(head: bytes, inp: Input) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def _is_gzip(head: bytes, inp: Input) -> bool:
    return head.startswith(GZIP_MAGIC)


def _is_bzip2(head: bytes, inp: Input) -> bool:
    return head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4] in b"123456789"


def _is_xz(head: bytes, inp: Input) -> bool:
    return head.startswith(XZ_MAGIC)


# What joblib.load alone decompresses, by joblib's own magic numbers.
def _is_zlib(head: bytes, inp: Input) -> bool:
    # CM 8 with CINFO 7 (0x78), and the header check bits zlib verifies
    return len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0


def _is_lzma_alone(head: bytes, inp: Input) -> bool:
    return head.startswith(b"\x5d\x00")


def _is_lz4(head: bytes, inp: Input) -> bool:
    return head.startswith(b"\x04\x22\x4d\x18")


def _is_joblib_zfile(head: bytes, inp: Input) -> bool:
    from modelguard.scan.compressed import zfile_data_offset

    return zfile_data_offset(head) is not None


def _is_safetensors(head: bytes, inp: Input) -> bool:
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= inp.size - 8 and head[8:9] == b"{"


def _is_torch_legacy(head: bytes, inp: Input) -> bool:
    return head[2:].startswith(TORCH_LEGACY_MAGIC) or head.startswith(TORCH_LEGACY_MAGIC)


# ModelProto fields are serialised in field order by every exporter, so a model
# starts with ir_version (field 1, varint: tag 0x08) holding a small version.
_ONNX_SECOND_FIELD_TAGS = frozenset(
    {
        0x12,  # producer_name
        0x1A,  # producer_version
        0x22,  # domain
        0x28,  # model_version
        0x32,  # doc_string
        0x3A,  # graph
        0x42,  # opset_import
        0x72,  # metadata_props
        0x7A,  # training_info
        0x82,  # functions (field 25: two-byte tag)
    }
)


def _is_onnx(head: bytes, inp: Input) -> bool:
    return (
        len(head) >= 4
        and head[0] == 0x08
        and 1 <= head[1] <= 30
        and head[2] in _ONNX_SECOND_FIELD_TAGS
    )


def _is_pickle(head: bytes, inp: Input) -> bool:
    # The pickle scanner's own predicate, so sniffing and scanning agree on what
    # a pickle is (imported lazily: it is the bigger module).
    from modelguard.scan.pickle import plausible_pickle

    return plausible_pickle(head)


def _has_zip_directory(head: bytes, inp: Input) -> bool:
    from modelguard.scan.zip_layout import archive_present

    return archive_present(inp)


# -- the table -------------------------------------------------------------------------
_SCAN = "modelguard.scan"
FORMATS: tuple[Format, ...] = (
    Format("zip", _is_zip_start, f"{_SCAN}.zip:scan_zip"),
    Format("numpy", _is_npy, f"{_SCAN}.numpy:scan_npy"),
    Format("hdf5", _is_hdf5, f"{_SCAN}.keras:scan_hdf5"),
    Format("tar", _is_ustar, f"{_SCAN}.tar:scan_tar"),
    Format("gzip", _is_gzip, f"{_SCAN}.compressed:scan_gzip"),
    Format("bzip2", _is_bzip2, f"{_SCAN}.compressed:scan_bzip2"),
    Format("xz", _is_xz, f"{_SCAN}.compressed:scan_xz"),
    Format("zlib", _is_zlib, f"{_SCAN}.compressed:scan_zlib"),
    Format("lzma", _is_lzma_alone, f"{_SCAN}.compressed:scan_lzma"),
    Format("lz4", _is_lz4, f"{_SCAN}.compressed:scan_lz4"),
    Format("joblib-zfile", _is_joblib_zfile, f"{_SCAN}.compressed:scan_zfile"),
    Format("safetensors", _is_safetensors, f"{_SCAN}.safetensors:scan_safetensors"),
    Format("torch-legacy", _is_torch_legacy, f"{_SCAN}.torch:scan_torch_legacy"),
    Format("onnx", _is_onnx, f"{_SCAN}.onnx:scan_onnx"),
    Format("pickle", _is_pickle, f"{_SCAN}.pickle:scan_pickle_input"),
    # Members whose container's loader says what they are.
    Format("keras-config", None, f"{_SCAN}.keras:scan_keras_archive_config"),
    Format("torch-storages", None, f"{_SCAN}.torch_tar:scan_storages_member"),
    Format("torch-tensors", None, f"{_SCAN}.torch_tar:scan_tensors_member"),
)
_BY_NAME = {f.name: f for f in FORMATS}
# zipfile finds an archive by its end record, whatever precedes it; torch.load
# and numpy.load decide by the first bytes. A file both see differently is
# scanned both ways.
_ZIP_BEHIND_OF = frozenset({"pickle", "torch-legacy"})


def get(name: str) -> Format:
    """The reading called ``name`` (a KeyError names an unknown one)."""
    return _BY_NAME[name]


def sniff(inp: Input) -> list[str]:
    """Every format the input could be read as, the natural loader's choice first."""
    head = inp.read_at(0, HEAD_BYTES)
    primary = next((f.name for f in FORMATS if f.detect is not None and f.detect(head, inp)), None)
    formats = [primary] if primary else []
    if (primary is None or primary in _ZIP_BEHIND_OF) and _has_zip_directory(head, inp):
        formats.append("zip")
    return formats


def dispatch(inp: Input, ctx: ScanContext) -> str:
    """Sniff ``inp``, scan it with every matching reading, return the primary format."""
    formats = sniff(inp)
    if not formats:
        ctx.report(
            UNSUPPORTED_FORMAT, f"{inp.name}: format not recognised; skipped", evidence="unknown"
        )
        return "unknown"
    if len(formats) > 1:
        ctx.report(
            ARCHIVE_POLYGLOT,
            f"{inp.name} reads as {' and as '.join(formats)}; loaders disagree, each was scanned",
            evidence="+".join(formats),
        )
    for name in formats:
        get(name).scan(inp, ctx)
    return formats[0]


def descend(
    ctx: ScanContext,
    member: str,
    inp: Input,
    *,
    as_format: str | None = None,
    keep: Callable[[Finding], bool] | None = None,
) -> str:
    """Scan the inner file ``member`` one level below ``ctx``; returns its format name.

    ``as_format`` forces the reading its container's loader takes (a torch
    checkpoint's pickles are unpickled whatever their first bytes say); without
    it the member is sniffed. ``keep`` filters the findings made below (TorchScript
    archives resolve some globals themselves). The nesting cap (MG002) ends
    archive-in-archive chains.
    """
    if ctx.depth + 1 > ctx.limits.max_archive_depth:
        ctx.limit_reached("archive nesting depth", ctx.limits.max_archive_depth)
        return "unknown"
    child = ctx.child(member, keep=keep)
    if as_format is None:
        return dispatch(inp, child)
    get(as_format).scan(inp, child)
    return as_format

"""Format detection by magic bytes and structure, never by file extension.

``sniff`` returns every interpretation a loader could take, the one the format's
own loader takes first. More than one means a polyglot (MG207): each is scanned.
"""

from __future__ import annotations

import struct

from modelguard.scan.context import Input

HEAD_BYTES = 4096
ZIP_LOCAL = b"PK\x03\x04"
ZIP_EMPTY = b"PK\x05\x06"
ZIP_EOCD = b"PK\x05\x06"
NPY_MAGIC = b"\x93NUMPY"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
# torch.save's legacy (non-zip) format starts with the pickled magic number
# 0x1950a86a20f9469cfc6c, which pickles as LONG1 with these 10 payload bytes.
TORCH_LEGACY_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# Opcodes a protocol 0/1 pickle can plausibly start with.
_PICKLE_V0_START = frozenset(b"(cKNIJLFSUVX]}N)lde.0124GTBCMqrgph\x8a\x8c\x94\x95")


def _zip_eocd_near_end(inp: Input) -> bool:
    """True if an end-of-central-directory record lies where zipfile looks for one
    and points at a central directory (not four stray bytes in tensor data)."""
    from modelguard.scan.zip_layout import archive_present

    return archive_present(inp)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto fields are serialised in field order by every exporter, so a model
    # starts with ir_version (field 1, varint: tag 0x08) holding a small version.
    return (
        len(head) >= 4
        and head[0] == 0x08
        and 1 <= head[1] <= 30
        and head[2]
        in (
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
        )
    )


def _looks_like_pickle(head: bytes) -> bool:
    # A trial walk of the head by the pickle scanner, so that sniffing and
    # scanning agree on what a pickle is (imported lazily: it is the bigger module).
    from modelguard.scan.pickle import plausible_pickle

    return plausible_pickle(head)


def _primary(inp: Input, head: bytes) -> str | None:
    if head.startswith((ZIP_LOCAL, ZIP_EMPTY)):
        return "zip"
    if head.startswith(NPY_MAGIC):
        return "numpy"
    if head.startswith(HDF5_MAGIC) or any(
        inp.read_at(off, 8) == HDF5_MAGIC for off in (512, 1024, 2048) if off < inp.size
    ):
        return "hdf5"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4] in b"123456789":
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if _looks_like_safetensors(head, inp.size):
        return "safetensors"
    if head[2:].startswith(TORCH_LEGACY_MAGIC) or head.startswith(TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if _looks_like_onnx(head):
        return "onnx"
    if _looks_like_pickle(head):
        return "pickle"
    return None


def sniff(inp: Input) -> list[str]:
    """Every format the input could be read as, the natural loader's choice first."""
    head = inp.read_at(0, HEAD_BYTES)
    primary = _primary(inp, head)
    formats = [primary] if primary else []
    # zipfile finds an archive by its end record, whatever precedes it; torch.load
    # and numpy.load decide by the first bytes. A file that both see differently
    # is scanned both ways.
    if primary in (None, "pickle", "torch-legacy") and _zip_eocd_near_end(inp):
        formats.append("zip")
    return formats

"""Compressed files: decompress under caps, then scan the content.

gzip, bzip2 and xz are read by many loaders (``gzip.open`` + ``pickle.load``,
``tarfile``, ``joblib.load``), so their content is sniffed. The other streams
here are what ``joblib.load`` alone accepts, detected by joblib's own magic
numbers (``joblib/compressor.py``): zlib, .lzma (``lzma.LZMAFile``, which also
takes .xz), LZ4 frames (when the ``lz4`` package is installed) and the legacy
``ZF`` file of joblib <= 0.9 (a hex length, then zlib). joblib unpickles their
content whatever it looks like, so it is read as a pickle. Content goes down
through ``formats.descend`` (depth capped).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from modelguard.rules.scan import ARCHIVE_MALFORMED, SCANNER_UNAVAILABLE
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.decompress import (
    Decompressor,
    bzip2_stream,
    gzip_stream,
    inflate,
    lz4_available,
    lz4_stream,
    lzma_auto_stream,
    xz_stream,
    zlib_stream,
)
from modelguard.scan.formats import BZIP2_MAGIC, GZIP_MAGIC, XZ_MAGIC, descend
from modelguard.scan.streams import SliceReader

LZMA_ALONE_MAGIC = b"\x5d\x00"  # joblib's test: LZMA properties 0x5d, dictionary size
LZ4_MAGIC = b"\x04\x22\x4d\x18"
ZFILE_MAGIC = b"ZF"
# A ZF file: "ZF", the content length in hex left-justified to len(hex(2**64)), an
# optional space (joblib <= 0.8.4 wrote one), then one zlib stream.
_ZFILE_HEADER = len(ZFILE_MAGIC) + len(hex(2**64))


def scan_gzip(inp: Input, ctx: ScanContext) -> None:
    _scan_compressed(inp, ctx, "gzip", gzip_stream, GZIP_MAGIC, (".gz", ".tgz"))


def scan_bzip2(inp: Input, ctx: ScanContext) -> None:
    _scan_compressed(inp, ctx, "bzip2", bzip2_stream, BZIP2_MAGIC, (".bz2",))


def scan_xz(inp: Input, ctx: ScanContext) -> None:
    _scan_compressed(inp, ctx, "xz", xz_stream, XZ_MAGIC, (".xz",))


def scan_zlib(inp: Input, ctx: ScanContext) -> None:
    """joblib's zlib compressor: one zlib stream (``BinaryZlibFile``)."""
    _scan_compressed(inp, ctx, "zlib", zlib_stream, None, (".z",), joblib_only=True)


def scan_lzma(inp: Input, ctx: ScanContext) -> None:
    """joblib's "lzma" compressor: ``lzma.LZMAFile``, streams of .lzma or .xz in turn."""
    magic = (LZMA_ALONE_MAGIC[:1], XZ_MAGIC)
    _scan_compressed(inp, ctx, "lzma", lzma_auto_stream, magic, (".lzma",), joblib_only=True)


def scan_lz4(inp: Input, ctx: ScanContext) -> None:
    """joblib's lz4 compressor (``lz4.frame.LZ4FrameFile``), when lz4 is installed."""
    if not lz4_available():
        ctx.set_format("lz4")
        ctx.report(
            SCANNER_UNAVAILABLE,
            f"{inp.name} is LZ4-compressed (joblib.load reads it when lz4 is installed); "
            "its content cannot be inspected without the lz4 package (modelguard[lz4])",
            evidence="lz4",
        )
        return
    _scan_compressed(inp, ctx, "lz4", lz4_stream, LZ4_MAGIC, (".lz4",), joblib_only=True)


def starts_zlib(head: bytes) -> bool:
    """Whether ``head`` starts a zlib stream joblib could read (its test is byte 0x78).

    CM 8 with a 32 KiB window (0x78), header check bits right, no preset
    dictionary (zlib cannot read one without it), and the first bytes inflate:
    text that happens to start with "x^" or "x " is not taken for zlib.
    """
    if len(head) < 3 or head[0] != 0x78 or (head[0] << 8 | head[1]) % 31 or head[1] & 0x20:
        return False
    try:
        zlib.decompressobj().decompress(head, 1 << 16)
    except zlib.error:
        return False
    return True


def zfile_data_offset(head: bytes) -> int | None:
    """Where a joblib ZF file's zlib stream starts, None when joblib cannot read its header."""
    if not head.startswith(ZFILE_MAGIC) or len(head) < _ZFILE_HEADER:
        return None
    try:
        int(head[len(ZFILE_MAGIC) : _ZFILE_HEADER], 16)
    except ValueError:
        return None
    return _ZFILE_HEADER + 1 if head[_ZFILE_HEADER : _ZFILE_HEADER + 1] == b" " else _ZFILE_HEADER


def scan_zfile(inp: Input, ctx: ScanContext) -> None:
    """joblib <= 0.9's ZF file (``numpy_pickle_compat.read_zfile``): zlib after a header."""
    start = zfile_data_offset(inp.read_at(0, _ZFILE_HEADER + 1))
    if start is None:
        ctx.set_format("joblib-zfile")
        ctx.report(ARCHIVE_MALFORMED, "ZF header is not a hex length", evidence="zfile: header")
        return
    body = Input(
        stream=SliceReader(inp.stream, start, inp.size - start),  # type: ignore[arg-type]
        size=inp.size - start,
        name=inp.name,
    )
    _scan_compressed(body, ctx, "joblib-zfile", zlib_stream, None, (".z",), joblib_only=True)


def content_name(name: str, suffixes: tuple[str, ...]) -> str:
    """The decompressed file's name: ``model.pt.gz`` -> ``model.pt``."""
    base = name.rsplit("!/", 1)[-1].rsplit("/", 1)[-1]
    for suffix in suffixes:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            stem = base[: -len(suffix)]
            return stem + ".tar" if suffix == ".tgz" else stem
    return "<decompressed>"


def _scan_compressed(
    inp: Input,
    ctx: ScanContext,
    kind: str,
    make: Callable[[], Decompressor],
    magic: bytes | tuple[bytes, ...] | None,
    suffixes: tuple[str, ...],
    *,
    joblib_only: bool = False,
) -> None:
    """Decompress ``inp`` (several streams when ``magic`` says how the next starts)."""
    ctx.set_format(kind)
    result = inflate(
        inp.stream,
        inp.size,
        make,
        ctx,
        what=f"{kind} content",
        multi_stream=magic is not None,
        stream_magic=magic or b"",
    )
    with result.stream:
        if result.error is not None:
            ctx.report(
                ARCHIVE_MALFORMED,
                f"{kind} data is corrupt: {result.error}",
                evidence=f"{kind}: corrupt",
            )
        elif result.truncated:
            ctx.report(
                ARCHIVE_MALFORMED,
                f"{kind} data is truncated after {result.size:,} decompressed bytes",
                evidence=f"{kind}: truncated",
            )
        if result.trailing and result.stopped is None:
            hangs = " (joblib.load never returns on such a file)" if magic is None else ""
            ctx.report(
                ARCHIVE_MALFORMED,
                f"{result.trailing:,} bytes after the {kind} data are not {kind}{hangs}",
                evidence=f"{kind}: trailing",
            )
        if result.stopped == "bomb":
            return  # padding built to exhaust memory; nothing worth scanning
        name = content_name(inp.name, suffixes)
        inner = Input(stream=result.stream, size=result.size, name=f"{inp.name}!/{name}")  # type: ignore[arg-type]
        # joblib.load unpickles what it decompresses, whatever its first bytes say.
        descend(ctx, name, inner, as_format="pickle" if joblib_only else None)

"""Bounded decompression of hostile streams into a seekable spool.

Archive members and compressed files are decompressed chunk by chunk; every
output byte is counted against the member cap (``max_member_bytes``), the
per-artifact budget (``ScanContext.consume_decompressed``: bytes, and the
compression ratio summed over all members) and the per-member bomb heuristic
(ratio AND size), so a decompression bomb, whole or split into many members,
stops early as a finding instead of exhausting memory, disk or scan time.
"""

from __future__ import annotations

import bz2
import lzma
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol

from modelguard.rules.scan import ARCHIVE_BOMB
from modelguard.scan.context import ScanContext

CHUNK = 1024 * 1024
# Decompressed content stays in memory up to this size, then spills to a temp file.
SPOOL_MEMORY = 32 * 1024 * 1024

# RuntimeError: what the lz4 bindings raise for a damaged frame.
DecompressError = (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError, RuntimeError)


class Spool(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """Decompressed content: in memory, then a temp file. Parsers that walk it
    tell from this type that their work is bounded by what was compressed
    (see ``ScanContext.inflated_work_left``)."""


def is_inflated(stream: object) -> bool:
    return isinstance(stream, Spool)


class Decompressor(Protocol):
    """One compressed stream: feed input, get at most ``max_out`` bytes back."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def wants_input(self) -> bool: ...

    def pull(self, data: bytes, max_out: int) -> bytes: ...


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def wants_input(self) -> bool:
        return not self._tail

    def pull(self, data: bytes, max_out: int) -> bytes:
        out = self._d.decompress(self._tail + data, max_out)
        self._tail = self._d.unconsumed_tail
        return out


class _Buffered:
    """bz2 and lzma decompressors share this max_length protocol."""

    def __init__(self, d: bz2.BZ2Decompressor | lzma.LZMADecompressor) -> None:
        self._d = d

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def wants_input(self) -> bool:
        return self._d.needs_input

    def pull(self, data: bytes, max_out: int) -> bytes:
        return self._d.decompress(data, max_out)


def raw_deflate() -> Decompressor:
    return _Zlib(-zlib.MAX_WBITS)


def gzip_stream() -> Decompressor:
    return _Zlib(16 + zlib.MAX_WBITS)


def bzip2_stream() -> Decompressor:
    return _Buffered(bz2.BZ2Decompressor())


def xz_stream() -> Decompressor:
    return _Buffered(lzma.LZMADecompressor(format=lzma.FORMAT_XZ))


def zlib_stream() -> Decompressor:
    return _Zlib(zlib.MAX_WBITS)


def lzma_auto_stream() -> Decompressor:
    # What lzma.LZMAFile (joblib's "lzma" compressor) reads: .xz or .lzma, per stream.
    return _Buffered(lzma.LZMADecompressor(format=lzma.FORMAT_AUTO))


class _Lz4:
    """An LZ4 frame (the ``lz4`` package, an optional dependency)."""

    def __init__(self) -> None:
        import lz4.frame

        self._d = lz4.frame.LZ4FrameDecompressor()

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._d.unused_data or b"")

    @property
    def wants_input(self) -> bool:
        return bool(self._d.needs_input)

    def pull(self, data: bytes, max_out: int) -> bytes:
        out: bytes = self._d.decompress(data, max_length=max_out)
        return out


class _ZipLzma:
    """A zip member of method 14, read as ``zipfile`` reads it (numpy's npz, Keras).

    Two bytes of version, two of properties size, the LZMA1 properties, then
    a raw LZMA1 stream; the header may arrive split over several inputs.
    """

    def __init__(self) -> None:
        self._head = b""
        self._d: lzma.LZMADecompressor | None = None

    @property
    def eof(self) -> bool:
        return self._d is not None and self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data if self._d is not None else b""

    @property
    def wants_input(self) -> bool:
        return self._d is None or self._d.needs_input

    def pull(self, data: bytes, max_out: int) -> bytes:
        if self._d is None:
            self._head += data
            if len(self._head) < 4:
                return b""
            size = int.from_bytes(self._head[2:4], "little")
            if len(self._head) < 4 + size:
                return b""
            # The same private helper zipfile uses to read the properties.
            props = lzma._decode_filter_properties(  # type: ignore[attr-defined]
                lzma.FILTER_LZMA1, self._head[4 : 4 + size]
            )
            self._d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[props])
            data, self._head = self._head[4 + size :], b""
        return self._d.decompress(data, max_out)


def zip_lzma_stream() -> Decompressor:
    return _ZipLzma()


def lz4_stream() -> Decompressor:
    return _Lz4()


def lz4_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lz4") is not None


@dataclass
class Inflated:
    """What came out of a bounded decompression.

    ``stream`` holds ``size`` bytes (possibly fewer than the content when a cap
    stopped decompression: ``stopped`` says which). ``error`` is the
    decompressor's complaint about damaged input; ``truncated`` means the
    compressed input ended before the stream's end marker; ``streams`` counts
    concatenated streams; ``trailing`` is bytes after the last stream that are
    not another stream.
    """

    stream: IO[bytes]
    size: int
    crc: int
    stopped: str | None = None
    error: str | None = None
    truncated: bool = False
    overflow: bool = False
    streams: int = 0
    trailing: int = 0

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.error is None and not self.truncated


def inflate(
    source: BinaryIO,
    compressed_size: int,
    make: Callable[[], Decompressor],
    ctx: ScanContext,
    *,
    what: str,
    expected_size: int | None = None,
    multi_stream: bool = False,
    stream_magic: bytes | tuple[bytes, ...] = b"",
) -> Inflated:
    """Decompress ``compressed_size`` bytes read from ``source`` under every cap.

    ``expected_size`` (a zip member's declared size) bounds the output like the
    loaders do: they read exactly that many bytes; more output is ``overflow``.
    With ``multi_stream`` concatenated streams are decompressed in turn, as
    gzip/bz2/lzma readers do, as long as the next one starts with ``stream_magic``
    (or one of them).
    Caps reached are reported here (MG002 / MG204); damage is left to the caller.
    """
    limits = ctx.limits
    spool: IO[bytes] = Spool(max_size=SPOOL_MEMORY)
    result = Inflated(stream=spool, size=0, crc=0)
    cap = limits.max_member_bytes
    want = cap if expected_size is None else min(cap, expected_size + 1)
    consumed = 0
    accounted = 0  # compressed bytes already reported to the artifact's budget
    pending = b""
    decomp = make()
    result.streams = 1

    def next_input() -> bytes:
        nonlocal consumed
        if consumed >= compressed_size:
            return b""
        data = source.read(min(CHUNK, compressed_size - consumed))
        consumed += len(data)
        return data

    while True:
        if decomp.eof:
            rest = decomp.unused_data + pending
            pending = b""
            if not multi_stream:
                result.trailing = len(rest) + (compressed_size - consumed)
                break
            if not rest:
                rest = next_input()
            if not rest:
                break
            if stream_magic and not rest.startswith(stream_magic):
                result.trailing = len(rest) + (compressed_size - consumed)
                break
            decomp = make()
            result.streams += 1
            pending = rest
        data = pending
        pending = b""
        if not data and decomp.wants_input:
            data = next_input()
            if not data:
                result.truncated = True
                break
        room = min(CHUNK, want - result.size)
        if room <= 0:  # never ask for 0 bytes: zlib reads that as "no limit"
            ctx.limit_reached(f"decompressed size of {what}", cap)
            result.stopped = "member cap"
            break
        try:
            out = decomp.pull(data, room)
        except DecompressError as exc:
            result.error = str(exc) or type(exc).__name__
            break
        if out:
            spool.write(out)
            result.size += len(out)
            result.crc = zlib.crc32(out, result.crc)
            if _looks_like_bomb(result.size, consumed, ctx):
                ctx.report(
                    ARCHIVE_BOMB,
                    f"{what} decompresses to more than {result.size:,} bytes from "
                    f"{consumed:,} compressed (ratio over {limits.max_compression_ratio}); "
                    "decompression stopped",
                    evidence="ratio",
                )
                result.stopped = "bomb"
                break
            if not ctx.consume_decompressed(len(out), consumed - accounted):
                result.stopped = "budget"
                break
            accounted = consumed
        if expected_size is not None and result.size > expected_size:
            result.overflow = True
            break
        if result.size >= cap and not decomp.eof:
            ctx.limit_reached(f"decompressed size of {what}", cap)
            result.stopped = "member cap"
            break
    spool.seek(0)
    return result


def _looks_like_bomb(size: int, consumed: int, ctx: ScanContext) -> bool:
    limits = ctx.limits
    return size >= limits.bomb_min_size and size > limits.max_compression_ratio * max(1, consumed)

"""Bounded, buffered reading of a hostile pickle stream, and the reasons a walk stops.

The reader serves ``[start, end)`` of a stream through a fixed-size buffer and
seeks over long arguments instead of reading them, so a declared length of
2**60 costs nothing. Every way a walk can end early is an exception here; they
never escape the ``modelguard.scan.pickle`` package.
"""

from __future__ import annotations

import io
from typing import BinaryIO

# Strings up to this size are kept (module and attribute names are short);
# longer ones are skipped with a seek and modelled as opaque data.
KEEP_STRING = 1024
CHUNK = 1 << 20  # read buffer size


class WalkStop(Exception):
    """Ends a walk; subclasses say why. Never escapes this package."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class Truncated(WalkStop):
    pass


class Malformed(WalkStop):
    pass


class AlreadyReported(WalkStop):
    """A nested walk failed and reported why; the outer walk just stops."""


class CapReached(WalkStop):
    def __init__(self, what: str, limit: int, offset: int) -> None:
        super().__init__(what, offset)
        self.limit = limit


class Reader:
    """Reads ``[start, end)`` of a stream through a buffer; seeks over long arguments."""

    def __init__(self, stream: BinaryIO, start: int, limit: int | None) -> None:
        # With a limit, trust it rather than seek to the end: seeking to the end of
        # a compressed archive member decompresses all of it. A stream shorter than
        # its limit shows up as a short read, which is reported as truncation.
        self.end = stream.seek(0, io.SEEK_END) if limit is None else max(start, limit)
        self.stream = stream
        self.base = start  # absolute offset of buf[0]
        self.buf = b""
        self.pos = 0
        stream.seek(start)

    def tell(self) -> int:
        return self.base + self.pos

    def remaining(self) -> int:
        return self.end - self.base - self.pos

    def _fill(self, need: int, opcode_offset: int) -> None:
        """Make ``need`` bytes available at ``pos`` or raise Truncated."""
        have = len(self.buf) - self.pos
        if need > self.remaining():
            raise Truncated(
                f"input ends {self.remaining():,} bytes after the opcode at offset "
                f"{opcode_offset}, which needs {need:,}",
                opcode_offset,
            )
        self.base += self.pos
        chunk = max(CHUNK, need - have)
        want = min(chunk, self.end - self.base - have)
        self.stream.seek(self.base + have)
        more = self.stream.read(want)
        self.buf = self.buf[self.pos :] + more
        self.pos = 0
        if len(self.buf) < need:  # the stream was shorter than it said
            self.end = self.base + len(self.buf)
            raise Truncated(
                f"input ends inside the opcode at offset {opcode_offset}", opcode_offset
            )

    def opcode(self) -> int:
        pos = self.pos
        if pos >= len(self.buf):
            if self.remaining() <= 0:
                raise Truncated("input ends before STOP", self.tell())
            self._fill(1, self.tell())
            pos = 0
        self.pos = pos + 1
        return self.buf[pos]

    def read(self, n: int, opcode_offset: int) -> bytes:
        if len(self.buf) - self.pos < n:
            self._fill(n, opcode_offset)
        pos = self.pos
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def skip(self, n: int, opcode_offset: int) -> None:
        if len(self.buf) - self.pos >= n:
            self.pos += n
            return
        if n > self.remaining():
            raise Truncated(
                f"declared length {n:,} at offset {opcode_offset} runs past the end of input",
                opcode_offset,
            )
        target = self.tell() + n
        self.buf = b""
        self.pos = 0
        self.base = target

    def line(self, keep: int, cap: int, opcode_offset: int) -> bytes | None:
        """The next line without its newline; None if longer than ``keep`` (skipped)."""
        kept: bytes | None = b""
        length = 0
        while True:
            nl = self.buf.find(b"\n", self.pos)
            stop = nl if nl >= 0 else len(self.buf)
            piece_len = stop - self.pos
            length += piece_len
            if kept is not None:
                kept = kept + self.buf[self.pos : stop] if length <= keep else None
            if length > cap:
                raise CapReached("pickle text argument length", cap, opcode_offset)
            self.pos = stop
            if nl >= 0:
                self.pos += 1
                return kept
            if self.remaining() <= 0:
                raise Truncated(
                    f"input ends inside the text argument of the opcode at offset {opcode_offset}",
                    opcode_offset,
                )
            self._fill(1, opcode_offset)

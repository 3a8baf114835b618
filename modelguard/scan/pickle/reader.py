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
CHUNK = 1 << 20  # largest read; reads start small and double, so a short trial walk reads little
FIRST_CHUNK = 4096


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
        self.fetched = 0  # bytes read from the stream so far: the reader's work
        self._chunk = FIRST_CHUNK
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
        chunk = max(self._chunk, need - have)
        self._chunk = min(CHUNK, self._chunk * 2)
        want = min(chunk, self.end - self.base - have)
        self.stream.seek(self.base + have)
        more = self.stream.read(want)
        while 0 < len(more) < want:
            # A raw or remote stream may return less than asked before its end.
            extra = self.stream.read(want - len(more))
            if not extra:
                break
            more += extra
        self.fetched += len(more)
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

    def work(self) -> int:
        """Bytes fetched from the stream so far (what a walk through this reader cost)."""
        return self.fetched

    # -- what the framing readings add (a plain reader is contiguous) -------------------
    def read_into(self, n: int, opcode_offset: int) -> bytes:
        """Read as C's ``_Unpickler_ReadInto`` does (the byte-string opcodes)."""
        return self.read(n, opcode_offset)

    def remaining_into(self) -> int:
        """Bytes a ``read_into`` can still get."""
        return self.remaining()

    def skip_into(self, n: int, opcode_offset: int) -> None:
        self.skip(n, opcode_offset)

    def frame(self, length: int, opcode_offset: int) -> None:
        """A FRAME of ``length`` bytes: C's unpickler reads them ahead or fails."""
        if length > self.remaining():
            raise Truncated(
                f"FRAME at offset {opcode_offset} declares {length:,} bytes but only "
                f"{self.remaining():,} remain",
                opcode_offset,
            )

    def file_read(self, n: int, opcode_offset: int) -> bytes:
        """Read from the file itself, past any frame (joblib reads array data so)."""
        return self.read(n, opcode_offset)

    def file_skip(self, n: int, opcode_offset: int) -> None:
        self.skip(n, opcode_offset)

    def file_tell(self) -> int:
        return self.tell()

    def file_reader(self) -> Reader:
        """The reader of the file itself (a nested unpickler starts from it)."""
        return self


class _Framed(Reader):
    """A reading whose frames change what bytes an opcode gets (see the subclasses).

    ``raw`` reads the file itself (shared with nested unpicklers); ``frame`` the
    bytes of the current frame, already taken from the file, or None.
    """

    def __init__(self, raw: Reader) -> None:
        # No buffer of its own (Reader.__init__ is not run): it reads through ``raw``
        # and the frame readers.
        self.raw = raw
        self.stream = raw.stream
        self.end = raw.end
        self._frame: Reader | None = None
        self._dropped = 0  # bytes fetched by frames no longer current

    @property
    def frame_reader(self) -> Reader | None:
        return self._frame

    @frame_reader.setter
    def frame_reader(self, value: Reader | None) -> None:
        if self._frame is not None and value is not self._frame:
            self._dropped += self._frame.fetched
        self._frame = value

    def work(self) -> int:
        current = self._frame.fetched if self._frame is not None else 0
        return self.raw.work() + self._dropped + current

    # Offsets in messages are file offsets of where the next byte comes from.
    def tell(self) -> int:
        inner = self.frame_reader
        return inner.tell() if inner is not None and inner.remaining() > 0 else self.raw.tell()

    def remaining(self) -> int:
        inner = self.frame_reader
        if inner is not None and inner.remaining() > 0:
            return inner.remaining()
        return self.raw.remaining()

    def _take_frame(self, length: int) -> None:
        start = self.raw.tell()
        length = min(length, self.raw.remaining())
        self.raw.skip(length, start)
        self.frame_reader = Reader(self.stream, start, start + length)

    def file_read(self, n: int, opcode_offset: int) -> bytes:
        return self.raw.read(n, opcode_offset)

    def file_skip(self, n: int, opcode_offset: int) -> None:
        self.raw.skip(n, opcode_offset)

    def file_tell(self) -> int:
        return self.raw.tell()

    def file_reader(self) -> Reader:
        return self.raw


class PythonFramed(_Framed):
    """Frames as ``pickle._Unpickler`` (the pure-Python one joblib uses) reads them.

    A read that starts in a frame must end in it ("pickle exhausted before end of
    frame"); a read at a frame's exact end leaves the frame and reads the file;
    a FRAME before the current one is used up is an error; a FRAME longer than
    the file is simply shorter. joblib's array reads go to the file itself, past
    whatever of the current frame is still unread.
    """

    def _source(self, n: int, opcode_offset: int) -> Reader:
        inner = self.frame_reader
        if inner is None:
            return self.raw
        left = inner.remaining()
        if left == 0 and n != 0:
            self.frame_reader = None
            return self.raw
        if left < n:
            raise Malformed(
                f"the opcode at offset {opcode_offset} reads past the end of its frame "
                "(pickle exhausted before end of frame)",
                opcode_offset,
            )
        return inner

    def opcode(self) -> int:
        return self._source(1, self.tell()).opcode()

    def read(self, n: int, opcode_offset: int) -> bytes:
        return self._source(n, opcode_offset).read(n, opcode_offset)

    def skip(self, n: int, opcode_offset: int) -> None:
        self._source(n, opcode_offset).skip(n, opcode_offset)

    read_into = read
    skip_into = skip

    def line(self, keep: int, cap: int, opcode_offset: int) -> bytes | None:
        inner = self.frame_reader
        if inner is not None and inner.remaining() == 0:
            self.frame_reader = inner = None
        if inner is None:
            return self.raw.line(keep, cap, opcode_offset)
        try:
            return inner.line(keep, cap, opcode_offset)
        except Truncated:
            raise Malformed(
                f"the text argument at offset {opcode_offset} runs past the end of its frame "
                "(pickle exhausted before end of frame)",
                opcode_offset,
            ) from None

    def frame(self, length: int, opcode_offset: int) -> None:
        inner = self.frame_reader
        if inner is not None and inner.remaining() > 0:
            raise Malformed(
                f"FRAME at offset {opcode_offset} begins before the current frame ends",
                opcode_offset,
            )
        self._take_frame(length)


class UnbufferedFramed(_Framed):
    """Frames as C's unpickler reads them from a file without ``peek`` (``io.BytesIO``).

    ``torch.load`` and ``pickle.load(io.BytesIO(...))`` read so. A FRAME reads its
    bytes into the buffer; an opcode whose argument does not fit in what is left
    of the buffer drops that rest and reads the argument from the file after the
    frame. The byte-string opcodes (read into the object directly) take the rest
    of the buffer first. A FRAME that fits in the buffer reads nothing.
    """

    def _buffered(self, n: int) -> Reader | None:
        inner = self.frame_reader
        if inner is not None and inner.remaining() >= n:
            return inner
        self.frame_reader = None  # what is left of the buffer is dropped
        return None

    def opcode(self) -> int:
        inner = self._buffered(1)
        return (inner or self.raw).opcode()

    def read(self, n: int, opcode_offset: int) -> bytes:
        inner = self._buffered(n)
        return (inner or self.raw).read(n, opcode_offset)

    def skip(self, n: int, opcode_offset: int) -> None:
        inner = self._buffered(n)
        (inner or self.raw).skip(n, opcode_offset)

    def _split(self, n: int) -> int:
        inner = self.frame_reader
        left = inner.remaining() if inner is not None else 0
        self.frame_reader = None
        return min(left, n)

    def remaining_into(self) -> int:
        inner = self.frame_reader
        return self.raw.remaining() + (inner.remaining() if inner is not None else 0)

    def read_into(self, n: int, opcode_offset: int) -> bytes:
        inner = self.frame_reader
        first = self._split(n)
        head = inner.read(first, opcode_offset) if inner is not None and first else b""
        return head + self.raw.read(n - first, opcode_offset)

    def skip_into(self, n: int, opcode_offset: int) -> None:
        inner = self.frame_reader
        first = self._split(n)
        if inner is not None and first:
            inner.skip(first, opcode_offset)
        self.raw.skip(n - first, opcode_offset)

    def line(self, keep: int, cap: int, opcode_offset: int) -> bytes | None:
        inner = self.frame_reader
        if inner is not None and inner.remaining() > 0:
            try:
                return inner.line(keep, cap, opcode_offset)
            except Truncated:
                pass  # no newline in the buffer: C reads a whole new line from the file
        self.frame_reader = None
        return self.raw.line(keep, cap, opcode_offset)

    def frame(self, length: int, opcode_offset: int) -> None:
        inner = self.frame_reader
        if inner is not None and inner.remaining() >= length:
            return  # already buffered: nothing is read
        self.frame_reader = None
        if length > self.raw.remaining():
            raise Truncated(
                f"FRAME at offset {opcode_offset} declares {length:,} bytes but only "
                f"{self.raw.remaining():,} remain",
                opcode_offset,
            )
        self._take_frame(length)

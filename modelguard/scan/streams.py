"""Stream adapters for scanning parts of a file without copying them."""

from __future__ import annotations

import io
from typing import BinaryIO


class SliceReader(io.RawIOBase):
    """A read-only, seekable window ``[start, start + length)`` of another stream.

    Lets a scanner hand an embedded region (an object array's pickle, a stored
    zip member) to another scanner as if it were a file, without reading it.
    """

    def __init__(
        self, base: BinaryIO, start: int, length: int, *, max_read: int | None = None
    ) -> None:
        super().__init__()
        self._base = base
        self._start = start
        self._length = max(0, length)
        self._pos = 0
        # With max_read a reader that asks for a big buffer gets it in small steps,
        # so a glance at bytes that turn out to be data costs that much only.
        self._max_read = max_read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._length + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        remaining = self._length - self._pos
        if remaining <= 0:
            return 0
        want = min(len(buffer), remaining, self._max_read or remaining)
        self._base.seek(self._start + self._pos)
        data = self._base.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._pos
        if size is None or size < 0 or size > remaining:
            size = max(0, remaining)
        if self._max_read is not None:
            size = min(size, self._max_read)
        if size == 0:
            return b""
        self._base.seek(self._start + self._pos)
        data = self._base.read(size)
        self._pos += len(data)
        return data

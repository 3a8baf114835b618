"""Hand-written reader of a zip's end record, central directory and local headers.

Python's ``zipfile`` is not trusted here: it silently keeps only the last of
duplicate names, raises on the first inconsistency instead of describing all of
them, and hides where loaders (PyTorch's miniz reader, numpy) could disagree.
This module only parses structure, bounded by the file size and the member cap;
``modelguard.scan.zip`` decides what the anomalies mean and reads member data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from modelguard.scan.context import Input, ScanContext

EOCD_SIG = b"PK\x05\x06"
EOCD64_SIG = b"PK\x06\x06"
EOCD64_LOCATOR_SIG = b"PK\x06\x07"
CENTRAL_SIG = b"PK\x01\x02"
LOCAL_SIG = b"PK\x03\x04"
DESCRIPTOR_SIG = b"PK\x07\x08"

EOCD_SIZE = 22
EOCD64_SIZE = 56
EOCD64_LOCATOR_SIZE = 20
CENTRAL_SIZE = 46
LOCAL_SIZE = 30
MAX_COMMENT = 65535
ZIP64_EXTRA_ID = 0x0001

FLAG_ENCRYPTED = 0x0001
FLAG_DATA_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800


class ZipStructureError(Exception):
    """The archive cannot be parsed at all (no end record, unreadable directory)."""


@dataclass
class LocalHeader:
    raw_name: bytes
    flags: int
    method: int
    data_start: int  # absolute offset in the file


@dataclass
class Entry:
    """One central directory record (offsets absolute in the file)."""

    index: int
    raw_name: bytes
    name: str
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    local: LocalHeader | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def data_end(self) -> int | None:
        return None if self.local is None else self.local.data_start + self.compressed_size


@dataclass
class Directory:
    entries: list[Entry]
    prefix: int  # bytes before the archive's first byte (zipfile's "concat")
    cd_start: int
    cd_end: int
    eocd_offset: int
    declared_entries: int
    problems: list[str] = field(default_factory=list)
    complete: bool = True  # False when the member cap stopped parsing


def _find_eocd(inp: Input) -> tuple[int, bytes]:
    # Common case first, as zipfile does: an end record without comment ends the
    # file. Saves reading 64 KiB of tensor data at the end of a checkpoint.
    if inp.size >= EOCD_SIZE:
        last = inp.read_at(inp.size - EOCD_SIZE, EOCD_SIZE)
        if last[:4] == EOCD_SIG and last[-2:] == b"\x00\x00":
            return inp.size - EOCD_SIZE, last
    tail_len = min(inp.size, EOCD_SIZE + MAX_COMMENT)
    tail = inp.read_at(inp.size - tail_len, tail_len)
    # Both zipfile and miniz take the last end-record signature in the tail.
    pos = tail.rfind(EOCD_SIG)
    while pos >= 0 and len(tail) - pos < EOCD_SIZE:
        pos = tail.rfind(EOCD_SIG, 0, pos)
    if pos < 0:
        raise ZipStructureError("no end-of-central-directory record")
    return inp.size - tail_len + pos, tail[pos : pos + EOCD_SIZE]


def archive_present(inp: Input) -> bool:
    """True if zipfile would find an archive here: an end record whose central
    directory lies inside the file and starts with a directory record.

    Four stray bytes ``PK\\x05\\x06`` in tensor data are not an archive.
    """
    try:
        eocd_offset, eocd = _find_eocd(inp)
    except ZipStructureError:
        return False
    (_, _, _, _, total, cd_size, cd_offset, _) = struct.unpack("<4sHHHHIIH", eocd)
    if inp.read_at(eocd_offset - EOCD64_LOCATOR_SIZE, 4) == EOCD64_LOCATOR_SIG:
        return True  # zip64: zipfile goes on to read it, and so do we
    cd_start = eocd_offset - cd_size
    if cd_start < 0 or cd_offset > cd_start:
        return False
    return total == 0 or inp.read_at(cd_start, 4) == CENTRAL_SIG


def archive_start(inp: Input) -> int | None:
    """Where the archive zipfile would find begins (the prefix length), if it finds one."""
    if not archive_present(inp):
        return None
    eocd_offset, eocd = _find_eocd(inp)
    (_, _, _, _, _, cd_size, cd_offset, _) = struct.unpack("<4sHHHHIIH", eocd)
    start: int = max(0, eocd_offset - cd_size - cd_offset)
    return start


def read_directories(inp: Input, ctx: ScanContext) -> list[Directory]:
    """The central directory as zipfile finds it, then, if different, as miniz does.

    zipfile shifts every offset by the bytes found before the archive ("prefix");
    miniz (PyTorch's reader) takes the recorded offsets as they are. When data
    precedes the directory that zipfile finds and a directory record also sits
    at the recorded offset, the two readers see two different archives.
    """
    directory = read_directory(inp, ctx)
    if directory.prefix == 0:
        return [directory]
    recorded = directory.cd_start - directory.prefix
    if inp.read_at(recorded, 4) != CENTRAL_SIG:
        return [directory]
    unshifted = Directory(
        entries=[],
        prefix=0,
        cd_start=recorded,
        cd_end=recorded + (directory.cd_end - directory.cd_start),
        eocd_offset=directory.eocd_offset,
        declared_entries=directory.declared_entries,
    )
    _read_entries(inp, ctx, unshifted, directory.cd_end - directory.cd_start)
    for entry in unshifted.entries:
        _read_local(inp, entry)
    return [directory, unshifted]


def read_directory(inp: Input, ctx: ScanContext) -> Directory:
    """Parse the end record (zip64 too) and central directory, like zipfile locates them."""
    eocd_offset, eocd = _find_eocd(inp)
    (_, disk, cd_disk, _, total, cd_size, cd_offset, _) = struct.unpack("<4sHHHHIIH", eocd)
    problems: list[str] = []
    if disk != 0 or cd_disk != 0:
        problems.append(f"multi-disk archive (disk {disk}, directory on disk {cd_disk})")
    locator_at = eocd_offset - EOCD64_LOCATOR_SIZE
    record_at = locator_at - EOCD64_SIZE
    zip64 = False
    if record_at >= 0 and inp.read_at(locator_at, 4) == EOCD64_LOCATOR_SIG:
        record = inp.read_at(record_at, EOCD64_SIZE)
        if record[:4] == EOCD64_SIG:
            # zipfile reads the zip64 record right before the locator, as here.
            _, _, _, _, _, _, _, total, cd_size, cd_offset = struct.unpack("<4sQHHIIQQQQ", record)
            zip64 = True
        else:
            problems.append("zip64 locator without a zip64 end record")
    directory_end = record_at if zip64 else eocd_offset
    prefix = directory_end - cd_size - cd_offset
    if prefix < 0:
        raise ZipStructureError(
            f"central directory (offset {cd_offset:,}, size {cd_size:,}) lies outside the file"
        )
    cd_start = cd_offset + prefix
    directory = Directory(
        entries=[],
        prefix=prefix,
        cd_start=cd_start,
        cd_end=cd_start + cd_size,
        eocd_offset=eocd_offset,
        declared_entries=total,
        problems=problems,
    )
    _read_entries(inp, ctx, directory, cd_size)
    for entry in directory.entries:
        _read_local(inp, entry)
    return directory


class _Window:
    """Reads a region in bounded chunks, so a directory size taken from the file
    (up to 2**64 in zip64) never decides how much is held in memory."""

    CHUNK = 1024 * 1024

    def __init__(self, inp: Input, start: int, length: int) -> None:
        self._inp = inp
        self._start = start
        self.length = max(0, min(length, inp.size - start))
        self._buf = b""
        self._buf_at = 0

    def take(self, pos: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``pos`` (relative), fewer at the end of the region."""
        n = max(0, min(n, self.length - pos))
        if not (self._buf_at <= pos and pos + n <= self._buf_at + len(self._buf)):
            self._buf_at = pos
            self._buf = self._inp.read_at(
                self._start + pos, min(max(n, self.CHUNK), self.length - pos)
            )
        return self._buf[pos - self._buf_at : pos - self._buf_at + n]


def _read_entries(inp: Input, ctx: ScanContext, directory: Directory, cd_size: int) -> None:
    data = _Window(inp, directory.cd_start, cd_size)
    pos = 0
    while pos < data.length:
        if len(directory.entries) >= ctx.limits.max_archive_members:
            ctx.limit_reached("archive members", ctx.limits.max_archive_members)
            directory.complete = False
            return
        record = data.take(pos, CENTRAL_SIZE)
        if len(record) < CENTRAL_SIZE or record[:4] != CENTRAL_SIG:
            directory.problems.append(
                f"central directory record {len(directory.entries)} is damaged "
                f"at offset {directory.cd_start + pos:,}"
            )
            return
        fields = struct.unpack("<4s6H3I5H2I", record)
        flags, method = fields[3], fields[4]
        crc, csize, usize = fields[7], fields[8], fields[9]
        name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
        header_offset = fields[16]
        end = pos + CENTRAL_SIZE + name_len + extra_len + comment_len
        if end > data.length:
            directory.problems.append(
                f"central directory record {len(directory.entries)} runs past the directory"
            )
            return
        raw_name = data.take(pos + CENTRAL_SIZE, name_len)
        extra = data.take(pos + CENTRAL_SIZE + name_len, extra_len)
        usize, csize, header_offset = _apply_zip64(extra, usize, csize, header_offset)
        encoding = "utf-8" if flags & FLAG_UTF8 else "cp437"
        name = raw_name.decode(encoding, errors="replace")
        directory.entries.append(
            Entry(
                index=len(directory.entries),
                raw_name=raw_name,
                name=name,
                flags=flags,
                method=method,
                crc=crc,
                compressed_size=csize,
                size=usize,
                header_offset=header_offset + directory.prefix,
            )
        )
        pos = end
    if len(directory.entries) != directory.declared_entries and directory.complete:
        directory.problems.append(
            f"end record declares {directory.declared_entries:,} entries but the "
            f"central directory holds {len(directory.entries):,}"
        )


def _apply_zip64(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if tag == ZIP64_EXTRA_ID:
            # Only the fields whose 32-bit value is saturated are present, in order.
            values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return usize, csize, offset


def _read_local(inp: Input, entry: Entry) -> None:
    header = inp.read_at(entry.header_offset, LOCAL_SIZE)
    if len(header) < LOCAL_SIZE or header[:4] != LOCAL_SIG:
        entry.problems.append(f"no local header at offset {entry.header_offset:,}")
        return
    (_, _, flags, method, _, _, _, _, _, name_len, extra_len) = struct.unpack("<4s5H3I2H", header)
    raw_name = inp.read_at(entry.header_offset + LOCAL_SIZE, name_len)
    data_start = entry.header_offset + LOCAL_SIZE + name_len + extra_len
    entry.local = LocalHeader(raw_name=raw_name, flags=flags, method=method, data_start=data_start)
    if raw_name != entry.raw_name:
        # zipfile refuses such a member; miniz (torch.load) reads it by the central name.
        shown = raw_name.decode("utf-8", errors="replace")
        entry.problems.append(f"local header names it {shown!r}")
    if method != entry.method:
        entry.problems.append(
            f"local header says compression method {method}, central directory {entry.method}"
        )
    if (flags ^ entry.flags) & FLAG_ENCRYPTED:
        entry.problems.append("local header and central directory disagree on encryption")
    if data_start + entry.compressed_size > inp.size:
        entry.problems.append(
            f"data ({entry.compressed_size:,} bytes at {data_start:,}) runs past the end "
            "of the file"
        )


def descriptor_lengths(entry: Entry) -> tuple[int, ...]:
    """Byte lengths a data descriptor after ``entry``'s data may legitimately have."""
    if not entry.flags & FLAG_DATA_DESCRIPTOR:
        return (0,)
    return (12, 16, 20, 24)

"""Zip archives: PyTorch checkpoints, TorchScript, npz, .keras and plain zips.

The structure is read by ``zip_layout`` (hand-written, see there why); every
anomaly a loader could read differently becomes a finding, and every copy of a
member any loader could pick is scanned. Member data is read through bounded
decompression. PyTorch tensor storages (``<prefix>/data/<n>``) are never read:
a checkpoint is scanned from its central directory and small pickle members.
"""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from collections.abc import Callable
from typing import BinaryIO

from modelguard.files import leaves_folder
from modelguard.rules.scan import (
    ARCHIVE_BOMB,
    ARCHIVE_DUPLICATE_MEMBER,
    ARCHIVE_ENCRYPTED_MEMBER,
    ARCHIVE_MALFORMED,
    ARCHIVE_PATH_TRAVERSAL,
    ARCHIVE_UNSUPPORTED_COMPRESSION,
)
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.decompress import (
    Decompressor,
    bzip2_stream,
    inflate,
    raw_deflate,
    zip_lzma_stream,
)
from modelguard.scan.formats import claimed_suffix, descend
from modelguard.scan.streams import SliceReader
from modelguard.scan.torch import MemberRole, kept_by_torchscript, zip_flavour
from modelguard.scan.zip_layout import (
    Directory,
    Entry,
    ZipStructureError,
    descriptor_lengths,
    read_directories,
)

METHOD_STORED = 0
METHOD_DEFLATED = 8
METHOD_BZIP2 = 12
METHOD_LZMA = 14
# What Python's zipfile reads (numpy's npz and Keras archives load through it);
# PyTorch's reader takes stored and deflated members only.
_DECOMPRESSORS: dict[int, Callable[[], Decompressor]] = {
    METHOD_DEFLATED: raw_deflate,
    METHOD_BZIP2: bzip2_stream,
    METHOD_LZMA: zip_lzma_stream,
}
_CRC_CHUNK = 1024 * 1024
_GLANCE = 4096  # read step for tensor storages walked in case they hold a pickle


def scan_zip(inp: Input, ctx: ScanContext) -> None:
    """Scan a zip archive (also one preceded by other data) and its members."""
    try:
        directories = read_directories(inp, ctx)
    except ZipStructureError as exc:
        ctx.report(ARCHIVE_MALFORMED, f"zip archive cannot be read: {exc}", evidence="unreadable")
        return
    directory = directories[0]
    for problem in directory.problems:
        ctx.report(ARCHIVE_MALFORMED, f"zip archive: {problem}", evidence=problem)
    keras_name = claimed_suffix(inp.name) == ".keras"
    flavour, roles = zip_flavour([e.name for e in directory.entries], keras_name=keras_name)
    if directory.prefix == 0:
        # Behind a prefix the archive is a second reading (a pickle+zip polyglot
        # is loaded as a pickle): the artifact keeps its first format's name.
        ctx.set_format(flavour)
    _check_prefix(directory, ctx)
    _check_layout(directory, ctx)
    _scan_entries(inp, ctx, directory, roles, suffix="")
    for other in directories[1:]:
        ctx.report(
            ARCHIVE_MALFORMED,
            f"a second central directory lies at offset {other.cd_start:,}: Python's zipfile "
            "reads the one after the prefix, PyTorch's reader the one at the recorded offset; "
            "both were scanned",
            offset=other.cd_start,
            evidence="second-directory",
        )
        other_flavour, other_roles = zip_flavour(
            [e.name for e in other.entries], keras_name=keras_name
        )
        ctx.set_format(other_flavour)  # the reading of a file that starts as a zip
        _scan_entries(inp, ctx, other, other_roles, suffix=" (as PyTorch reads it)")


def _scan_entries(
    inp: Input, ctx: ScanContext, directory: Directory, roles: list[MemberRole], *, suffix: str
) -> None:
    labels = _member_labels(directory.entries, ctx)
    for entry, role, label in zip(directory.entries, roles, labels, strict=True):
        _scan_entry(inp, ctx, entry, role, label + suffix)


def _check_prefix(directory: Directory, ctx: ScanContext) -> None:
    if directory.prefix > 0:
        # zipfile finds the archive through its end record and skips the prefix;
        # torch.load and numpy.load look at the first bytes and read something else.
        ctx.report(
            ARCHIVE_MALFORMED,
            f"{directory.prefix:,} bytes precede the zip archive; loaders that look at "
            "the first bytes read them instead of the archive",
            offset=0,
            evidence="prefix",
        )


def _check_layout(directory: Directory, ctx: ScanContext) -> None:
    """Overlapping members, bytes before the first entry and hidden gaps."""
    placed = sorted(
        (e for e in directory.entries if e.local is not None), key=lambda e: e.header_offset
    )
    if not placed:
        return
    first = placed[0].header_offset
    if first > directory.prefix:
        ctx.report(
            ARCHIVE_MALFORMED,
            f"{first - directory.prefix:,} bytes lie before the first zip entry",
            offset=directory.prefix,
            evidence="data-before-first-entry",
        )
    overlaps = 0
    for prev, nxt in itertools.pairwise(placed):
        prev_end = prev.data_end or prev.header_offset
        if nxt.header_offset < prev_end:
            overlaps += 1
            if overlaps <= 10:
                ctx.report(
                    ARCHIVE_MALFORMED,
                    f"members {prev.name!r} and {nxt.name!r} overlap (offset "
                    f"{nxt.header_offset:,} lies inside {prev.name!r})",
                    offset=nxt.header_offset,
                    evidence=f"overlap:{prev.name}:{nxt.name}",
                )
        elif nxt.header_offset - prev_end not in descriptor_lengths(prev):
            _report_gap(ctx, prev.name, prev_end, nxt.header_offset - prev_end)
    if overlaps > 10:
        ctx.report(
            ARCHIVE_MALFORMED,
            f"{overlaps:,} overlapping member pairs in all",
            evidence="overlap-count",
        )
    last = placed[-1]
    last_end = last.data_end or last.header_offset
    gap = directory.cd_start - last_end
    if gap > 0 and gap not in descriptor_lengths(last):
        _report_gap(ctx, last.name, last_end, gap)


def _report_gap(ctx: ScanContext, after: str, offset: int, length: int) -> None:
    if length > 0:
        ctx.report(
            ARCHIVE_MALFORMED,
            f"{length:,} bytes after member {after!r} belong to no member",
            offset=offset,
            evidence=f"gap:{after}",
        )


def _member_labels(entries: list[Entry], ctx: ScanContext) -> list[str]:
    """Display names; every copy of a duplicated name gets its own label."""
    counts = Counter(e.raw_name for e in entries)
    seen: Counter[bytes] = Counter()
    labels: list[str] = []
    for entry in entries:
        total = counts[entry.raw_name]
        if total == 1:
            labels.append(entry.name)
            continue
        seen[entry.raw_name] += 1
        if seen[entry.raw_name] == 1:
            ctx.report(
                ARCHIVE_DUPLICATE_MEMBER,
                f"{total} members are named {entry.name!r}; Python's zipfile reads the last, "
                "PyTorch's reader may pick another; every copy was scanned",
                evidence=entry.name,
            )
        labels.append(f"{entry.name} (copy {seen[entry.raw_name]} of {total})")
    _check_case_twins(entries, ctx)
    return labels


def _check_case_twins(entries: list[Entry], ctx: ScanContext) -> None:
    """Names that differ only in case are one name to PyTorch's reader."""
    spellings: dict[str, set[str]] = {}
    for entry in entries:
        spellings.setdefault(entry.name.lower(), set()).add(entry.name)
    for variants in spellings.values():
        if len(variants) > 1:
            shown = ", ".join(repr(v) for v in sorted(variants))
            ctx.report(
                ARCHIVE_DUPLICATE_MEMBER,
                f"members {shown} differ only in case: PyTorch's reader matches names "
                "case-insensitively and may pick any of them; every one was scanned",
                evidence=f"case:{min(variants)}",
            )


def _scan_entry(inp: Input, ctx: ScanContext, entry: Entry, role: MemberRole, label: str) -> None:
    if leaves_folder(entry.name):
        ctx.report(
            ARCHIVE_PATH_TRAVERSAL,
            f"member name {entry.name!r} is absolute or leaves the extraction folder",
            evidence=entry.name,
        )
    if "\x00" in entry.name:
        ctx.report(
            ARCHIVE_MALFORMED, f"member name {entry.name!r} contains a NUL byte", evidence=label
        )
    for problem in entry.problems:
        ctx.report(
            ARCHIVE_MALFORMED, f"member {label!r}: {problem}", evidence=f"{label}: {problem}"
        )
    if _declares_bomb(entry, ctx):
        ctx.report(
            ARCHIVE_BOMB,
            f"member {label!r} declares {entry.size:,} bytes from {entry.compressed_size:,} "
            "compressed",
            evidence=label,
        )
        return
    if entry.local is None or (entry.name.endswith("/") and entry.size == 0):
        return
    if entry.encrypted:
        _scan_encrypted(inp, ctx, entry, role, label)
        return
    if role is MemberRole.METADATA:
        return  # torch bookkeeping: small text and numbers read as such
    if role is MemberRole.STORAGE:
        _scan_storage(inp, ctx, entry, label)
        return
    if role is MemberRole.KERAS_CONFIG and entry.size > ctx.limits.max_header_bytes:
        ctx.limit_reached(f"size of Keras config {label!r}", ctx.limits.max_header_bytes)
        return
    if role is MemberRole.TORCHSCRIPT_CODE and entry.size > ctx.limits.max_header_bytes:
        ctx.limit_reached(f"size of TorchScript source {label!r}", ctx.limits.max_header_bytes)
        return
    member = _open_member(inp, ctx, entry, label)
    if member is None:
        return
    _descend_member(inp, ctx, member, role, label)


def _descend_member(
    inp: Input, ctx: ScanContext, member: tuple[BinaryIO, int], role: MemberRole, label: str
) -> None:
    stream, size = member
    try:
        inner = Input(stream=stream, size=size, name=f"{inp.name}!/{label}")
        if role is MemberRole.TORCHSCRIPT_CODE:
            descend(ctx, label, inner, as_format="torchscript-code")
        elif role is MemberRole.KERAS_CONFIG:
            descend(ctx, label, inner, as_format="keras-config")
        elif role is MemberRole.PICKLE:
            descend(ctx, label, inner, as_format="pickle")
        elif role is MemberRole.TORCHSCRIPT_PICKLE:
            descend(ctx, label, inner, as_format="pickle", keep=kept_by_torchscript)
        else:
            descend(ctx, label, inner)
    finally:
        stream.close()


def _scan_storage(inp: Input, ctx: ScanContext, entry: Entry, label: str) -> None:
    """Tensor bytes torch reads raw; walked as a pickle only if one could start there.

    No CRC pass and no decompression: a checkpoint's storages are most of its
    bytes. Only what an unpickler would already have run counts (a blob that is
    a pickle with imports), so a blob of floats that starts with an opcode
    letter reports nothing.
    """
    from modelguard.scan.pickle_file import starts_pickle

    assert entry.local is not None
    if entry.method != METHOD_STORED:
        return
    start = entry.local.data_start
    length = max(0, min(entry.size, inp.size - start))
    if not starts_pickle(inp.read_at(start, min(2, length))):
        return
    window = SliceReader(inp.stream, start, length, max_read=_GLANCE)
    inner = Input(stream=window, size=length, name=f"{inp.name}!/{label}")  # type: ignore[arg-type]
    descend(ctx, label, inner, as_format="storage-blob")


def _scan_encrypted(
    inp: Input, ctx: ScanContext, entry: Entry, role: MemberRole, label: str
) -> None:
    """An encrypted member is inspected when its bytes are in fact plain text.

    The flag alone encrypts nothing: a member whose stored (or inflated) bytes
    match its CRC-32 is plain, and a reader that ignores the flag reads it.
    """
    plain = _plaintext(inp, ctx, entry)
    if plain is None:
        ctx.report(
            ARCHIVE_ENCRYPTED_MEMBER,
            f"member {label!r} is encrypted; not inspected",
            evidence=label,
        )
        return
    ctx.report(
        ARCHIVE_ENCRYPTED_MEMBER,
        f"member {label!r} is flagged as encrypted but its bytes are plain text (they "
        "match its CRC-32); it was scanned",
        evidence=f"{label}: plain",
    )
    if role not in (MemberRole.METADATA, MemberRole.STORAGE):
        _descend_member(inp, ctx, plain, role, label)


def _plaintext(inp: Input, ctx: ScanContext, entry: Entry) -> tuple[BinaryIO, int] | None:
    assert entry.local is not None
    start = entry.local.data_start
    available = max(0, min(entry.compressed_size, inp.size - start))
    if entry.method == METHOD_STORED:
        window = SliceReader(inp.stream, start, available)
        if available != entry.size or _crc_of(window) != entry.crc:
            return None
        window.seek(0)
        return window, available  # type: ignore[return-value]  # RawIOBase is a binary stream
    make = _DECOMPRESSORS.get(entry.method)
    if make is None:
        return None
    source = SliceReader(inp.stream, start, available)
    quiet = ctx.speculative()  # ciphertext failing to inflate is no finding of its own
    result = inflate(source, available, make, quiet, what="member", expected_size=entry.size)  # type: ignore[arg-type]
    if not result.complete or result.size != entry.size or result.crc != entry.crc:
        result.stream.close()
        return None
    return result.stream, result.size  # type: ignore[return-value]  # spooled file is binary


def _declares_bomb(entry: Entry, ctx: ScanContext) -> bool:
    limits = ctx.limits
    return entry.size >= limits.bomb_min_size and entry.size > (
        limits.max_compression_ratio * max(1, entry.compressed_size)
    )


def _open_member(
    inp: Input, ctx: ScanContext, entry: Entry, label: str
) -> tuple[BinaryIO, int] | None:
    """The member's bytes as the loaders read them (declared size), or None."""
    assert entry.local is not None
    start = entry.local.data_start
    available = max(0, min(entry.compressed_size, inp.size - start))
    if entry.method == METHOD_STORED:
        if entry.compressed_size != entry.size:
            ctx.report(
                ARCHIVE_MALFORMED,
                f"stored member {label!r} declares {entry.size:,} bytes but occupies "
                f"{entry.compressed_size:,}",
                evidence=f"{label}: stored size",
            )
        length = min(entry.size, available)
        if length > ctx.limits.max_member_bytes:
            ctx.limit_reached(f"size of member {label!r}", ctx.limits.max_member_bytes)
            length = ctx.limits.max_member_bytes
        window = SliceReader(inp.stream, start, length)
        if length == entry.size and _crc_of(window) != entry.crc:
            _report_crc(ctx, label)
        window.seek(0)
        return window, length  # type: ignore[return-value]  # RawIOBase is a binary stream
    make = _DECOMPRESSORS.get(entry.method)
    if make is None:
        ctx.report(
            ARCHIVE_UNSUPPORTED_COMPRESSION,
            f"member {label!r} uses compression method {entry.method}; not inspected",
            evidence=label,
        )
        return None
    source = SliceReader(inp.stream, start, available)
    result = inflate(
        source,  # type: ignore[arg-type]  # RawIOBase is a binary stream
        available,
        make,
        ctx,
        what=f"member {label!r}",
        expected_size=entry.size,
    )
    if result.error is not None:
        ctx.report(
            ARCHIVE_MALFORMED,
            f"member {label!r} does not decompress: {result.error}",
            evidence=f"{label}: corrupt",
        )
    elif result.overflow:
        ctx.report(
            ARCHIVE_MALFORMED,
            f"member {label!r} decompresses to more than its declared {entry.size:,} bytes",
            evidence=f"{label}: size",
        )
    elif result.truncated or (result.complete and result.size != entry.size):
        ctx.report(
            ARCHIVE_MALFORMED,
            f"member {label!r} is truncated ({result.size:,} of {entry.size:,} bytes)",
            evidence=f"{label}: truncated",
        )
    elif result.complete and result.crc != entry.crc:
        _report_crc(ctx, label)
    size = min(result.size, entry.size)
    return result.stream, size  # type: ignore[return-value]  # spooled file is binary


def _crc_of(stream: SliceReader) -> int:
    crc = 0
    while chunk := stream.read(_CRC_CHUNK):
        crc = zlib.crc32(chunk, crc)
    return crc


def _report_crc(ctx: ScanContext, label: str) -> None:
    ctx.report(
        ARCHIVE_MALFORMED,
        f"member {label!r} fails its CRC-32 check: its bytes were changed after archiving",
        evidence=f"{label}: crc",
    )

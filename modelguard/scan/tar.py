"""Tar archives, including the oldest torch.save format (a tar of pickles).

Headers are read with ``tarfile`` (headers only: nothing is extracted, member
data is handed to scanners through a window on the original stream). tarfile
stops at the first damaged header after the first member, exactly as the
loaders that use it do; bytes hidden after that point are reported.
"""

from __future__ import annotations

import tarfile
from collections import Counter

from modelguard.files import leaves_folder
from modelguard.rules.scan import (
    ARCHIVE_DUPLICATE_MEMBER,
    ARCHIVE_LINK_MEMBER,
    ARCHIVE_MALFORMED,
    ARCHIVE_PATH_TRAVERSAL,
)
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import descend
from modelguard.scan.streams import SliceReader

# torch.save before 0.4 wrote a tar with these members; each starts with a pickle.
TORCH_TAR_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})
_ZERO_CHECK_CHUNK = 1024 * 1024


def scan_tar(inp: Input, ctx: ScanContext) -> None:
    members = _read_headers(inp, ctx)
    if members is None:
        return
    names = [m.name for m in members]
    legacy_torch = set(names) >= TORCH_TAR_MEMBERS
    ctx.set_format("torch-legacy-tar" if legacy_torch else "tar")
    counts = Counter(names)
    copies: Counter[str] = Counter()
    for member in members:
        label = member.name
        if counts[member.name] > 1:
            copies[member.name] += 1
            if copies[member.name] == 1:
                ctx.report(
                    ARCHIVE_DUPLICATE_MEMBER,
                    f"{counts[member.name]} members are named {member.name!r}; extraction "
                    "keeps the last; every copy was scanned",
                    evidence=member.name,
                )
            label = f"{member.name} (copy {copies[member.name]} of {counts[member.name]})"
        _scan_member(inp, ctx, member, label, legacy_torch)


def _read_headers(inp: Input, ctx: ScanContext) -> list[tarfile.TarInfo] | None:
    members: list[tarfile.TarInfo] = []
    if _oversized_meta(inp, ctx, 0):
        return None
    inp.stream.seek(0)  # tarfile starts reading where the stream stands
    try:
        archive = tarfile.open(fileobj=inp.stream, mode="r:")  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        ctx.report(ARCHIVE_MALFORMED, f"tar archive cannot be read: {exc}", evidence="unreadable")
        return None
    with archive:
        while True:
            if len(members) >= ctx.limits.max_archive_members:
                ctx.limit_reached("archive members", ctx.limits.max_archive_members)
                return members
            if _oversized_meta(inp, ctx, archive.offset):
                return members
            try:
                member = archive.next()
            except (tarfile.TarError, EOFError) as exc:
                ctx.report(
                    ARCHIVE_MALFORMED,
                    f"tar header after {len(members)} members is damaged: {exc}",
                    evidence="header",
                )
                return members
            if member is None:
                break
            members.append(member)
        _check_hidden_tail(inp, ctx, archive.offset)
    return members


_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_MAX_META_CHAIN = 64


def _oversized_meta(inp: Input, ctx: ScanContext, offset: int) -> bool:
    """True (after MG002) if pax / GNU long-name headers at ``offset`` are bigger than
    the header cap: tarfile reads their data into memory whole."""
    for _ in range(_MAX_META_CHAIN):
        block = inp.read_at(offset, tarfile.BLOCKSIZE)
        if len(block) < tarfile.BLOCKSIZE or block[156:157] not in _META_TYPES:
            return False
        size = _tar_number(block[124:136])
        if size is None:
            return False  # tarfile reports the damaged header itself
        if size > ctx.limits.max_header_bytes:
            ctx.limit_reached(
                "tar extended header size", ctx.limits.max_header_bytes, offset=offset
            )
            return True
        offset += tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return False


def _tar_number(field: bytes) -> int | None:
    """A header number field: octal text, or GNU base-256 when the top bit is set."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        return None  # negative
    text = field.split(b"\x00", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        return None


def _check_hidden_tail(inp: Input, ctx: ScanContext, end: int) -> None:
    """Non-zero bytes after the point where tar readers stop are invisible to them."""
    offset = end
    while offset < inp.size:
        chunk = inp.read_at(offset, _ZERO_CHECK_CHUNK)
        if not chunk:
            return
        if chunk.strip(b"\x00"):
            ctx.report(
                ARCHIVE_MALFORMED,
                f"{inp.size - end:,} bytes after the end of the tar archive are not read "
                "by tar readers",
                offset=end,
                evidence="trailing",
            )
            return
        offset += len(chunk)


def _scan_member(
    inp: Input, ctx: ScanContext, member: tarfile.TarInfo, label: str, legacy_torch: bool
) -> None:
    if leaves_folder(member.name):
        ctx.report(
            ARCHIVE_PATH_TRAVERSAL,
            f"member name {member.name!r} is absolute or leaves the extraction folder",
            evidence=member.name,
        )
    if member.issym() or member.islnk():
        kind = "symbolic link" if member.issym() else "hard link"
        ctx.report(
            ARCHIVE_LINK_MEMBER,
            f"member {label!r} is a {kind} to {member.linkname!r}",
            evidence=f"{member.name} -> {member.linkname}",
        )
        return
    if member.ischr() or member.isblk() or member.isfifo():
        ctx.report(
            ARCHIVE_LINK_MEMBER, f"member {label!r} is a device or FIFO node", evidence=member.name
        )
        return
    if not member.isreg():
        return  # directories and tar bookkeeping
    if member.issparse():
        ctx.report(
            ARCHIVE_MALFORMED, f"member {label!r} is a sparse file; not inspected", evidence=label
        )
        return
    available = max(0, min(member.size, inp.size - member.offset_data))
    if available < member.size:
        ctx.report(
            ARCHIVE_MALFORMED,
            f"member {label!r} is truncated ({available:,} of {member.size:,} bytes)",
            evidence=f"{label}: truncated",
        )
    window = SliceReader(inp.stream, member.offset_data, available)
    inner = Input(stream=window, size=available, name=f"{inp.name}!/{label}")  # type: ignore[arg-type]
    if legacy_torch and member.name in ("storages", "tensors"):
        descend(ctx, label, inner, as_format=f"torch-{member.name}")
    elif legacy_torch and member.name in TORCH_TAR_MEMBERS:
        descend(ctx, label, inner, as_format="pickle")
    else:
        descend(ctx, label, inner)

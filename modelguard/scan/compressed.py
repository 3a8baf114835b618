"""gzip, bzip2 and xz files: decompress under caps, then scan the content.

The content goes down through ``formats.descend`` (sniffed, depth
capped), so a gzipped checkpoint, tar or pickle is scanned like the plain one.
"""

from __future__ import annotations

from collections.abc import Callable

from modelguard.rules.scan import ARCHIVE_MALFORMED
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.decompress import Decompressor, bzip2_stream, gzip_stream, inflate, xz_stream
from modelguard.scan.formats import BZIP2_MAGIC, GZIP_MAGIC, XZ_MAGIC, descend


def scan_gzip(inp: Input, ctx: ScanContext) -> None:
    _scan_compressed(inp, ctx, "gzip", gzip_stream, GZIP_MAGIC, (".gz", ".tgz"))


def scan_bzip2(inp: Input, ctx: ScanContext) -> None:
    _scan_compressed(inp, ctx, "bzip2", bzip2_stream, BZIP2_MAGIC, (".bz2",))


def scan_xz(inp: Input, ctx: ScanContext) -> None:
    _scan_compressed(inp, ctx, "xz", xz_stream, XZ_MAGIC, (".xz",))


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
    magic: bytes,
    suffixes: tuple[str, ...],
) -> None:
    ctx.set_format(kind)
    result = inflate(
        inp.stream,
        inp.size,
        make,
        ctx,
        what=f"{kind} content",
        multi_stream=True,
        stream_magic=magic,
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
            ctx.report(
                ARCHIVE_MALFORMED,
                f"{result.trailing:,} bytes after the {kind} data are not {kind}",
                evidence=f"{kind}: trailing",
            )
        if result.stopped == "bomb":
            return  # padding built to exhaust memory; nothing worth scanning
        name = content_name(inp.name, suffixes)
        inner = Input(stream=result.stream, size=result.size, name=f"{inp.name}!/{name}")  # type: ignore[arg-type]
        descend(ctx, name, inner)

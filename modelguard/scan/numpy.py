"""NumPy ``.npy`` scanner: the header by hand, object arrays through the pickle scanner.

The header is parsed here rather than with ``numpy.load`` because loading is
exactly what must not happen: ``numpy.load`` reads the data, and with
``allow_pickle=True`` unpickles object arrays. We follow the reader in
``numpy.lib.format`` step by step (magic, version, length, ``ast.literal_eval``
of a bounded string, the same key and type checks, ``descr_to_dtype``) so the
verdict matches what ``numpy.load`` would see, without reading the array data.

``.npz`` archives are zips; the zip scanner hands each ``.npy`` member back
here through ``formats.descend``, so this works on any seekable member stream.
"""

from __future__ import annotations

import ast
import builtins
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from modelguard.findings import Severity
from modelguard.rules.scan import NUMPY_MALFORMED, NUMPY_OBJECT_ARRAY
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import descend
from modelguard.scan.streams import SliceReader

if TYPE_CHECKING:
    import numpy

MAGIC = b"\x93NUMPY"
OBJECT_DATA_MEMBER = "<object data>"
# version -> (struct format of the header length, header text encoding), as numpy reads it
_HEADER_LAYOUT: dict[tuple[int, int], tuple[str, str]] = {
    (1, 0): ("<H", "latin1"),
    (2, 0): ("<I", "latin1"),
    (3, 0): ("<I", "utf8"),
}
# Characters of header literal we parse. np.save writes headers under 10 kB
# (numpy.load refuses longer ones unless allow_pickle=True); real structured
# dtypes with thousands of fields still fit.
_LITERAL_CAP = 256 * 1024
# Declared sizes beyond this are reported as such, not computed exactly.
_SIZE_CAP = 2**64
_EXPECTED_KEYS = frozenset({"descr", "fortran_order", "shape"})
# Python 2 wrote long integers with an "L" suffix; numpy strips it before parsing again.
_PY2_LONG = re.compile(r"\b(\d+)L\b")
# What numpy's dtype machinery raises for a descriptor it cannot build.
_DTYPE_ERRORS = (
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    SyntaxError,
)  # SyntaxError: numpy parses repeat counts of a dtype string with literal_eval
_LITERAL_ERRORS = (SyntaxError, ValueError, TypeError, MemoryError, RecursionError)


@dataclass(frozen=True)
class PlainDtype:
    """A plain descriptor ('<f4', '|u1', '<U10', '|O') known without importing numpy.

    Most .npy files hold one; importing numpy to build it would cost more than
    the whole scan of a small file. Anything else goes through numpy's own
    ``descr_to_dtype``.
    """

    str: str
    itemsize: int
    hasobject: bool
    names: None = None
    subdtype: None = None

    @property
    def descr(self) -> list[tuple[builtins.str, builtins.str]]:
        return [("", self.str)]


# kind -> the item sizes numpy accepts for it (None: any size)
_PLAIN_SIZES: dict[str, frozenset[int] | None] = {
    "b": frozenset({1}),
    "i": frozenset({1, 2, 4, 8}),
    "u": frozenset({1, 2, 4, 8}),
    "f": frozenset({2, 4, 8}),
    "c": frozenset({8, 16}),
    "S": None,
    "U": None,
    "V": None,
}
_PLAIN_DESCR = re.compile(r"([<>|])([biufcSUV])(\d{1,9})|\|O8?")


def plain_dtype(descr: object) -> PlainDtype | None:
    """The dtype of a plain descriptor string numpy would accept, without numpy."""
    if not isinstance(descr, str):
        return None
    match = _PLAIN_DESCR.fullmatch(descr)
    if match is None:
        return None
    if match.group(2) is None:
        return PlainDtype("|O", 8, True)
    order, kind, digits = match.groups()
    size = int(digits)
    sizes = _PLAIN_SIZES[kind]
    if sizes is not None and size not in sizes:
        return None
    if order == "|" and kind not in "bSV" and not (kind in "iu" and size == 1):
        return None  # numpy takes '|' only where the byte order does not matter
    itemsize = size * 4 if kind == "U" else size
    return PlainDtype(descr, itemsize, False)


AnyDtype = Union["numpy.dtype[Any]", PlainDtype]


@dataclass(frozen=True)
class NpyHeader:
    """A validated ``.npy`` header: where the data starts and what it declares."""

    version: tuple[int, int]
    data_offset: int
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: AnyDtype

    @property
    def has_object(self) -> bool:
        return bool(self.dtype.hasobject)

    @property
    def data_bytes(self) -> int:
        """Bytes of raw data the header declares (meaningless for object arrays)."""
        return self.data_bytes_capped(_SIZE_CAP)

    def data_bytes_capped(self, cap: int) -> int:
        """``data_bytes``, or just past ``cap`` as soon as it exceeds it.

        Stopping early keeps a hostile shape of many huge dimensions from costing
        a multi-million-digit multiplication.
        """
        if 0 in self.shape:
            return 0
        total = int(self.dtype.itemsize)
        for dim in self.shape:
            total *= dim
            if total > cap:
                return cap + 1
        return total


def scan_npy(inp: Input, ctx: ScanContext) -> None:
    """Scan one ``.npy`` file or ``.npz`` member without loading it."""
    ctx.set_format("numpy")
    header = read_npy_header(inp, ctx)
    if header is None:
        return
    if header.has_object:
        _scan_object_data(inp, ctx, header)
        return
    _check_data_size(inp, ctx, header)


def read_npy_header(inp: Input, ctx: ScanContext) -> NpyHeader | None:
    """Parse and validate the header; report MG302 (or MG002) and return None if unusable."""
    prefix = inp.read_at(0, len(MAGIC) + 2)
    if len(prefix) < len(MAGIC) + 2:
        _malformed(ctx, "file ends inside the magic string and version", "truncated-magic", 0)
        return None
    if not prefix.startswith(MAGIC):
        _malformed(ctx, "the magic string \\x93NUMPY is missing", "magic", 0)
        return None
    version = (prefix[6], prefix[7])
    layout = _HEADER_LAYOUT.get(version)
    if layout is None:
        _malformed(ctx, f"unsupported format version {version[0]}.{version[1]}", "version", 6)
        return None
    length_format, encoding = layout
    length_size = struct.calcsize(length_format)
    raw_length = inp.read_at(8, length_size)
    if len(raw_length) < length_size:
        _malformed(ctx, "file ends inside the header length", "truncated-length", 8)
        return None
    (header_length,) = struct.unpack(length_format, raw_length)
    header_start = 8 + length_size
    if header_start + header_length > inp.size:
        _malformed(
            ctx,
            f"header length {header_length:,} runs past the end of the input ({inp.size:,} bytes)",
            "truncated-header",
            8,
        )
        return None
    if header_length > ctx.limits.max_header_bytes:
        ctx.limit_reached("npy header length", ctx.limits.max_header_bytes, offset=8)
        return None
    raw = inp.read_at(header_start, header_length)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        _malformed(ctx, f"header is not valid {encoding}", "header-encoding", header_start)
        return None
    if len(text.strip()) > _LITERAL_CAP:
        # numpy.load(allow_pickle=True) accepts any header size, so a big one can
        # still hide an object dtype; but literal_eval costs ~0.5 GB and seconds
        # per MB of dense literal. Past the cap we stop (fail closed, MG002).
        ctx.limit_reached("npy header literal", _LITERAL_CAP, offset=header_start)
        return None
    fields = _parse_header_dict(ctx, text, version, header_start)
    if fields is None:
        return None
    shape, fortran_order, descr = fields
    dtype = _build_dtype(ctx, descr, header_start)
    if dtype is None:
        return None
    return NpyHeader(version, header_start + header_length, shape, fortran_order, dtype)


def _parse_header_dict(
    ctx: ScanContext, text: str, version: tuple[int, int], offset: int
) -> tuple[tuple[int, ...], bool, object] | None:
    """The header's dict literal, checked the way numpy checks it."""
    try:
        value = ast.literal_eval(text)
    except _LITERAL_ERRORS:
        value = _NOT_PARSED
        if version <= (2, 0):
            try:
                value = ast.literal_eval(_PY2_LONG.sub(r"\1", text))
            except _LITERAL_ERRORS:
                value = _NOT_PARSED
    if value is _NOT_PARSED:
        _malformed(ctx, "header is not a Python literal", "header-syntax", offset)
        return None
    if not isinstance(value, dict):
        _malformed(ctx, f"header is a {type(value).__name__}, not a dict", "header-type", offset)
        return None
    if set(value) != _EXPECTED_KEYS:
        keys = ", ".join(sorted(repr(k) for k in value))
        _malformed(ctx, f"header keys are {{{keys}}}", "header-keys", offset)
        return None
    shape = value["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) for dim in shape
    ):
        _malformed(ctx, f"shape is not a tuple of ints: {_short(shape)}", "shape", offset)
        return None
    if any(dim < 0 for dim in shape):
        _malformed(ctx, f"shape has a negative dimension: {_short(shape)}", "shape", offset)
        return None
    fortran_order = value["fortran_order"]
    if not isinstance(fortran_order, bool):
        _malformed(
            ctx, f"fortran_order is not a bool: {_short(fortran_order)}", "fortran-order", offset
        )
        return None
    return shape, fortran_order, value["descr"]


_NOT_PARSED = object()


def _build_dtype(ctx: ScanContext, descr: object, offset: int) -> AnyDtype | None:
    plain = plain_dtype(descr)
    if plain is not None:
        return plain
    # The same constructor numpy.load uses. It builds a dtype from literal data only
    # (strings, tuples, lists); nothing named in it is imported or called.
    from numpy.lib.format import descr_to_dtype

    if not isinstance(descr, (str, tuple, list)):
        _malformed(ctx, f"descr is not a dtype descriptor: {_short(descr)}", "descr", offset)
        return None
    try:
        dtype: numpy.dtype[Any] = descr_to_dtype(descr)  # type: ignore[arg-type]
    except _DTYPE_ERRORS as exc:
        _malformed(ctx, f"unknown dtype {_short(descr)} ({exc})", "descr", offset)
        return None
    return dtype


def _scan_object_data(inp: Input, ctx: ScanContext, header: NpyHeader) -> None:
    """An object array's data is a pickle that numpy.load(allow_pickle=True) runs.

    The pickle is scanned first: when it imports and calls nothing beyond the
    allowlist the array is reported low (numpy.load refuses it by default, and
    loading it with allow_pickle=True runs nothing dangerous); otherwise at the
    rule's severity beside what the pickle scan found.
    """
    length = inp.size - header.data_offset
    if length <= 0:
        _report_object_array(ctx, header, clean=False)
        _malformed(
            ctx, "object array has no pickle data", "object-data-missing", header.data_offset
        )
        return
    region = Input(
        stream=SliceReader(inp.stream, header.data_offset, length),  # type: ignore[arg-type]
        size=length,
        name=f"{inp.name}!/{OBJECT_DATA_MEMBER}",
    )
    # Read as a pickle, not sniffed: numpy.load unpickles these bytes whatever
    # they look like.
    mark = ctx.mark()
    descend(ctx, OBJECT_DATA_MEMBER, region, as_format="pickle")
    worst = ctx.worst_since(mark)
    _report_object_array(ctx, header, clean=worst is None or worst < Severity.MEDIUM)


def _report_object_array(ctx: ScanContext, header: NpyHeader, *, clean: bool) -> None:
    verdict = (
        "its pickle imports and calls only allowlisted globals"
        if clean
        else f"numpy.load(allow_pickle=True) runs it (scanned as {OBJECT_DATA_MEMBER})"
    )
    ctx.report(
        NUMPY_OBJECT_ARRAY,
        f"array dtype {_describe(header.dtype)} holds Python objects: its data is a pickle; "
        + verdict,
        offset=header.data_offset,
        evidence="object-dtype",
        severity=Severity.LOW if clean else None,
    )


def _check_data_size(inp: Input, ctx: ScanContext, header: NpyHeader) -> None:
    available = inp.size - header.data_offset
    declared = header.data_bytes_capped(_SIZE_CAP)
    if declared > available:
        amount = f"{declared:,}" if declared <= _SIZE_CAP else "more than 2**64"
        _malformed(
            ctx,
            f"header declares {amount} data bytes (shape {_short(header.shape)} x "
            f"{header.dtype.itemsize}-byte items) but only {available:,} follow",
            "data-size",
            header.data_offset,
        )
    elif declared < available:
        # numpy.load ignores them; a second payload can hide there.
        ctx.report(
            NUMPY_MALFORMED,
            f"{available - declared:,} bytes follow the array data; numpy.load ignores them",
            offset=header.data_offset + declared,
            evidence="trailing-data",
            severity=Severity.LOW,
        )


def _malformed(ctx: ScanContext, problem: str, evidence: str, offset: int) -> None:
    ctx.report(NUMPY_MALFORMED, f"malformed .npy: {problem}", offset=offset, evidence=evidence)


def _describe(dtype: AnyDtype) -> str:
    plain = dtype.names is None and dtype.subdtype is None
    return str(dtype.str) if plain else _short(dtype.descr)


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

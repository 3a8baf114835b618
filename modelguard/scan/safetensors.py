"""safetensors scanner: validate the header without trusting it, never read tensor data.

Hand-written on purpose: the safetensors library is the *loader* whose input we
judge. It stops at the first problem with one message, maps the whole file, and
keeps the last of duplicate keys silently; a scanner has to report every defect,
bound what it reads, and flag what other readers (which may be less careful
than the reference one) could misread. The checks mirror the reference
implementation (safetensors 0.8: ``read_metadata`` and ``Metadata::validate``):

* an 8-byte little-endian header length within the file and the size cap;
* a UTF-8 JSON object, every key once;
* each tensor an object with a known ``dtype``, a ``shape`` of non-negative
  ints and ``data_offsets`` ``[begin, end]`` inside the data section;
* ``shape`` x dtype bits = 8 x (end - begin), whole bytes for sub-byte types;
* the tensors, sorted by offset, cover the data section exactly (no overlap,
  no gap, nothing after the last one);
* ``__metadata__`` a map of strings to strings.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from modelguard.rules.scan import (
    SAFETENSORS_BAD_LAYOUT,
    SAFETENSORS_BAD_METADATA,
    SAFETENSORS_MALFORMED_HEADER,
    SAFETENSORS_UNKNOWN_DTYPE,
)
from modelguard.scan.context import Input, ScanContext

LENGTH_BYTES = 8
METADATA_KEY = "__metadata__"
_TENSOR_KEYS = ("dtype", "shape", "data_offsets")

# dtype -> bits per element, as the reference implementation (0.8) accepts them.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,  # float4_e2m1, two per byte
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class _Tensor:
    name: str
    begin: int
    end: int


def scan_safetensors(inp: Input, ctx: ScanContext) -> None:
    """Scan a ``.safetensors`` file (or archive member) from its header alone."""
    ctx.set_format("safetensors")
    header = _read_header(inp, ctx)
    if header is None:
        return
    data_size = inp.size - LENGTH_BYTES - header.length
    tensors: list[_Tensor] = []
    names = [key for key in header.value if key != METADATA_KEY]
    if len(names) > ctx.limits.max_tensors:
        ctx.limit_reached("safetensors tensor count", ctx.limits.max_tensors)
        return
    for name in names:
        tensor = _check_tensor(ctx, name, header.value[name], data_size)
        if tensor is not None:
            tensors.append(tensor)
    if METADATA_KEY in header.value:
        _check_metadata(ctx, header.value[METADATA_KEY])
    if len(tensors) == len(names):
        # With an entry already rejected the layout cannot be judged fairly.
        _check_coverage(ctx, tensors, data_size)


@dataclass(frozen=True)
class _Header:
    length: int
    value: dict[str, object]


def _read_header(inp: Input, ctx: ScanContext) -> _Header | None:
    raw_length = inp.read_at(0, LENGTH_BYTES)
    if len(raw_length) < LENGTH_BYTES:
        _malformed(ctx, "file is shorter than the 8-byte header length", "truncated-length")
        return None
    (length,) = struct.unpack("<Q", raw_length)
    if length > inp.size - LENGTH_BYTES:
        _malformed(
            ctx,
            f"header length {length:,} runs past the end of the input ({inp.size:,} bytes)",
            "header-length",
        )
        return None
    if length > ctx.limits.max_header_bytes:
        ctx.limit_reached("safetensors header length", ctx.limits.max_header_bytes, offset=0)
        return None
    raw = inp.read_at(LENGTH_BYTES, length)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _malformed(ctx, f"header is not UTF-8 ({exc.reason} at byte {exc.start})", "utf-8")
        return None
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKeyError as exc:
        _malformed(
            ctx,
            f"header repeats the key {exc.key!r}; readers disagree on which entry counts",
            f"duplicate-key:{exc.key}",
        )
        return None
    except (ValueError, RecursionError) as exc:
        _malformed(ctx, f"header is not valid JSON ({exc})", "json")
        return None
    if not isinstance(value, dict):
        _malformed(ctx, f"header is a JSON {type(value).__name__}, not an object", "not-object")
        return None
    return _Header(length, value)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, item in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = item
    return result


def _check_tensor(ctx: ScanContext, name: str, entry: object, data_size: int) -> _Tensor | None:
    """Validate one tensor entry; report and return None if it is unusable."""
    if not isinstance(entry, dict):
        _malformed(ctx, f"tensor {name!r} is a JSON {_json_type(entry)}, not an object", name)
        return None
    missing = [key for key in _TENSOR_KEYS if key not in entry]
    if missing:
        _malformed(ctx, f"tensor {name!r} lacks {', '.join(missing)}", name)
        return None
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        _malformed(ctx, f"tensor {name!r} shape is not a list of non-negative ints", name)
        return None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        _malformed(ctx, f"tensor {name!r} data_offsets is not [begin, end]", name)
        return None
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        ctx.report(
            SAFETENSORS_UNKNOWN_DTYPE,
            f"tensor {name!r} has unknown dtype {dtype!r}",
            evidence=f"{name}: {dtype!r}",
        )
        return None
    begin, end = offsets
    if begin > end or end > data_size:
        ctx.report(
            SAFETENSORS_BAD_LAYOUT,
            f"tensor {name!r} data_offsets [{begin}, {end}] are outside the "
            f"{data_size:,}-byte data section",
            evidence=f"{name}: out of range",
        )
        return None
    cap = data_size * 8
    count = _element_count(shape, cap=cap)
    bits = count * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        if count > cap:
            expected = "more than the whole data section"
        elif bits % 8:
            expected = f"{bits / 8:g} (not a whole number of bytes)"
        else:
            expected = f"{bits // 8:,}"
        ctx.report(
            SAFETENSORS_BAD_LAYOUT,
            f"tensor {name!r} spans {end - begin:,} bytes but shape {shape} of {dtype} "
            f"needs {expected}",
            evidence=f"{name}: size",
        )
        return None
    return _Tensor(name, begin, end)


def _check_coverage(ctx: ScanContext, tensors: list[_Tensor], data_size: int) -> None:
    """The reference loader requires the data section to be tiled exactly."""
    position = 0
    for tensor in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if tensor.begin < position:
            ctx.report(
                SAFETENSORS_BAD_LAYOUT,
                f"tensor {tensor.name!r} [{tensor.begin}, {tensor.end}] overlaps the tensor "
                f"before it (which ends at {position})",
                evidence=f"{tensor.name}: overlap",
            )
        elif tensor.begin > position:
            ctx.report(
                SAFETENSORS_BAD_LAYOUT,
                f"{tensor.begin - position:,} unaccounted bytes before tensor "
                f"{tensor.name!r} (gap [{position}, {tensor.begin}])",
                evidence=f"{tensor.name}: gap",
            )
        position = max(position, tensor.end)
    if position < data_size:
        ctx.report(
            SAFETENSORS_BAD_LAYOUT,
            f"{data_size - position:,} bytes after the last tensor belong to no tensor",
            evidence="trailing-data",
        )


def _check_metadata(ctx: ScanContext, metadata: object) -> None:
    if metadata is None:
        return  # the reference reads null as "no metadata"
    if not isinstance(metadata, dict):
        ctx.report(
            SAFETENSORS_BAD_METADATA,
            f"__metadata__ is a JSON {_json_type(metadata)}, not an object",
            evidence="not-object",
        )
        return
    for key, value in metadata.items():
        if not isinstance(value, str):
            ctx.report(
                SAFETENSORS_BAD_METADATA,
                f"__metadata__[{key!r}] is a JSON {_json_type(value)}, not a string",
                evidence=key,
            )


def _element_count(shape: list[int], *, cap: int) -> int:
    """The product of ``shape``, or just past ``cap`` once it exceeds it.

    Stopping early keeps a hostile shape of many huge dimensions from costing a
    multi-million-digit multiplication.
    """
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        count *= dim
        if count > cap:
            return cap + 1
    return count


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _malformed(ctx: ScanContext, problem: str, evidence: str) -> None:
    ctx.report(
        SAFETENSORS_MALFORMED_HEADER, f"malformed safetensors header: {problem}", evidence=evidence
    )

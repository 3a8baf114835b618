"""The record streams of the oldest torch.save format (a tar, before PyTorch 0.4).

Its ``storages`` and ``tensors`` members interleave pickles with raw bytes, and
torch.load unpickles every one of those pickles:

* ``storages``: a pickled count, then per storage a pickled
  ``(key, location, storage_type)``, an 8-byte element count and the elements
  (their size given by ``storage_type``, e.g. ``torch.FloatStorage``), then a
  pickled list of storage views;
* ``tensors``: a pickled count, then per tensor a pickled
  ``(key, storage_id, tensor_type)``, a 4-byte ``ndim``, 4 bytes skipped, then
  ``ndim`` sizes and ``ndim`` strides (8 bytes each) and an 8-byte offset.

Every pickle is walked; the raw bytes are skipped by their framing. A record
whose framing cannot be followed ends the walk with a finding.
"""

from __future__ import annotations

import struct

from modelguard.rules.scan import ARCHIVE_MALFORMED, PICKLE_TRAILING_DATA
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.pickle.walker import GlobalName, PickledValue
from modelguard.scan.torch import STORAGE_ELEMENT_SIZES


def scan_storages_member(inp: Input, ctx: ScanContext) -> None:
    """The reading "torch-storages": a legacy torch tar's ``storages`` member."""
    _scan_records("storages", inp, ctx)


def scan_tensors_member(inp: Input, ctx: ScanContext) -> None:
    """The reading "torch-tensors": a legacy torch tar's ``tensors`` member."""
    _scan_records("tensors", inp, ctx)


def _scan_records(kind: str, inp: Input, ctx: ScanContext) -> None:
    """Walk the ``storages`` or ``tensors`` (``kind``) member of a legacy torch tar."""
    from modelguard.scan.pickle import walk_pickle

    head = walk_pickle(inp.stream, ctx, start=0, limit=inp.size, values=True)
    if head.end is None:
        return
    count = _pickled_int(head.values)
    if count is None:
        _broken(ctx, "does not start with a pickled record count", 0)
        return
    offset = head.end
    for index in range(count):
        if index >= ctx.limits.max_pickle_streams:
            ctx.limit_reached("legacy torch records", ctx.limits.max_pickle_streams)
            return
        record = walk_pickle(inp.stream, ctx, start=offset, limit=inp.size, values=True)
        if record.end is None:
            return
        skip = _raw_length(inp, kind, record.values, record.end)
        if skip is None or record.end + skip > inp.size:
            _broken(ctx, f"record {index} has raw data that cannot be framed", record.end)
            return
        offset = record.end + skip
    if kind == "storages":
        if offset >= inp.size:
            _broken(ctx, "ends before its storage view list", offset)
            return
        views = walk_pickle(inp.stream, ctx, start=offset, limit=inp.size)
        if views.end is None:
            return
        offset = views.end
    if offset != inp.size:
        ctx.report(
            PICKLE_TRAILING_DATA,
            f"{inp.size - offset:,} bytes follow the last of {count} records",
            offset=offset,
            evidence="trailing-data",
        )


def _raw_length(inp: Input, kind: str, values: list[PickledValue] | None, end: int) -> int | None:
    """Bytes of raw data after a record pickle that pushed ``values`` and ends at ``end``."""
    if kind == "tensors":
        head = inp.read_at(end, 8)
        if len(head) < 8:
            return None
        (ndim,) = struct.unpack_from("<i", head)
        return None if ndim < 0 else 8 + 16 * ndim + 8
    sizes = [
        STORAGE_ELEMENT_SIZES.get(v.rpartition(".")[2])
        for v in values or ()
        if isinstance(v, GlobalName) and v.startswith("torch.")
    ]
    element = next((s for s in sizes if s is not None), None)
    count = inp.read_at(end, 8)
    if element is None or len(count) < 8:
        return None
    return 8 + int.from_bytes(count, "little") * element


def _pickled_int(values: list[PickledValue] | None) -> int | None:
    """The one non-negative int a count pickle holds."""
    ints = [v for v in values or () if type(v) is int]
    if len(ints) != 1 or ints[0] < 0:
        return None
    return ints[0]


def _broken(ctx: ScanContext, problem: str, offset: int) -> None:
    ctx.report(
        ARCHIVE_MALFORMED,
        f"legacy torch record stream {problem}; the rest was not inspected",
        offset=offset,
        evidence="legacy-record-framing",
    )

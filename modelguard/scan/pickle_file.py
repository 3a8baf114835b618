"""A whole file as ``pickle.load``, ``joblib.load`` and ``torch.load`` read it.

All three start unpickling at byte 0 whatever follows (torch.load does for any
file that is not a zip or a tar: its legacy format begins with a plain
``pickle.load`` of a magic number). They execute opcodes as they read them, so
whatever a stream imports or calls before it breaks has already run. Hence:

* the reading holds whenever the first byte is an opcode the loader accepts;
  the stream is walked whole, however long its first argument;
* whether the walk *went anywhere* is judged on the whole walk (a PROTO opcode,
  or several opcodes). If it did, the file is a pickle and everything is
  reported. If it did not (bytes of another format that happen to start with
  an opcode letter), only what would already have run counts: imports and
  calls; damage is then the other format's business, not a pickle's;
* a first stream that is torch's magic number makes the file torch's legacy
  format, read as torch reads it (five pickles, then storage bytes).
"""

from __future__ import annotations

import pickletools

from modelguard.findings import Finding
from modelguard.rules.scan import (
    PICKLE_DANGEROUS_IMPORT,
    PICKLE_UNKNOWN_CALL,
    PICKLE_UNKNOWN_IMPORT,
    PICKLE_UNRESOLVED_CALL,
)
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.pickle import (
    PLAUSIBLE_OPCODES,
    PROTO,
    follow_joblib,
    scan_pickle_input,
    scan_pickle_streams,
    walk_pickle,
    walk_stream,
)
from modelguard.scan.pickle.walker import HIGHEST_PROTOCOL, PickleStream

# The opcodes the unpickler knows (the standard library's own table).
OPCODES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes)
# PERSID / BINPERSID fail at once without a persistent_load, which none of the
# loaders that read a file from its first byte installs for that first stream.
_NO_PERSISTENT_LOAD = frozenset(b"PQ")
TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_MAGIC_OPCODES = 6
_CODE_RULES = frozenset(
    r.id for r in (PICKLE_DANGEROUS_IMPORT, PICKLE_UNKNOWN_CALL, PICKLE_UNRESOLVED_CALL)
)


def starts_pickle(head: bytes) -> bool:
    """Whether an unpickler reading from the first of these bytes gets past it."""
    if not head or head[0] not in OPCODES or head[0] in _NO_PERSISTENT_LOAD:
        return False
    return head[0] != PROTO or (len(head) >= 2 and head[1] <= HIGHEST_PROTOCOL)


def runs_code(finding: Finding) -> bool:
    """Findings of what an unpickler has already imported or called when it stops."""
    if finding.rule_id in _CODE_RULES:
        return True
    # An import of a name that cannot be a module path fails without running anything.
    dotted = finding.evidence or ""
    return finding.rule_id == PICKLE_UNKNOWN_IMPORT.id and all(
        part.isidentifier() for part in dotted.split(".")
    )


def scan_pickle_file(inp: Input, ctx: ScanContext) -> str | bool | None:
    """The reading "pickle" of a file (see the module docstring)."""
    if inp.size == 0:
        return False
    first_byte = inp.read_at(0, 1)[0]
    tentative = ctx.speculative()
    first = walk_stream(inp, tentative, 0)
    if is_torch_magic(inp, ctx, first):
        from modelguard.scan.torch import scan_torch_legacy

        scan_torch_legacy(inp, ctx)
        return "torch-legacy"
    if (first_byte == PROTO and first.opcodes >= 1) or first.standard_opcodes >= PLAUSIBLE_OPCODES:
        ctx.adopt(tentative.findings)
        end = follow_joblib(inp, ctx, first)  # joblib's readings, when it holds arrays
        if end is not None:
            scan_pickle_streams(inp, ctx, offset=end, streams=1)
        return None
    return _weak_reading(inp, ctx, first, [f for f in tentative.findings if runs_code(f)])


def _weak_reading(
    inp: Input, ctx: ScanContext, first: PickleStream, kept: list[Finding]
) -> bool | None:
    """A first stream that went nowhere: keep what ran, follow short streams after it.

    No trailing-data search here: the bytes are most likely another format's.
    """
    end = first.end
    streams = 1
    while end is not None and end < inp.size and streams < ctx.limits.max_pickle_streams:
        if not starts_pickle(inp.read_at(end, 2)):
            break
        tentative = ctx.speculative()
        end = walk_pickle(inp.stream, tentative, start=end, limit=inp.size).end
        kept.extend(f for f in tentative.findings if runs_code(f))
        streams += 1
    ctx.adopt(kept)
    # Bytes that are nothing but complete pickles are a pickle, however small.
    return None if kept or end == inp.size else False


def is_torch_magic(inp: Input, ctx: ScanContext, first: PickleStream) -> bool:
    """Whether the first stream pickles torch's magic number (at any protocol)."""
    # PROTO, FRAME, LONG1, MEMOIZE, STOP at most: torch's own encodings of the number.
    # One padded with more opcodes is not taken for the magic, and so is scanned as
    # consecutive pickles instead, which walks the same five streams.
    if first.end is None or first.opcodes > _MAGIC_OPCODES:
        return False
    probe = ctx.speculative()  # already walked once: its findings are known
    walked = walk_pickle(inp.stream, probe, start=first.start, limit=first.end, values=True)
    return walked.values == [TORCH_MAGIC_NUMBER]


def scan_torch_load_input(inp: Input, ctx: ScanContext) -> None:
    """The reading "torch-module": bytes handed to ``torch.load`` from memory.

    torch.load reads a buffer as a zip when it starts with a local header,
    otherwise as its legacy pickles (it tries a tar only on real files).
    """
    from modelguard.scan.formats import ZIP_LOCAL, get

    if inp.read_at(0, 4) == ZIP_LOCAL:
        get("zip").scan(inp, ctx)
        return
    first = walk_pickle(inp.stream, ctx.speculative(), start=0, limit=inp.size)
    if is_torch_magic(inp, ctx, first):
        from modelguard.scan.torch import scan_torch_legacy

        scan_torch_legacy(inp, ctx)
        return
    scan_pickle_input(inp, ctx)


def scan_unread_pickle(inp: Input, ctx: ScanContext) -> None:
    """The reading "storage-blob": bytes the loader reads raw, never unpickles.

    Only a pickle that would import or call something is worth a finding there:
    someone (a later script, another tool) could still hand the member to
    pickle.load. Everything else in such bytes is data.
    """
    tentative = ctx.speculative()
    first = walk_pickle(inp.stream, tentative, start=0, limit=inp.size)
    del first
    ctx.adopt([f for f in tentative.findings if runs_code(f)])

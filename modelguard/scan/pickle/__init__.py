"""The pickle scanner: every consecutive stream of a file, and what trails them.

``walker`` is the symbolic machine that walks one stream without executing it
(see its docstring for why it is hand-written); ``reader`` its bounded input
and the framings of the different unpicklers; ``joblib`` what joblib.load makes
of its array wrappers; ``globals`` the allowlist-first judgement of what a
stream imports. This module scans whole inputs: each stream in every reading a
loader can take (``pickle.load``; ``joblib.load``, also with ``mmap_mode``,
when the stream holds joblib arrays), the search of trailing bytes for a
payload another loader could read, and the predicate that says whether bytes
start a pickle at all.

Costs stay linear in the input: each reading is one pass, and the trailing
search spends at most ``limits.max_search_work`` times the trailing size.
"""

from __future__ import annotations

import io
import re
from dataclasses import replace

from modelguard.limits import Limits
from modelguard.rules.scan import (
    PICKLE_DANGEROUS_IMPORT,
    PICKLE_MALFORMED,
    PICKLE_MULTIPLE_STREAMS,
    PICKLE_TRAILING_DATA,
)
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.decompress import is_inflated
from modelguard.scan.pickle.globals import Verdict, classify
from modelguard.scan.pickle.reader import CHUNK
from modelguard.scan.pickle.walker import (
    HIGHEST_PROTOCOL,
    JOBLIB,
    JOBLIB_MMAP,
    SECURITY_RULES,
    ImportedGlobal,
    PickleStream,
    trial_walk,
    walk_pickle,
)

__all__ = [
    "PLAUSIBLE_OPCODES",
    "PROTO",
    "ImportedGlobal",
    "PickleStream",
    "follow_joblib",
    "plausible_pickle",
    "scan_pickle_input",
    "scan_pickle_streams",
    "walk_pickle",
    "walk_stream",
    "went_somewhere",
]

PLAUSIBLE_OPCODES = 4  # a protocol 0/1 stream must parse this many opcodes
PROTO = 0x80
_MAX_TRIAL_WALKS = 1_000  # embedded-pickle candidates tried in trailing data
_TRAILING_OVERLAP = 512
_SEARCH_FLOOR = 1 << 20  # work any trailing search may spend, however short


def plausible_pickle(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) reads as the start of a pickle.

    A PROTO opcode with a known protocol is enough: pickle.load accepts such a file
    whatever follows, so sniffing must not be stricter than the loader. Protocol
    0/1 pickles have no header: the head must parse as at least a few valid opcodes
    (or a complete short pickle), which text that merely starts with an opcode
    letter ("class ...", "lorem ...", "I am ...") does not.
    """
    if not head:
        return False
    if head[0] == 0x80:
        return len(head) >= 2 and head[1] <= HIGHEST_PROTOCOL
    result, _, _ = trial_walk(io.BytesIO(head), 0, None, Limits(), frozenset())
    if result.standard_complete:
        return result.opcodes >= 2
    return result.standard_opcodes >= PLAUSIBLE_OPCODES


_PROTO_CANDIDATE = re.compile(rb"\x80[\x02-\x05]")
_TEXT_GLOBAL = re.compile(rb"[ci]([A-Za-z_][\w.]{0,255})\n([A-Za-z_][\w.]{0,255})\n")


def _search_trailing(inp: Input, ctx: ScanContext, offset: int) -> None:
    """Look inside trailing bytes for a pickle payload another loader could read.

    Pickles that start with a PROTO opcode are walked from each candidate: a
    complete one is reported in full, an incomplete one for what it imports and
    calls (an unpickler runs those before it meets the damage). Protocol 0
    GLOBAL/INST opcodes naming a dangerous global are reported too. The walks
    together read at most ``max_search_work`` times the searched bytes (MG002
    past that), so fake starts that each run to the end cannot make it quadratic.
    """
    limits = ctx.limits
    cap = limits.max_pickle_string
    end = min(inp.size, offset + cap)
    if inp.size - offset > cap:
        ctx.limit_reached("trailing bytes searched for pickles", cap, offset=offset)
    budget = limits.max_search_work * (end - offset) + _SEARCH_FLOOR
    trials = 0
    pos = offset
    resume = offset  # candidates before this lie inside an embedded pickle already seen
    while pos < end:
        chunk = inp.read_at(pos, min(CHUNK, end - pos))
        if not chunk:
            break
        for match in _TEXT_GLOBAL.finditer(chunk):
            module = match.group(1).decode("ascii")
            name = match.group(2).decode("ascii")
            found = classify(module, name, ctx.allow_globals)
            if found.verdict is Verdict.DANGEROUS:
                ctx.report(
                    PICKLE_DANGEROUS_IMPORT,
                    f"trailing data holds a pickle GLOBAL for {found.dotted}: {found.reason}",
                    offset=pos + match.start(),
                    evidence=found.dotted,
                )
        for match in _PROTO_CANDIDATE.finditer(chunk):
            at = pos + match.start()
            if at < resume:
                continue
            trials += 1
            if trials > _MAX_TRIAL_WALKS:
                ctx.limit_reached("embedded pickle candidates", _MAX_TRIAL_WALKS, offset=at)
                return
            if budget <= 0:
                ctx.limit_reached(
                    "work searching trailing data for pickles", limits.max_search_work, offset=at
                )
                return
            # The budget bounds each walk: opcodes and text-line bytes alike.
            trial_limits = replace(
                limits,
                max_pickle_opcodes=min(limits.max_pickle_opcodes, budget),
                max_pickle_string=min(limits.max_pickle_string, budget),
            )
            result, sink, work = trial_walk(
                inp.stream, at, inp.size, trial_limits, ctx.allow_globals
            )
            budget -= result.opcodes + work
            if result.complete and result.end is not None:
                sink.replay(ctx)
                resume = result.end
            else:
                sink.replay(ctx, rules=SECURITY_RULES)
        if pos + len(chunk) >= end:
            break
        pos += max(1, len(chunk) - _TRAILING_OVERLAP)


def follow_joblib(inp: Input, ctx: ScanContext, result: PickleStream) -> int | None:
    """After ``pickle.load``'s walk of a stream: joblib's readings, when it holds arrays.

    joblib.load reads their bytes where pickle.load reads opcodes (and fails,
    which is why the damage that walk met after a wrapper was deferred). Returns
    where the next stream starts.
    """
    if not result.joblib:
        return result.end
    inflated = is_inflated(inp.stream)
    joblib = walk_pickle(
        inp.stream, ctx, start=result.start, limit=inp.size, reading=JOBLIB, inflated=inflated
    )
    if joblib.mmap_differs and inp.fs_path is not None:
        # mmap_mode applies to plain files only (not compressed or in-memory ones).
        walk_pickle(inp.stream, ctx, start=result.start, limit=inp.size, reading=JOBLIB_MMAP)
    if not joblib.complete:
        for message, at, evidence in result.deferred:  # no reading got through
            ctx.report(PICKLE_MALFORMED, message, offset=at, evidence=evidence)
        return result.end
    # pickle.load ends somewhere inside joblib's stream (at an object array's STOP,
    # say): a reading of array bytes, not a place the next stream starts.
    return joblib.end


def walk_stream(inp: Input, ctx: ScanContext, offset: int) -> PickleStream:
    """``pickle.load``'s walk of the stream at ``offset`` (joblib damage deferred)."""
    return walk_pickle(
        inp.stream,
        ctx,
        start=offset,
        limit=inp.size,
        defer_joblib_damage=True,
        inflated=is_inflated(inp.stream),
    )


def scan_pickle_input(inp: Input, ctx: ScanContext) -> None:
    """Scan every consecutive pickle stream in ``inp``: a member its loader unpickles."""
    if inp.size == 0:
        ctx.report(
            PICKLE_MALFORMED, f"{inp.name} is empty, not a pickle", offset=0, evidence="empty"
        )
        return
    scan_pickle_streams(inp, ctx, offset=0, streams=0)


def went_somewhere(result: PickleStream, first_byte: int) -> bool:
    """Whether a walk read like a pickle rather than bytes that start with an opcode.

    Judged on the whole walk, never on a fixed-size prefix: a PROTO opcode, at
    least a few opcodes, or a complete stream of two or more.
    """
    if first_byte == PROTO:
        return result.opcodes >= 1  # a PROTO the loader accepts
    return result.standard_opcodes >= PLAUSIBLE_OPCODES or (
        result.standard_complete and result.opcodes >= 2
    )


def scan_pickle_streams(inp: Input, ctx: ScanContext, *, offset: int, streams: int) -> None:
    """Walk the streams from ``offset`` on (``streams`` already walked before it).

    A stream after the first is walked from its first byte like any other; when
    that walk goes nowhere the bytes are trailing data, searched for payloads.
    Each stream is read as pickle.load and, when it holds joblib arrays, as
    joblib.load reads it.
    """
    while offset < inp.size:
        if streams >= ctx.limits.max_pickle_streams:
            ctx.limit_reached("pickle streams", ctx.limits.max_pickle_streams, offset=offset)
            break
        if streams == 0:
            result = walk_stream(inp, ctx, offset)
        else:
            tentative = ctx.speculative()
            result = walk_stream(inp, tentative, offset)
            if not went_somewhere(result, inp.read_at(offset, 1)[0]):
                ctx.report(
                    PICKLE_TRAILING_DATA,
                    f"{inp.size - offset:,} bytes after the last pickle STOP are not a pickle",
                    offset=offset,
                    evidence="trailing-data",
                )
                _search_trailing(inp, ctx, offset)
                break
            ctx.adopt(tentative.findings)
        streams += 1
        end = follow_joblib(inp, ctx, result)
        if end is None:
            break
        offset = end
    if streams > 1:
        ctx.report(
            PICKLE_MULTIPLE_STREAMS,
            f"{inp.name} holds {streams} consecutive pickle streams; all were scanned",
            offset=0,
            evidence="multiple-streams",
        )

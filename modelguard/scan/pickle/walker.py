"""The symbolic pickle machine: a bounded, non-executing opcode walker.

Why hand-written: ``pickle`` executes what it reads, and ``pickletools.genops``
trusts the stream too much for hostile input. It reads every declared length in
full (a BINUNICODE8 of 2**60 bytes is a MemoryError, a 200 MB BINBYTES is 200 MB
of memory), materialises every argument, and raises on damage halfway through,
losing what it had seen. This walker reads through a bounded buffer, keeps
only short strings (module and attribute names), seeks over long arguments,
counts opcodes, memo entries and stack depth against ``ctx.limits``, and turns
every kind of damage into a finding.

The stack is modelled symbolically, like fickling: strings, imported globals,
results of calls and opaque data (``values``). That is enough to resolve every
callable a stream can obtain (GLOBAL, STACK_GLOBAL with operands from any
string opcode or the memo, INST, OBJ, NEWOBJ, NEWOBJ_EX, REDUCE, BUILD,
EXT1/2/4) and to tell what is only imported from what is called with
arguments the file chose.

A walk follows one *reading* of the stream (``Reading``): loaders disagree on
frames (``Framing``) and joblib reads array bytes where a plain unpickler
reads opcodes. The contiguous reading (``pickle.load``) notices every place
where the framings could part; only then are the other framings walked.
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Protocol

from modelguard.findings import Severity
from modelguard.limits import Limits
from modelguard.rules.base import Rule
from modelguard.rules.scan import (
    PICKLE_DANGEROUS_IMPORT,
    PICKLE_EXPANSION_BOMB,
    PICKLE_EXTENSION_CODE,
    PICKLE_FORGED_OBJECT_ARRAY,
    PICKLE_MALFORMED,
    PICKLE_UNKNOWN_CALL,
    PICKLE_UNKNOWN_IMPORT,
    PICKLE_UNRESOLVED_CALL,
)
from modelguard.scan.context import ScanContext
from modelguard.scan.pickle.globals import CALLS_AN_ARGUMENT, Verdict, classify
from modelguard.scan.pickle.joblib import (
    ARRAY_SUBCLASSES,
    MAX_DICT_KEYS,
    WRAPPER,
    CannotLoad,
    DtypeFacts,
    apply_state,
    built_wrapper,
    dtype_facts,
    element_count,
    init_attrs,
    truthy,
    wrapper_name,
)
from modelguard.scan.pickle.reader import (
    KEEP_STRING,
    AlreadyReported,
    CapReached,
    Malformed,
    PythonFramed,
    Reader,
    Truncated,
    UnbufferedFramed,
    WalkStop,
)
from modelguard.scan.pickle.values import (
    DATA,
    NONE,
    Called,
    Container,
    Data,
    Dict,
    Dtype,
    Extension,
    Global,
    ImportedGlobal,
    Instance,
    Unresolved,
    Value,
)

__all__ = [
    "CONTIGUOUS",
    "HIGHEST_PROTOCOL",
    "Framing",
    "GlobalName",
    "ImportedGlobal",
    "PickleStream",
    "PickledValue",
    "Reading",
    "Walker",
    "trial_walk",
    "walk_pickle",
]

HIGHEST_PROTOCOL = 5


# ---- readings ------------------------------------------------------------------------
class Framing(enum.Enum):
    """How a loader's unpickler turns FRAME opcodes into the bytes an opcode reads."""

    # C unpickler over bytes or a file with peek() (pickle.load of an open file,
    # numpy.load): the stream is contiguous, a FRAME only checks its bytes exist.
    CONTIGUOUS = "pickle.load"
    # C unpickler over a file without peek() (io.BytesIO: torch.load, pickle.load of
    # a BytesIO): an argument that crosses the frame's end drops the rest of it.
    UNBUFFERED = "torch.load or pickle.load of io.BytesIO"
    # pickle._Unpickler (joblib, dill): reads must not cross a frame's end.
    PYTHON = "the pure-Python unpickler (joblib, dill)"


@dataclass(frozen=True)
class Reading:
    """One way a loader reads a stream: its framing, and joblib's array handling."""

    framing: Framing = Framing.CONTIGUOUS
    joblib: bool = False  # NumpyArrayWrapper BUILDs read array bytes (joblib.load)
    mmap: bool = False  # ... as joblib.load(mmap_mode=...) does

    @property
    def label(self) -> str:
        if self.joblib:
            return "joblib.load(mmap_mode=...)" if self.mmap else "joblib.load"
        return self.framing.value


CONTIGUOUS = Reading()
JOBLIB = Reading(Framing.PYTHON, joblib=True)
JOBLIB_MMAP = Reading(Framing.PYTHON, joblib=True, mmap=True)
_OTHER_FRAMINGS = (Reading(Framing.UNBUFFERED), Reading(Framing.PYTHON))
_NO_FRAME = 1 << 62


# ---- results -------------------------------------------------------------------------
class GlobalName(str):
    """A global's dotted name among a stream's values, told apart from a string."""


# What a stream pushes that a caller may want to read back: strings, ints and
# the globals it imports (GlobalName).
PickledValue = str | int
MAX_VALUES = 1_000_000  # values recorded per stream
MAX_VALUE_CHARS = 16 * 1024 * 1024  # characters of recorded strings per stream
_MAX_IMPORTS = 100_000  # distinct globals remembered per stream (more are reported at once)


@dataclass
class PickleStream:
    """What a walk of one pickle stream found.

    ``end`` is the offset just after STOP, or None when the stream was truncated,
    malformed or stopped at a cap (then ``truncated``, ``malformed`` or
    ``limited`` says which). Offsets are absolute positions in the walked stream.

    ``values`` (only when asked for) lists, in order, the strings, ints and
    globals the stream pushes, memo fetches included; it is None when not asked
    for or when it outgrew its bounds.

    ``frame_anomaly`` says why loaders with other framings would read other
    opcodes (None: all read the same). ``joblib`` is set when the stream imports
    a joblib array wrapper, ``mmap_differs`` when joblib's mmap mode would locate
    an array's bytes differently. ``deferred`` holds damage met after a wrapper's
    BUILD in a reading without joblib's semantics (expected in every joblib
    file), for the caller to report or drop.
    """

    start: int
    end: int | None = None
    protocol: int = 0
    opcodes: int = 0  # opcodes fully parsed
    imports: list[ImportedGlobal] = field(default_factory=list)
    truncated: bool = False
    malformed: bool = False
    limited: bool = False
    values: list[PickledValue] | None = None
    frame_anomaly: str | None = None
    joblib: bool = False
    mmap_differs: bool = False
    deferred: list[tuple[str, int, str]] = field(default_factory=list)
    first_extension: int | None = None  # opcodes parsed before the first EXT1/2/4

    @property
    def complete(self) -> bool:
        return self.end is not None

    # A standard interpreter's copyreg registry is empty: pickle.load fails at
    # the first EXT opcode, so bytes that only read on past one are not a pickle
    # to it (random tensor data starts with EXT4 about once in 256 blobs).
    @property
    def standard_opcodes(self) -> int:
        """Opcodes pickle.load gets through in a standard interpreter."""
        return self.opcodes if self.first_extension is None else self.first_extension

    @property
    def standard_complete(self) -> bool:
        """Whether pickle.load reaches STOP in a standard interpreter."""
        return self.complete and self.first_extension is None


class _Sink(Protocol):
    def finding(
        self,
        rule: Rule,
        message: str,
        offset: int | None,
        evidence: str,
        severity: Severity | None = None,
    ) -> None: ...

    def limit(self, what: str, limit: int, offset: int | None) -> None: ...


class ContextSink:
    def __init__(self, ctx: ScanContext, prefix: str = "") -> None:
        self._ctx = ctx
        self._prefix = prefix

    def finding(
        self,
        rule: Rule,
        message: str,
        offset: int | None,
        evidence: str,
        severity: Severity | None = None,
    ) -> None:
        self._ctx.report(
            rule, self._prefix + message, offset=offset, evidence=evidence, severity=severity
        )

    def limit(self, what: str, limit: int, offset: int | None) -> None:
        self._ctx.limit_reached(what, limit, offset=offset)


@dataclass
class RecordingSink:
    """Collects findings so a trial walk can be judged before anything is reported."""

    findings: list[tuple[Rule, str, int | None, str, Severity | None]] = field(default_factory=list)
    limits: list[tuple[str, int, int | None]] = field(default_factory=list)

    def finding(
        self,
        rule: Rule,
        message: str,
        offset: int | None,
        evidence: str,
        severity: Severity | None = None,
    ) -> None:
        self.findings.append((rule, message, offset, evidence, severity))

    def limit(self, what: str, limit: int, offset: int | None) -> None:
        self.limits.append((what, limit, offset))

    def replay(self, ctx: ScanContext, *, rules: frozenset[Rule] | None = None) -> None:
        """Report what was collected (only ``rules`` and no caps, when given)."""
        for rule, message, offset, evidence, severity in self.findings:
            if rules is None or rule in rules:
                ctx.report(rule, message, offset=offset, evidence=evidence, severity=severity)
        if rules is None:
            for what, limit, offset in self.limits:
                ctx.limit_reached(what, limit, offset=offset)


# ---- symbolic constants --------------------------------------------------------------
_MAX_TRACKED_TUPLE = 32  # longer tuples are opaque data
_MAX_KEPT_LONG = 16  # LONG1 bytes kept as an int (torch's 10-byte magic number fits)
_MEMO_SHORT = 64  # memoised strings up to this length are always kept
_MEMO_TEXT_BUDGET = 32 * 1024 * 1024  # characters of longer memoised strings kept
_MAX_NESTED_PICKLES = 8  # joblib object arrays nest a pickle inside the pickle
_MAX_TRACKED_KEYS = 1_000_000  # dict entries the joblib reading follows per stream
# Expansion: a tuple heavier than this becomes a Container (weights stay cheap
# to compute); a structure heavier than both bounds is a bomb (MG108).
_HEAVY_TUPLE = 64
_BOMB_NODES = 1 << 26
_BOMB_RATIO = 1_000  # expanded nodes per opcode parsed
_MAX_WEIGHT = 1 << 62
_EMPTY_CONTAINERS = frozenset({ord("]"), ord("}"), 0x8F})
# Reconstruction helpers of protocols 0-2: their first argument is the class made.
_RECONSTRUCTORS = frozenset(
    {"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"}
)

# Opcodes that push a constant and take a fixed-size argument: opcode -> (size, value).
_FIXED_DATA: dict[int, tuple[int, Value]] = {
    ord("N"): (0, NONE), ord(")"): (0, ()), 0x88: (0, True), 0x89: (0, False),
    ord("G"): (8, DATA),
}  # fmt: skip

_STRING_QUOTES = (b"'", b'"')
_TEXT_BOOLEANS = {b"00": False, b"01": True}
_CALL_OPCODES = frozenset({"REDUCE", "INST", "OBJ"})
# What a walk of bytes no loader necessarily reads (trial walks) may report.
SECURITY_RULES = frozenset({PICKLE_DANGEROUS_IMPORT, PICKLE_UNKNOWN_CALL, PICKLE_UNRESOLVED_CALL})


def _is_dotted_identifier(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


class _Unlocatable(WalkStop):
    """joblib would read array bytes whose place cannot be known statically."""


# ---- the walker ----------------------------------------------------------------------
class Walker:
    # The inline fast path handles the commonest opcodes without a handler call.
    # Tests switch it off to check that both paths reach the same results.
    inline_fast_path = True
    handlers: dict[int, Callable[[Walker, int], bool]]  # the opcode table, set below the class

    def __init__(
        self,
        reader: Reader,
        limits: Limits,
        allow: frozenset[str],
        sink: _Sink,
        start: int,
        nesting: int = 0,
        *,
        values: bool = False,
        reading: Reading = CONTIGUOUS,
        defer_joblib_damage: bool = False,
    ) -> None:
        self.nesting = nesting
        self.r = reader
        self.limits = limits
        self.allow = allow
        self.sink = sink
        self.reading = reading
        self.result = PickleStream(start=start)
        self.stack: list[Value] = []
        self.metastack: list[list[Value]] = []
        self.memo: dict[int, Value] = {}
        self.frame_end = _NO_FRAME  # end of the current frame (contiguous reading)
        self._imports: dict[tuple[str, str], ImportedGlobal] = {}
        self._parsed = 0  # opcodes fully parsed so far
        self._memo_text = 0  # characters of long strings kept in the memo
        self._tracked_keys = 0
        self._defer = defer_joblib_damage
        self.opcodes_what = "pickle opcodes"  # what the opcode cap is called when reached
        self._wrapper_built = False  # a joblib wrapper got its BUILD (no joblib reading)
        self._bomb_reported = False
        # Recording values goes through push(), which the fast path bypasses; so
        # do the other framings and joblib's bookkeeping.
        self._values: list[PickledValue] | None = [] if values else None
        self._value_chars = 0
        self._fast = self.inline_fast_path and not values and reading == CONTIGUOUS

    # -- driver ------------------------------------------------------------------------
    def run(self) -> PickleStream:
        result = self.result
        try:
            self._loop()
        except Truncated as stop:
            result.truncated = True
            self.damage(f"pickle truncated: {stop.message}", stop.offset, "truncated")
        except Malformed as stop:
            result.malformed = True
            self.damage(f"malformed pickle: {stop.message}", stop.offset, stop.message)
        except CapReached as stop:
            result.limited = True
            self.sink.limit(stop.message, stop.limit, stop.offset)
        except (AlreadyReported, _Unlocatable):
            result.malformed = True
        self._report_unknown_imports()
        return result

    def damage(self, message: str, offset: int, evidence: str) -> None:
        if self._defer and self._wrapper_built:
            # pickle.load of a joblib file reads array bytes as opcodes and fails:
            # expected; the joblib reading says whether the file is really damaged.
            self.result.deferred.append((message, offset, evidence))
            return
        self.sink.finding(PICKLE_MALFORMED, message, offset, evidence)

    def report(self, rule: Rule, message: str, offset: int | None, evidence: str) -> None:
        if self._defer and self._wrapper_built and rule is not PICKLE_DANGEROUS_IMPORT:
            # What pickle.load makes of a joblib file's array bytes: listed, but
            # low: the same bytes in every joblib file with an object array read
            # as garbage calls. Globals the denylist names keep their severity.
            self.sink.finding(
                rule,
                f"read by pickle.load past a joblib array (joblib reads data here): {message}",
                offset,
                evidence,
                Severity.LOW,
            )
            return
        self.sink.finding(rule, message, offset, evidence)

    def _loop(self) -> None:
        try:
            if self._fast:
                self._fast_loop()
            else:
                self._handler_loop()
        finally:
            self.result.opcodes = self._parsed
            self.result.values = self._values

    def _handler_loop(self) -> None:
        # Every opcode through its handler: the reference the fast path must match.
        r = self.r
        handlers = self.handlers
        max_ops = self.limits.max_pickle_opcodes
        count = 0
        while True:
            offset = r.tell()
            op = r.opcode()
            if offset >= self.frame_end:
                self.left_frame(offset)
            count += 1
            if count > max_ops:
                raise CapReached(self.opcodes_what, max_ops, offset)
            handler = handlers.get(op)
            if handler is None:
                raise Malformed(f"invalid opcode 0x{op:02x} at offset {offset}", offset)
            done = handler(self, offset)
            self._parsed = count
            if done:
                return

    def _fast_loop(self) -> None:
        # The hot loop: the commonest opcodes (numbers, short strings, memo, MARK,
        # container building) are handled inline on the read buffer; everything
        # else, and anything that crosses the buffer's end, goes to a handler
        # through the reader. Dense pickles spend most of their time here.
        r = self.r
        handlers = self.handlers
        memo = self.memo
        metastack = self.metastack
        max_ops = self.limits.max_pickle_opcodes
        max_depth = self.limits.max_stack_depth
        max_memo = self.limits.max_memo_entries
        fixed_data = _FIXED_DATA
        empty_containers = _EMPTY_CONTAINERS
        from_bytes = int.from_bytes
        stack = self.stack
        buf = r.buf
        pos = r.pos
        base = r.base
        buflen = len(buf)
        frame_end = self.frame_end
        count = 0
        while True:
            if pos < buflen:
                offset = base + pos
                op = buf[pos]
                pos += 1
            else:
                r.pos = pos
                offset = r.tell()
                op = r.opcode()
                buf = r.buf
                pos = r.pos
                base = r.base
                buflen = len(buf)
            if offset >= frame_end:
                self.left_frame(offset)
                frame_end = self.frame_end
            count += 1
            if count > max_ops:
                raise CapReached(self.opcodes_what, max_ops, offset)
            fixed = fixed_data.get(op)
            if fixed is not None and pos + fixed[0] <= buflen:
                pos += fixed[0]
                stack.append(fixed[1])
                if len(stack) > max_depth:
                    raise CapReached("pickle stack depth", max_depth, offset)
                self._parsed = count
                continue
            if op == 0x4B and pos < buflen:  # BININT1
                stack.append(buf[pos])
                pos += 1
                if len(stack) > max_depth:
                    raise CapReached("pickle stack depth", max_depth, offset)
                self._parsed = count
                continue
            if op == 0x4A and pos + 4 <= buflen:  # BININT
                stack.append(from_bytes(buf[pos : pos + 4], "little", signed=True))
                pos += 4
                if len(stack) > max_depth:
                    raise CapReached("pickle stack depth", max_depth, offset)
                self._parsed = count
                continue
            if op == 0x4D and pos + 2 <= buflen:  # BININT2
                stack.append(buf[pos] | buf[pos + 1] << 8)
                pos += 2
                if len(stack) > max_depth:
                    raise CapReached("pickle stack depth", max_depth, offset)
                self._parsed = count
                continue
            if op == 0x94 and stack:  # MEMOIZE
                if len(memo) >= max_memo:
                    raise CapReached("pickle memo entries", max_memo, offset)
                value = stack[-1]
                memo[len(memo)] = value if type(value) is not str else self.memo_text(value)
                self._parsed = count
                continue
            if op == 0x58 and pos + 4 <= buflen:  # BINUNICODE
                n = from_bytes(buf[pos : pos + 4], "little")
                if n <= KEEP_STRING and pos + 4 + n <= buflen:
                    try:
                        stack.append(buf[pos + 4 : pos + 4 + n].decode("utf-8", "surrogatepass"))
                    except UnicodeDecodeError:
                        raise Malformed(
                            f"BINUNICODE at offset {offset} is not valid UTF-8", offset
                        ) from None
                    pos += 4 + n
                    if len(stack) > max_depth:
                        raise CapReached("pickle stack depth", max_depth, offset)
                    self._parsed = count
                    continue
            if 0x85 <= op <= 0x87 and len(stack) >= op - 0x84:  # TUPLE1, TUPLE2, TUPLE3
                n = op - 0x84
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(self.new_tuple(items, offset))
                self._parsed = count
                continue
            if op in empty_containers:  # EMPTY_LIST, EMPTY_DICT, EMPTY_SET
                stack.append(Container())
                if len(stack) > max_depth:
                    raise CapReached("pickle stack depth", max_depth, offset)
                self._parsed = count
                continue
            if op == 0x8C and pos < buflen and pos + 1 + buf[pos] <= buflen:  # SHORT_BINUNICODE
                n = buf[pos]
                try:
                    stack.append(buf[pos + 1 : pos + 1 + n].decode("utf-8", "surrogatepass"))
                except UnicodeDecodeError:
                    raise Malformed(
                        f"SHORT_BINUNICODE at offset {offset} is not valid UTF-8", offset
                    ) from None
                pos += 1 + n
                if len(stack) > max_depth:
                    raise CapReached("pickle stack depth", max_depth, offset)
                self._parsed = count
                continue
            if op == 0x28:  # MARK
                metastack.append(stack)
                stack = self.stack = []
                if len(metastack) > max_depth:
                    raise CapReached("pickle MARK nesting", max_depth, offset)
                self._parsed = count
                continue
            if (op == 0x65 or op == 0x75) and metastack and metastack[-1]:  # APPENDS, SETITEMS
                added = stack
                stack = self.stack = metastack.pop()
                target = stack[-1]
                if type(target) is Container:
                    self.grow(target, added, offset)
                self._parsed = count
                continue
            if op == 0x71 and pos < buflen and stack:  # BINPUT
                index = buf[pos]
                if index not in memo and len(memo) >= max_memo:
                    raise CapReached("pickle memo entries", max_memo, offset)
                value = stack[-1]
                memo[index] = value if type(value) is not str else self.memo_text(value)
                pos += 1
                self._parsed = count
                continue
            if op == 0x72 and pos + 4 <= buflen and stack:  # LONG_BINPUT
                index = from_bytes(buf[pos : pos + 4], "little")
                if index not in memo and len(memo) >= max_memo:
                    raise CapReached("pickle memo entries", max_memo, offset)
                value = stack[-1]
                memo[index] = value if type(value) is not str else self.memo_text(value)
                pos += 4
                self._parsed = count
                continue
            if op == 0x6A and pos + 4 <= buflen:  # LONG_BINGET
                index = from_bytes(buf[pos : pos + 4], "little")
                if index in memo:
                    stack.append(memo[index])
                    pos += 4
                    if len(stack) > max_depth:
                        raise CapReached("pickle stack depth", max_depth, offset)
                    self._parsed = count
                    continue
            if op == 0x68 and pos < buflen and buf[pos] in memo:  # BINGET
                stack.append(memo[buf[pos]])
                pos += 1
                if len(stack) > max_depth:
                    raise CapReached("pickle stack depth", max_depth, offset)
                self._parsed = count
                continue
            if op == 0x73 and len(stack) >= 3:  # SETITEM
                target = stack[-3]
                if type(target) is Container:
                    self.grow(target, stack[-2:], offset)
                del stack[-2:]
                self._parsed = count
                continue
            if op == 0x61 and len(stack) >= 2:  # APPEND
                target = stack[-2]
                if type(target) is Container:
                    item = stack[-1]
                    if type(item) is Container:
                        self.grow(target, (item,), offset)
                    else:
                        target.weight += 1
                del stack[-1]
                self._parsed = count
                continue
            if op == 0x30 and stack:  # POP
                del stack[-1]
                self._parsed = count
                continue
            handler = handlers.get(op)
            if handler is None:
                raise Malformed(f"invalid opcode 0x{op:02x} at offset {offset}", offset)
            r.pos = pos
            self.stack = stack
            done = handler(self, offset)
            self._parsed = count
            if done:
                return
            buf = r.buf
            pos = r.pos
            base = r.base
            buflen = len(buf)
            stack = self.stack
            frame_end = self.frame_end

    def _report_unknown_imports(self) -> None:
        called = {g.dotted for g in self.result.imports if g.called}
        for ref in self.result.imports:
            if ref.verdict is Verdict.UNKNOWN and ref.dotted not in called:
                self._report_unknown(ref)

    def _report_unknown(self, ref: ImportedGlobal) -> None:
        self.report(
            PICKLE_UNKNOWN_IMPORT,
            f"pickle imports {ref.dotted} ({ref.classification.reason}) via {ref.opcode}",
            ref.offset,
            ref.dotted,
        )

    # -- frames (the contiguous reading notes where other framings part) ------------------
    def left_frame(self, offset: int) -> None:
        """The first opcode at or after the current frame's end starts at ``offset``."""
        if offset > self.frame_end:
            self.anomaly(f"an opcode runs past the end of the frame that ends at {self.frame_end}")
        self.frame_end = _NO_FRAME

    def anomaly(self, why: str) -> None:
        if self.result.frame_anomaly is None:
            self.result.frame_anomaly = why

    # -- stack -------------------------------------------------------------------------
    def push(self, value: Value, offset: int) -> None:
        stack = self.stack
        stack.append(value)
        if len(stack) > self.limits.max_stack_depth:
            raise CapReached("pickle stack depth", self.limits.max_stack_depth, offset)
        if self._values is not None:
            self.record(value)

    def record(self, value: Value) -> None:
        """Add a pushed string, int or global to the values, within their bounds."""
        values = self._values
        assert values is not None
        if isinstance(value, Global):
            value = GlobalName(f"{value.ref.module}.{value.ref.name}")
        elif not isinstance(value, (str, int)) or isinstance(value, bool):
            return
        if isinstance(value, str):
            self._value_chars += len(value)
        if len(values) >= MAX_VALUES or self._value_chars > MAX_VALUE_CHARS:
            self._values = None  # too many to be worth reading back: none at all
            return
        values.append(value)

    def pop(self, offset: int) -> Value:
        if not self.stack:
            raise Malformed(f"stack underflow at offset {offset}", offset)
        return self.stack.pop()

    def top(self, offset: int) -> Value:
        if not self.stack:
            raise Malformed(f"stack underflow at offset {offset}", offset)
        return self.stack[-1]

    def mark(self, offset: int) -> bool:
        self.metastack.append(self.stack)
        self.stack = []
        if len(self.metastack) > self.limits.max_stack_depth:
            raise CapReached("pickle MARK nesting", self.limits.max_stack_depth, offset)
        return False

    def pop_mark(self, offset: int) -> list[Value]:
        if not self.metastack:
            raise Malformed(f"no MARK to pop at offset {offset} (stack underflow)", offset)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # -- arguments ---------------------------------------------------------------------
    def u1(self, offset: int) -> int:
        return self.r.read(1, offset)[0]

    def uint(self, size: int, offset: int) -> int:
        return int.from_bytes(self.r.read(size, offset), "little")

    def sint4(self, offset: int) -> int:
        return int.from_bytes(self.r.read(4, offset), "little", signed=True)

    def blob(self, length: int, offset: int, kind: str, *, into: bool = False) -> bytes | None:
        """A length-prefixed argument: the bytes if short, else skipped (None).

        ``into``: the byte-string opcodes, which C reads straight into the
        object (``_Unpickler_ReadInto``), taking a frame's rest before the file.
        """
        if length < 0:
            raise Malformed(f"negative length {length} at offset {offset}", offset)
        remaining = self.r.remaining_into() if into else self.r.remaining()
        if length > remaining:
            raise Truncated(
                f"{kind} at offset {offset} declares {length:,} bytes but only "
                f"{remaining:,} remain",
                offset,
            )
        if length > self.limits.max_pickle_string:
            raise CapReached("pickle string length", self.limits.max_pickle_string, offset)
        if into:
            if length <= KEEP_STRING:
                return self.r.read_into(length, offset)
            self.r.skip_into(length, offset)
            return None
        if length <= KEEP_STRING:
            return self.r.read(length, offset)
        self.r.skip(length, offset)
        return None

    def text_line(self, offset: int) -> bytes | None:
        return self.r.line(KEEP_STRING, self.limits.max_pickle_string, offset)

    def int_line(self, offset: int) -> int:
        line = self.text_line(offset)
        if line is None:
            raise Malformed(f"integer argument too long at offset {offset}", offset)
        try:
            return int(line)
        except ValueError:
            raise Malformed(f"invalid integer argument at offset {offset}", offset) from None

    def push_int(self, raw: bytes, offset: int, *, signed: bool) -> bool:
        self.push(int.from_bytes(raw, "little", signed=signed), offset)
        return False

    def push_unicode(self, length: int, offset: int, kind: str) -> bool:
        data = self.blob(length, offset, kind)
        if data is None:
            self.push(DATA, offset)
            return False
        try:
            text = data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise Malformed(f"{kind} at offset {offset} is not valid UTF-8", offset) from None
        self.push(text, offset)
        return False

    def push_bytes(self, length: int, offset: int, kind: str, *, into: bool = False) -> bool:
        # Byte strings are kept as text too: py2 STRING opcodes load as str, and
        # treating bytes the same only ever adds findings.
        data = self.blob(length, offset, kind, into=into)
        self.push(DATA if data is None else data.decode("latin-1"), offset)
        return False

    # -- imports and calls ---------------------------------------------------------------
    def import_global(self, module: str, name: str, offset: int, opcode: str) -> Global:
        key = (module, name)
        ref = self._imports.get(key)
        if ref is not None:
            return Global(ref)
        classification = classify(module, name, self.allow)
        ref = ImportedGlobal(module, name, classification, offset, opcode)
        if len(self._imports) < _MAX_IMPORTS:
            self._imports[key] = ref
            self.result.imports.append(ref)
        elif classification.verdict is Verdict.UNKNOWN:
            self._report_unknown(ref)  # not remembered, so not reported at the end
        if not (_is_dotted_identifier(module) and _is_dotted_identifier(name)):
            raise Malformed(
                f"{opcode} at offset {offset} names {module!r}.{name!r}, not a Python identifier",
                offset,
            )
        if classification.verdict is Verdict.DANGEROUS:
            self.report(
                PICKLE_DANGEROUS_IMPORT,
                f"pickle imports {classification.dotted} via {opcode}: {classification.reason}",
                offset,
                classification.dotted,
            )
        if wrapper_name(ref) is not None:
            self.result.joblib = True
        return Global(ref)

    def global_lines(self, offset: int, opcode: str) -> Value:
        module_raw = self.text_line(offset)
        name_raw = self.text_line(offset)
        if module_raw is None or name_raw is None:
            self.report(
                PICKLE_UNRESOLVED_CALL,
                f"{opcode} at offset {offset} names a global longer than {KEEP_STRING} bytes",
                offset,
                f"{opcode}:long-name",
            )
            return Unresolved("name too long")
        try:
            module = module_raw.decode("utf-8")
            name = name_raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"{opcode} at offset {offset} is not valid UTF-8", offset) from None
        return self.import_global(module, name, offset, opcode)

    def mark_called(self, ref: ImportedGlobal, offset: int, opcode: str) -> None:
        """``ref`` is called with arguments the stream chose."""
        ref.called = True
        if ref.verdict is Verdict.UNKNOWN:
            self.report(
                PICKLE_UNKNOWN_CALL,
                f"pickle calls {ref.dotted} with stream-chosen arguments via {opcode} "
                f"({ref.classification.reason})",
                offset,
                ref.dotted,
            )

    def called_argument(self, ref: ImportedGlobal, args: Value, offset: int, opcode: str) -> None:
        """A safe callable that calls one of its arguments: that one is called too."""
        index = CALLS_AN_ARGUMENT.get(ref.dotted)
        if index is None or not isinstance(args, tuple) or len(args) <= index:
            return
        target = args[index]
        if isinstance(target, Global):
            self.mark_called(target.ref, offset, f"{opcode} through {ref.dotted}")
        elif not isinstance(target, (str, int, Data)):
            self.report(
                PICKLE_UNRESOLVED_CALL,
                f"{ref.dotted} at offset {offset} calls an argument that is not an imported global",
                offset,
                f"call-of-argument:{ref.dotted}",
            )

    def call(self, callee: Value, offset: int, opcode: str, args: Value = DATA) -> None:
        """Push what calling (or instantiating) ``callee`` with ``args`` gives."""
        if isinstance(callee, Global):
            ref = callee.ref
            first = args[0] if isinstance(args, tuple) and args else None
            if ref.dotted == "numpy.dtype" and isinstance(first, str):
                self.push(Dtype(first), offset)
                return
            if ref.dotted in _RECONSTRUCTORS and isinstance(first, Global):
                # copyreg makes an instance of its first argument; _reconstructor
                # also runs a base class's __init__ with the stream's state.
                base = args[1] if isinstance(args, tuple) and len(args) > 1 else None
                if isinstance(base, Global) and base.ref.dotted != "builtins.object":
                    self.mark_called(base.ref, offset, opcode)
                self.push(self.instance(first.ref, None, offset), offset)
                return
            if opcode in _CALL_OPCODES:
                self.mark_called(ref, offset, opcode)
                self.called_argument(ref, args, offset, opcode)
            init = args if opcode in _CALL_OPCODES else None
            self.push(self.instance(ref, init, offset), offset)
            return
        if isinstance(callee, Called):
            what = callee.callee.dotted if callee.callee is not None else "an unresolved call"
            self.report(
                PICKLE_UNRESOLVED_CALL,
                f"{opcode} at offset {offset} calls the result of calling {what}",
                offset,
                f"call-of-result:{what}",
            )
        elif isinstance(callee, Extension):
            self.report(
                PICKLE_EXTENSION_CODE,
                f"{opcode} at offset {offset} calls what extension code {callee.code} "
                "names (nothing, in a standard interpreter)",
                offset,
                f"call-of-extension:{callee.code}",
            )
        elif isinstance(callee, Unresolved):
            self.report(
                PICKLE_UNRESOLVED_CALL,
                f"{opcode} at offset {offset} calls a callable that cannot be resolved "
                f"({callee.why})",
                offset,
                f"call-of-unresolved:{callee.why}",
            )
        else:
            self.report(
                PICKLE_UNRESOLVED_CALL,
                f"{opcode} at offset {offset} calls a value that is not an imported global",
                offset,
                "call-of-data",
            )
        self.push(Called(None), offset)

    def instance(self, cls: ImportedGlobal, init: Value | None, offset: int) -> Value:
        """The object made from class ``cls`` (``init``: the args its __init__ gets).

        Only the joblib reading follows instances, of joblib's wrappers; every
        other result is a plain ``Called``.
        """
        if not self.reading.joblib or wrapper_name(cls) is None:
            return Called(cls)
        if init is None or init == ():
            return Instance(cls, {})
        if wrapper_name(cls) != WRAPPER:
            return Instance(cls, None)  # an old wrapper's __init__: state unknown
        try:
            return Instance(cls, init_attrs(init))
        except CannotLoad as exc:
            raise Malformed(f"joblib.load fails at offset {offset}: {exc}", offset) from None

    # -- opcode handlers (return True at STOP): see _HANDLERS below ---------------------------

    def op_stop(self, offset: int) -> bool:
        self.pop(offset)
        end = self.r.tell()
        if end < self.frame_end != _NO_FRAME:
            # The next pickle.load of the same file starts here; a framed reader
            # has already taken the rest of the frame from the file.
            self.anomaly(f"STOP at offset {offset} leaves bytes of its frame unread")
        self.result.end = end
        return True

    def op_proto(self, offset: int) -> bool:
        version = self.u1(offset)
        if version > HIGHEST_PROTOCOL:
            raise Malformed(f"unsupported pickle protocol {version} at offset {offset}", offset)
        self.result.protocol = version
        return False

    def op_frame(self, offset: int) -> bool:
        # Loaders disagree on frames; this reading's reader applies its own rules.
        length = self.uint(8, offset)
        if self.reading.framing is Framing.CONTIGUOUS:
            if self.frame_end != _NO_FRAME:
                self.anomaly(f"FRAME at offset {offset} begins inside the current frame")
            if length > self.r.remaining():
                self.anomaly(f"FRAME at offset {offset} declares more bytes than remain")
            self.r.frame(length, offset)
            self.frame_end = self.r.tell() + length
            return False
        self.r.frame(length, offset)
        return False

    def op_pop(self, offset: int) -> bool:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark(offset)
        return False

    def op_pop_mark(self, offset: int) -> bool:
        self.pop_mark(offset)
        return False

    def op_dup(self, offset: int) -> bool:
        self.push(self.top(offset), offset)
        return False

    def op_binpersid(self, offset: int) -> bool:
        self.pop(offset)
        self.push(DATA, offset)
        return False

    def op_string(self, offset: int) -> bool:
        line = self.text_line(offset)
        if line is None:
            self.push(DATA, offset)
            return False
        if len(line) < 2 or line[:1] != line[-1:] or line[:1] not in _STRING_QUOTES:
            raise Malformed(f"STRING at offset {offset} is not quoted", offset)
        try:
            raw = codecs.escape_decode(line[1:-1])[0]
        except ValueError:
            raise Malformed(f"STRING at offset {offset} has a bad escape", offset) from None
        self.push(raw.decode("latin-1"), offset)
        return False

    def op_unicode(self, offset: int) -> bool:
        line = self.text_line(offset)
        if line is None:
            self.push(DATA, offset)
            return False
        try:
            text = line.decode("raw-unicode-escape")
        except UnicodeDecodeError:
            raise Malformed(f"UNICODE at offset {offset} has a bad escape", offset) from None
        self.push(text, offset)
        return False

    def op_long(self, length: int, offset: int, kind: str) -> bool:
        data = self.blob(length, offset, kind)
        if data is not None and len(data) <= _MAX_KEPT_LONG:
            self.push(int.from_bytes(data, "little", signed=True), offset)
        else:
            self.push(DATA, offset)
        return False

    def op_long_text(self, offset: int) -> bool:
        line = self.text_line(offset)
        if line is None:
            self.push(DATA, offset)
            return False
        _check_long(line, offset)
        digits = line[:-1] if line.endswith(b"L") else line
        self.push(int(digits) if len(digits) <= _MAX_KEPT_LONG * 3 else DATA, offset)
        return False

    def op_int(self, offset: int) -> bool:
        line = self.text_line(offset)
        if line is None:
            self.push(DATA, offset)
            return False
        _check_int(line, offset)
        # Protocol 0 spells the booleans as INT 00 and 01.
        boolean = _TEXT_BOOLEANS.get(line)
        self.push(int(line) if boolean is None else boolean, offset)
        return False

    def op_append(self, offset: int) -> bool:
        item = self.pop(offset)
        self.extend(self.top(offset), [item], offset)
        return False

    def op_appends(self, offset: int) -> bool:  # APPENDS, ADDITEMS
        items = self.pop_mark(offset)
        self.extend(self.top(offset), items, offset)
        return False

    op_additems = op_appends

    def extend(self, target: Value, items: list[Value], offset: int) -> None:
        if isinstance(target, Dict):
            target.exact = False  # a dict has no append: its content is unknown now
        elif type(target) is Container:
            self.grow(target, items, offset)

    # -- expansion -----------------------------------------------------------------------
    def weight(self, value: Value) -> int:
        """Nodes ``value`` expands to (tuples are small: heavier ones are Containers)."""
        if type(value) is Container:
            return value.weight
        if type(value) is tuple:
            return 1 + sum(self.weight(item) for item in value)
        return 1

    def grow(self, target: Container, items: Sequence[Value], offset: int) -> None:
        """``items`` are added to ``target``: its weight grows by theirs.

        Small tuples among them count as one node: that undercounts by at most
        ``_HEAVY_TUPLE`` once, and keeps this cheap for the common case.
        """
        weight = target.weight + len(items)
        if Container in map(type, items):
            weight += sum(item.weight - 1 for item in items if type(item) is Container)
        target.weight = weight if weight < _MAX_WEIGHT else _MAX_WEIGHT
        if weight > _BOMB_NODES:
            self.weigh(target, weight, offset)

    def weigh(self, target: Container, weight: int, offset: int) -> None:
        target.weight = min(weight, _MAX_WEIGHT)
        if weight > _BOMB_NODES and weight > _BOMB_RATIO * max(1, self._parsed):
            self.expansion_bomb(weight, offset)

    def expansion_bomb(self, weight: int, offset: int) -> None:
        if self._bomb_reported:
            return
        self._bomb_reported = True
        size = f"{weight:,}" if weight < _MAX_WEIGHT else f"more than {_MAX_WEIGHT:,}"
        self.report(
            PICKLE_EXPANSION_BOMB,
            f"at offset {offset} the pickle has built, from {self._parsed:,} opcodes, a "
            f"structure that expands to {size} nodes through shared references "
            "(a billion-laughs pattern)",
            offset,
            "expansion-bomb",
        )

    def new_tuple(self, items: tuple[Value, ...], offset: int) -> Value:
        kinds = set(map(type, items))
        if Container not in kinds and tuple not in kinds:
            return items
        weight = 1 + sum(map(self.weight, items))
        if weight <= _HEAVY_TUPLE:
            return items
        made = Container()
        self.weigh(made, weight, offset)
        return made

    def op_empty_container(self, offset: int) -> bool:
        self.push(Container(), offset)
        return False

    @staticmethod
    def not_a_dict(target: Value) -> None:
        if isinstance(target, Dict):
            target.exact = False  # a dict has no append: its content is unknown now

    def op_setitems(self, offset: int) -> bool:
        items = self.pop_mark(offset)
        target = self.top(offset)
        if isinstance(target, Dict):
            for key, value in zip(items[::2], items[1::2], strict=False):
                self.dict_set(target, key, value)
        elif type(target) is Container:
            self.grow(target, items, offset)
        return False

    def op_setitem(self, offset: int) -> bool:
        value = self.pop(offset)
        key = self.pop(offset)
        target = self.top(offset)
        if isinstance(target, Dict):
            self.dict_set(target, key, value)
        elif type(target) is Container:
            self.grow(target, [key, value], offset)
        return False

    def dict_set(self, target: Dict, key: Value, value: Value) -> None:
        self._tracked_keys += 1
        target.set(key, value, MAX_DICT_KEYS)

    def new_dict(self) -> Value:
        if not self.reading.joblib:
            return Container()
        return Dict(exact=self._tracked_keys < _MAX_TRACKED_KEYS)

    def op_empty_dict(self, offset: int) -> bool:
        self.push(self.new_dict(), offset)
        return False

    def op_dict(self, offset: int) -> bool:
        items = self.pop_mark(offset)
        made = self.new_dict()
        if isinstance(made, Dict):
            for key, value in zip(items[::2], items[1::2], strict=False):
                self.dict_set(made, key, value)
        elif isinstance(made, Container):
            self.grow(made, items, offset)
        self.push(made, offset)
        return False

    def op_tuple(self, offset: int) -> bool:
        items = self.pop_mark(offset)
        if len(items) <= _MAX_TRACKED_TUPLE:
            self.push(self.new_tuple(tuple(items), offset), offset)
        else:
            made = Container()
            self.grow(made, items, offset)
            self.push(made, offset)
        return False

    def op_collect(self, offset: int) -> bool:  # LIST, FROZENSET
        items = self.pop_mark(offset)
        made = Container()
        self.grow(made, items, offset)
        self.push(made, offset)
        return False

    def op_tuple_n(self, n: int, offset: int) -> bool:
        items = [self.pop(offset) for _ in range(n)]
        self.push(self.new_tuple(tuple(reversed(items)), offset), offset)
        return False

    def op_get(self, index: int, offset: int) -> bool:
        value = self.memo.get(index)
        if value is None:
            raise Malformed(
                f"memo key {index} read before it was written (offset {offset})", offset
            )
        self.push(value, offset)
        return False

    def op_put(self, index: int, offset: int) -> bool:
        if index < 0:
            raise Malformed(f"negative memo key at offset {offset}", offset)
        if index not in self.memo and len(self.memo) >= self.limits.max_memo_entries:
            raise CapReached("pickle memo entries", self.limits.max_memo_entries, offset)
        value = self.top(offset)
        self.memo[index] = self.memo_text(value) if isinstance(value, str) else value
        return False

    def memo_text(self, text: str) -> Value:
        """A string to keep in the memo, within a total budget for memoised text.

        A pickle can memoise millions of strings; past the budget long ones are
        remembered as opaque data (if one is later fetched for STACK_GLOBAL, that
        global is reported as unresolved rather than guessed).
        """
        if len(text) <= _MEMO_SHORT:
            return text
        self._memo_text += len(text)
        return text if self._memo_text <= _MEMO_TEXT_BUDGET else DATA

    def op_memoize(self, offset: int) -> bool:
        return self.op_put(len(self.memo), offset)

    def op_readonly_buffer(self, offset: int) -> bool:
        self.top(offset)
        return False

    def op_global(self, offset: int) -> bool:
        self.push(self.global_lines(offset, "GLOBAL"), offset)
        return False

    def op_stack_global(self, offset: int) -> bool:
        name = self.pop(offset)
        module = self.pop(offset)
        if isinstance(module, str) and isinstance(name, str):
            self.push(self.import_global(module, name, offset, "STACK_GLOBAL"), offset)
            return False
        why = "STACK_GLOBAL operands are not plain strings"
        self.report(
            PICKLE_UNRESOLVED_CALL,
            f"STACK_GLOBAL at offset {offset} imports a global whose module or name is "
            f"computed or too long to resolve ({_describe(module)}, {_describe(name)})",
            offset,
            "STACK_GLOBAL:unresolved",
        )
        self.push(Unresolved(why), offset)
        return False

    def op_ext(self, code: int, offset: int, kind: str) -> bool:
        # pickle.load raises here in a standard interpreter (the registry is
        # empty), so what follows cannot run: low, and not a call of anything.
        if self.result.first_extension is None:
            self.result.first_extension = self._parsed
        self.report(
            PICKLE_EXTENSION_CODE,
            f"{kind} at offset {offset} looks up extension code {code} in copyreg's "
            "registry, which is empty unless the loading process registered codes",
            offset,
            f"{kind}:{code}",
        )
        self.push(Extension(code), offset)
        return False

    def op_reduce(self, offset: int) -> bool:
        args = self.pop(offset)
        self.call(self.pop(offset), offset, "REDUCE", args)
        return False

    def op_inst(self, offset: int) -> bool:
        callee = self.global_lines(offset, "INST")
        items = self.pop_mark(offset)
        self.call(callee, offset, "INST", _arguments(items))
        return False

    def op_obj(self, offset: int) -> bool:
        items = self.pop_mark(offset)
        if not items:
            raise Malformed(f"OBJ at offset {offset} has no class (stack underflow)", offset)
        self.call(items[0], offset, "OBJ", _arguments(items[1:]))
        return False

    def op_newobj(self, offset: int) -> bool:
        self.pop(offset)
        self.call(self.pop(offset), offset, "NEWOBJ")
        return False

    def op_newobj_ex(self, offset: int) -> bool:
        self.pop(offset)
        self.pop(offset)
        self.call(self.pop(offset), offset, "NEWOBJ_EX")
        return False

    def op_build(self, offset: int) -> bool:
        state = self.pop(offset)
        target = self.top(offset)
        if isinstance(target, Instance):
            self.build_instance(target, state, offset)
            return False
        if isinstance(target, Dtype):
            target.state = state
            return False
        if built_wrapper(target):
            self._wrapper_built = True
        if isinstance(target, Global):
            # BUILD on a class or function (not an instance) sets attributes on
            # it: a way to swap an allowlisted callable for an arbitrary one.
            self.report(
                PICKLE_UNRESOLVED_CALL,
                f"BUILD at offset {offset} sets attributes on the imported global "
                f"{target.ref.dotted} itself, changing what later uses of it call",
                offset,
                f"BUILD:{target.ref.dotted}",
            )
        return False

    # -- joblib ------------------------------------------------------------------------
    def build_instance(self, inst: Instance, state: Value, offset: int) -> None:
        """joblib's ``load_build``: the normal BUILD, then read the wrapper's array."""
        setstate = inst.attrs.get("__setstate__")
        if setstate is not None:
            # An earlier BUILD put __setstate__ in the instance dict: BUILD calls it.
            self.call(setstate, offset, "BUILD", (state,))
            self.stack.pop()
        else:
            apply_state(inst, state)
        self.read_array(inst, offset)
        self.stack[-1] = DATA  # the wrapper on the stack is replaced by its array

    def read_array(self, inst: Instance, offset: int) -> None:
        """Step over the bytes joblib reads for ``inst`` (NumpyArrayWrapper.read)."""
        if wrapper_name(inst.cls) != WRAPPER:
            return  # old wrappers read companion files, nothing from the stream
        if not inst.exact:
            self.unlocatable(offset, "its state is built in a way the scanner cannot follow")
        attrs = inst.attrs
        if "shape" not in attrs or "dtype" not in attrs:
            raise Malformed(
                f"joblib.load fails at offset {offset}: wrapper lacks shape/dtype", offset
            )
        shape = attrs["shape"]
        facts = dtype_facts(attrs["dtype"])
        if not isinstance(shape, tuple) or facts is None:
            self.unlocatable(offset, "its shape or dtype is not known statically")
        assert isinstance(shape, tuple) and facts is not None
        try:
            count, product = element_count(shape)
        except ValueError:
            self.unlocatable(offset, "its shape is not known statically")
        except CannotLoad as exc:
            raise Malformed(f"joblib.load fails at offset {offset}: {exc}", offset) from None
        subclass = attrs.get("subclass")
        if isinstance(subclass, Global) and subclass.ref.dotted not in ARRAY_SUBCLASSES:
            # numpy < 2 re-wraps the array: the subclass's methods run on it.
            self.mark_called(subclass.ref, offset, "joblib array subclass")
        padded = attrs.get("numpy_array_alignment_bytes", NONE) is not NONE
        allow_mmap = truthy(attrs.get("allow_mmap", False))
        if allow_mmap is not False and (facts.holds_objects or count != product):
            self.result.mmap_differs = True
        r = self.r
        if self.reading.mmap and allow_mmap is not False:
            if "order" not in attrs:
                raise Malformed(
                    f"joblib.load fails at offset {offset}: wrapper has no order", offset
                )
            pad = r.file_read(1, offset)[0] if padded and r.file_reader().remaining() else 0
            nbytes = product * facts.itemsize
            if product < 0 or nbytes < 0 or nbytes + pad > r.file_reader().remaining():
                raise Malformed(
                    f"joblib.load fails at offset {offset}: cannot map the array", offset
                )
            self.forged(facts, offset, "maps")
            r.file_skip(pad + nbytes, offset)
            return
        if facts.hasobject:
            self.walk_nested(offset)
            return
        if padded and r.file_reader().remaining():
            pad = r.file_read(1, offset)[0]
            if pad:
                r.file_skip(pad, offset)
        if count < 0 or facts.itemsize <= 0:
            raise Malformed(
                f"joblib.load fails at offset {offset}: no array of {count} items of "
                f"{facts.itemsize} bytes",
                offset,
            )
        r.file_skip(count * facts.itemsize, offset)
        if product != count or "order" not in attrs:
            # The reshape after the read fails: nothing after it is read.
            raise Malformed(
                f"joblib.load fails at offset {offset}: the array cannot be shaped "
                "(its shape overflows int64 or the wrapper has no order)",
                offset,
            )
        self.forged(facts, offset, "reads")

    def forged(self, facts: DtypeFacts, offset: int, how: str) -> None:
        if facts.holds_objects:
            self.report(
                PICKLE_FORGED_OBJECT_ARRAY,
                f"joblib array wrapper at offset {offset} has a dtype that holds Python "
                f"objects{' but whose flags deny it' if not facts.hasobject else ''}: "
                f"joblib.load {how} raw file bytes as object pointers",
                offset,
                "joblib-raw-object-array",
            )

    def unlocatable(self, offset: int, why: str) -> None:
        self.report(
            PICKLE_UNRESOLVED_CALL,
            f"joblib array wrapper at offset {offset}: {why}, so the array bytes joblib.load "
            "reads after it cannot be located (what follows may be read as code)",
            offset,
            "joblib-wrapper-unresolved",
        )
        raise _Unlocatable(why, offset)

    def walk_nested(self, offset: int) -> None:
        """An object array's data: a pickle joblib reads with a fresh pure-Python unpickler."""
        if self.nesting >= _MAX_NESTED_PICKLES:
            raise CapReached("nested joblib pickles", _MAX_NESTED_PICKLES, offset)
        raw = self.r.file_reader()
        limits = replace(
            self.limits, max_pickle_opcodes=max(1, self.limits.max_pickle_opcodes - self._parsed)
        )
        nested = Walker(
            PythonFramed(raw),
            limits,
            self.allow,
            self.sink,
            raw.tell(),
            self.nesting + 1,
            reading=Reading(Framing.PYTHON),
        )
        result = nested.run()
        self.result.imports.extend(result.imports)
        self._parsed += result.opcodes
        if not result.complete:
            raise AlreadyReported("nested pickle ended early", offset)


def _arguments(items: list[Value]) -> Value:
    return tuple(items) if len(items) <= _MAX_TRACKED_TUPLE else DATA


def _describe(value: Value) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Global):
        return f"global {value.ref.dotted}"
    if isinstance(value, Called):
        return "result of a call"
    if isinstance(value, Unresolved):
        return value.why
    return "data"


def _check_int(line: bytes, offset: int) -> None:
    try:
        int(line)
    except ValueError:
        raise Malformed(f"INT at offset {offset} is not an integer", offset) from None


def _check_long(line: bytes, offset: int) -> None:
    _check_int(line[:-1] if line.endswith(b"L") else line, offset)


def _check_float(line: bytes, offset: int) -> None:
    try:
        float(line)
    except ValueError:
        raise Malformed(f"FLOAT at offset {offset} is not a number", offset) from None


def _check_ascii(line: bytes, offset: int) -> None:
    if not line.isascii():
        raise Malformed(f"PERSID at offset {offset} is not ASCII", offset)


# ---- the opcode table ------------------------------------------------------------------
Handler = Callable[[Walker, int], bool]


def _push_const(value: Value) -> Handler:
    def handler(w: Walker, offset: int) -> bool:
        w.push(value, offset)
        return False

    return handler


def _fixed(size: int) -> Handler:
    def handler(w: Walker, offset: int) -> bool:
        w.r.read(size, offset)
        w.push(DATA, offset)
        return False

    return handler


def _line_data(check: Callable[[bytes, int], None]) -> Handler:
    def handler(w: Walker, offset: int) -> bool:
        line = w.text_line(offset)
        if line is not None:
            check(line, offset)
        w.push(DATA, offset)
        return False

    return handler


# Built once: every walker shares it (a walk of a tiny pickle should not pay for it).
_HANDLERS: dict[int, Handler] = {
    ord("("): Walker.mark,
    ord("."): Walker.op_stop,
    ord("0"): Walker.op_pop,
    ord("1"): Walker.op_pop_mark,
    ord("2"): Walker.op_dup,
    ord("F"): _line_data(_check_float),
    ord("I"): Walker.op_int,
    ord("J"): lambda w, o: w.push_int(w.r.read(4, o), o, signed=True),
    ord("K"): lambda w, o: w.push_int(w.r.read(1, o), o, signed=False),
    ord("L"): Walker.op_long_text,
    ord("M"): lambda w, o: w.push_int(w.r.read(2, o), o, signed=False),
    ord("N"): _push_const(NONE),
    ord("P"): _line_data(_check_ascii),
    ord("Q"): Walker.op_binpersid,
    ord("R"): Walker.op_reduce,
    ord("S"): Walker.op_string,
    ord("T"): lambda w, o: w.push_bytes(w.sint4(o), o, "BINSTRING"),
    ord("U"): lambda w, o: w.push_bytes(w.u1(o), o, "SHORT_BINSTRING"),
    ord("V"): Walker.op_unicode,
    ord("X"): lambda w, o: w.push_unicode(w.uint(4, o), o, "BINUNICODE"),
    ord("a"): Walker.op_append,
    ord("b"): Walker.op_build,
    ord("c"): Walker.op_global,
    ord("d"): Walker.op_dict,
    ord("}"): Walker.op_empty_dict,
    ord("e"): Walker.op_appends,
    ord("g"): lambda w, o: w.op_get(w.int_line(o), o),
    ord("h"): lambda w, o: w.op_get(w.u1(o), o),
    ord("i"): Walker.op_inst,
    ord("j"): lambda w, o: w.op_get(w.uint(4, o), o),
    ord("l"): Walker.op_collect,
    ord("]"): Walker.op_empty_container,
    ord("o"): Walker.op_obj,
    ord("p"): lambda w, o: w.op_put(w.int_line(o), o),
    ord("q"): lambda w, o: w.op_put(w.u1(o), o),
    ord("r"): lambda w, o: w.op_put(w.uint(4, o), o),
    ord("s"): Walker.op_setitem,
    ord("t"): Walker.op_tuple,
    ord(")"): _push_const(()),
    ord("u"): Walker.op_setitems,
    ord("G"): _fixed(8),
    # protocol 2
    0x80: Walker.op_proto,
    0x81: Walker.op_newobj,
    0x82: lambda w, o: w.op_ext(w.u1(o), o, "EXT1"),
    0x83: lambda w, o: w.op_ext(w.uint(2, o), o, "EXT2"),
    0x84: lambda w, o: w.op_ext(w.sint4(o), o, "EXT4"),
    0x85: lambda w, o: w.op_tuple_n(1, o),
    0x86: lambda w, o: w.op_tuple_n(2, o),
    0x87: lambda w, o: w.op_tuple_n(3, o),
    0x88: _push_const(True),
    0x89: _push_const(False),
    0x8A: lambda w, o: w.op_long(w.u1(o), o, "LONG1"),
    0x8B: lambda w, o: w.op_long(w.sint4(o), o, "LONG4"),
    # protocol 3
    ord("B"): lambda w, o: w.push_bytes(w.uint(4, o), o, "BINBYTES", into=True),
    ord("C"): lambda w, o: w.push_bytes(w.u1(o), o, "SHORT_BINBYTES", into=True),
    # protocol 4
    0x8C: lambda w, o: w.push_unicode(w.u1(o), o, "SHORT_BINUNICODE"),
    0x8D: lambda w, o: w.push_unicode(w.uint(8, o), o, "BINUNICODE8"),
    0x8E: lambda w, o: w.push_bytes(w.uint(8, o), o, "BINBYTES8", into=True),
    0x8F: Walker.op_empty_container,
    0x90: Walker.op_additems,
    0x91: Walker.op_collect,
    0x92: Walker.op_newobj_ex,
    0x93: Walker.op_stack_global,
    0x94: Walker.op_memoize,
    0x95: Walker.op_frame,
    # protocol 5
    0x96: lambda w, o: w.push_bytes(w.uint(8, o), o, "BYTEARRAY8", into=True),
    0x97: _push_const(DATA),
    0x98: Walker.op_readonly_buffer,
}
Walker.handlers = _HANDLERS


# ---- entry points ---------------------------------------------------------------------
def _reader(stream: BinaryIO, start: int, limit: int | None, framing: Framing) -> Reader:
    raw = Reader(stream, start, limit)
    if framing is Framing.PYTHON:
        return PythonFramed(raw)
    if framing is Framing.UNBUFFERED:
        return UnbufferedFramed(raw)
    return raw


def walk_pickle(
    stream: BinaryIO,
    ctx: ScanContext,
    *,
    start: int = 0,
    limit: int | None = None,
    values: bool = False,
    reading: Reading = CONTIGUOUS,
    defer_joblib_damage: bool = False,
    inflated: bool = False,
) -> PickleStream:
    """Walk one pickle stream of ``stream`` from ``start`` without executing it.

    Reports into ``ctx``: MG101 dangerous imports, MG102 unknown imports, MG103
    unknown globals called with stream-chosen arguments, MG104 calls that cannot be
    resolved, MG105 damage (truncation, invalid opcode, stack underflow, missing
    STOP, protocol > 5) and MG002 when a cap in ``ctx.limits`` is reached.

    ``limit`` is the absolute offset the stream must end by (None: end of
    ``stream``). The walk stops at the first STOP; ``result.end`` is the offset just
    after it, so a caller with several consecutive pickles (torch's legacy format,
    a numpy object array) walks the next one from there. Memory stays bounded:
    arguments longer than 1 KiB are skipped with a seek, never read.

    ``reading`` is the loader's view (default ``pickle.load``). When the
    contiguous reading finds frames that other unpicklers read differently, the
    stream is walked their ways too and the disagreement is reported (MG105).

    With ``values`` the result lists the strings, ints and globals the stream
    pushes (see ``PickleStream.values``), for callers that read a format's
    framing from its pickles. ``inflated`` (decompressed content) charges the
    walk to the file's budget for work on decompressed bytes.
    """
    prefix = "" if reading == CONTIGUOUS else f"read as {reading.label}: "
    limits = ctx.limits
    cap_what = "pickle opcodes"
    if inflated:
        left = ctx.inflated_work_left()
        if left < limits.max_pickle_opcodes:
            cap_what = (
                f"pickle opcodes walked in decompressed content ({limits.max_inflated_work} "
                "per compressed byte)"
            )
            if left <= 0:  # spent on earlier members: nothing more is walked
                ctx.limit_reached(cap_what, ctx.inflated_work_allowed(), offset=start)
                return PickleStream(start=start, limited=True)
            limits = replace(limits, max_pickle_opcodes=left)
    walker = Walker(
        _reader(stream, start, limit, reading.framing),
        limits,
        ctx.allow_globals,
        ContextSink(ctx, prefix),
        start,
        values=values,
        reading=reading,
        defer_joblib_damage=defer_joblib_damage,
    )
    walker.opcodes_what = cap_what
    result = walker.run()
    if inflated:
        ctx.spend_inflated_work(result.opcodes)
    if reading.framing is Framing.CONTIGUOUS and result.frame_anomaly is not None:
        ctx.report(
            PICKLE_MALFORMED,
            f"pickle frames are inconsistent ({result.frame_anomaly}): pickle.load, "
            "torch.load and the pure-Python unpickler read different opcodes from this "
            "stream; each reading was scanned",
            offset=start,
            evidence="frame-disagreement",
        )
        for other in _OTHER_FRAMINGS:
            walk_pickle(stream, ctx, start=start, limit=limit, reading=other, inflated=inflated)
    return result


def trial_walk(
    stream: BinaryIO, start: int, limit: int | None, ctx_limits: Limits, allow: frozenset[str]
) -> tuple[PickleStream, RecordingSink, int]:
    """Walk without reporting (findings are recorded); also returns the bytes it read."""
    sink = RecordingSink()
    reader = Reader(stream, start, limit)
    walker = Walker(reader, ctx_limits, allow, sink, start)
    return walker.run(), sink, reader.work()

"""The symbolic pickle machine: a bounded, non-executing opcode walker.

Why hand-written: ``pickle`` executes what it reads, and ``pickletools.genops``
trusts the stream too much for hostile input. It reads every declared length in
full (a BINUNICODE8 of 2**60 bytes is a MemoryError, a 200 MB BINBYTES is 200 MB
of memory), materialises every argument, and raises on damage halfway through,
losing what it had seen. This walker reads through a fixed-size buffer, keeps
only short strings (module and attribute names), seeks over long arguments,
counts opcodes, memo entries and stack depth against ``ctx.limits``, and turns
every kind of damage into a finding.

The stack is modelled symbolically, like fickling: strings, imported globals,
results of calls and opaque data. That is enough to resolve every callable a
stream can obtain (GLOBAL, STACK_GLOBAL with operands from any string opcode or
the memo, INST, OBJ, NEWOBJ, NEWOBJ_EX, REDUCE, BUILD, EXT1/2/4) and to tell
what is only imported from what is called with arguments the file chose.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Protocol

from modelguard.limits import Limits
from modelguard.rules.base import Rule
from modelguard.rules.scan import (
    PICKLE_DANGEROUS_IMPORT,
    PICKLE_MALFORMED,
    PICKLE_UNKNOWN_CALL,
    PICKLE_UNKNOWN_IMPORT,
    PICKLE_UNRESOLVED_CALL,
)
from modelguard.scan.context import ScanContext
from modelguard.scan.pickle.globals import Classification, Verdict, classify
from modelguard.scan.pickle.reader import (
    KEEP_STRING,
    AlreadyReported,
    CapReached,
    Malformed,
    Reader,
    Truncated,
)

HIGHEST_PROTOCOL = 5


# ---- results -------------------------------------------------------------------------
@dataclass
class ImportedGlobal:
    """One global a stream imports, where, how, and what it was judged to be."""

    module: str
    name: str
    classification: Classification
    offset: int
    opcode: str
    called: bool = False  # passed stream-chosen arguments (REDUCE / INST / OBJ)

    @property
    def dotted(self) -> str:
        return self.classification.dotted

    @property
    def verdict(self) -> Verdict:
        return self.classification.verdict


class GlobalName(str):
    """A global's dotted name among a stream's values, told apart from a string."""


# What a stream pushes that a caller may want to read back: strings, ints and
# the globals it imports (GlobalName).
PickledValue = str | int
MAX_VALUES = 1_000_000  # values recorded per stream
MAX_VALUE_CHARS = 16 * 1024 * 1024  # characters of recorded strings per stream


@dataclass
class PickleStream:
    """What a walk of one pickle stream found.

    ``end`` is the offset just after STOP, or None when the stream was truncated,
    malformed or stopped at a cap (then ``truncated``, ``malformed`` or
    ``limited`` says which). Offsets are absolute positions in the walked stream.

    ``values`` (only when asked for) lists, in order, the strings, ints and
    globals the stream pushes, memo fetches included; it is None when not asked
    for or when it outgrew its bounds.
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

    @property
    def complete(self) -> bool:
        return self.end is not None


class _Sink(Protocol):
    def finding(self, rule: Rule, message: str, offset: int | None, evidence: str) -> None: ...

    def limit(self, what: str, limit: int, offset: int | None) -> None: ...


class ContextSink:
    def __init__(self, ctx: ScanContext) -> None:
        self._ctx = ctx

    def finding(self, rule: Rule, message: str, offset: int | None, evidence: str) -> None:
        self._ctx.report(rule, message, offset=offset, evidence=evidence)

    def limit(self, what: str, limit: int, offset: int | None) -> None:
        self._ctx.limit_reached(what, limit, offset=offset)


@dataclass
class RecordingSink:
    """Collects findings so a trial walk can be judged before anything is reported."""

    findings: list[tuple[Rule, str, int | None, str]] = field(default_factory=list)
    limits: list[tuple[str, int, int | None]] = field(default_factory=list)

    def finding(self, rule: Rule, message: str, offset: int | None, evidence: str) -> None:
        self.findings.append((rule, message, offset, evidence))

    def limit(self, what: str, limit: int, offset: int | None) -> None:
        self.limits.append((what, limit, offset))

    def replay(self, ctx: ScanContext) -> None:
        for rule, message, offset, evidence in self.findings:
            ctx.report(rule, message, offset=offset, evidence=evidence)
        for what, limit, offset in self.limits:
            ctx.limit_reached(what, limit, offset=offset)


# ---- symbolic values -----------------------------------------------------------------
class _Data:
    """Any value whose content does not matter (numbers, containers, long strings)."""


_DATA = _Data()


@dataclass(frozen=True)
class _Global:
    ref: ImportedGlobal


@dataclass(frozen=True)
class _Called:
    """The result of calling or instantiating ``callee`` (None: not resolvable)."""

    callee: ImportedGlobal | None


@dataclass(frozen=True)
class _Unresolved:
    why: str


@dataclass(frozen=True)
class _NumpyDtype:
    """A numpy.dtype(spec, ...) call result; joblib needs its item size."""

    spec: str


class _JoblibState:
    """The state dict BUILD gives a joblib NumpyArrayWrapper (str keys only)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict[str, _Value] = {}


# Known strings are plain str and small ints plain int (neither is tracked by
# the cycle collector: cheap in bulk); short tuples are tuples of values.
_Value = (
    _Data | str | int | tuple["_Value", ...] | _Global | _Called | _Unresolved
    | _NumpyDtype | _JoblibState
)  # fmt: skip
_MAX_TRACKED_TUPLE = 32  # longer tuples are opaque data
_MAX_KEPT_LONG = 16  # LONG1 bytes kept as an int (torch's 10-byte magic number fits)
_MEMO_SHORT = 64  # memoised strings up to this length are always kept
_MEMO_TEXT_BUDGET = 32 * 1024 * 1024  # characters of longer memoised strings kept
_JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
_MAX_JOBLIB_KEYS = 32
_MAX_NESTED_PICKLES = 8  # joblib object arrays nest a pickle inside the pickle
_DTYPE_SPEC = re.compile(r"[<>|=]?([biufcmMSUVO])(\d+)")

# Opcodes that push a constant and take a fixed-size argument: opcode -> (size, value).
_FIXED_DATA: dict[int, tuple[int, _Value]] = {
    ord("N"): (0, _DATA), ord("]"): (0, _DATA), ord(")"): (0, ()), 0x88: (0, _DATA),
    0x89: (0, _DATA), 0x8F: (0, _DATA), ord("G"): (8, _DATA),
}  # fmt: skip


# ---- the walker ------------------------------------------------------------------------
_STRING_QUOTES = (b"'", b'"')
_CALL_OPCODES = frozenset({"REDUCE", "INST", "OBJ"})


def _is_dotted_identifier(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


class Walker:
    # The inline fast path handles the commonest opcodes without a handler call.
    # Tests switch it off to check that both paths reach the same results.
    inline_fast_path = True

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
    ) -> None:
        self.nesting = nesting
        self.r = reader
        self.limits = limits
        self.allow = allow
        self.sink = sink
        self.result = PickleStream(start=start)
        self.stack: list[_Value] = []
        self.metastack: list[list[_Value]] = []
        self.memo: dict[int, _Value] = {}
        self.handlers: dict[int, Callable[[int], bool]] = self._handler_table()
        self._parsed = 0  # opcodes fully parsed so far
        self._memo_text = 0  # characters of long strings kept in the memo
        # Recording values goes through push(), which the fast path bypasses.
        self._values: list[PickledValue] | None = [] if values else None
        self._value_chars = 0
        self._fast = self.inline_fast_path and not values

    # -- driver ------------------------------------------------------------------------
    def run(self) -> PickleStream:
        result = self.result
        try:
            self._loop()
        except Truncated as stop:
            result.truncated = True
            self.sink.finding(
                PICKLE_MALFORMED, f"pickle truncated: {stop.message}", stop.offset, "truncated"
            )
        except Malformed as stop:
            result.malformed = True
            self.sink.finding(
                PICKLE_MALFORMED, f"malformed pickle: {stop.message}", stop.offset, stop.message
            )
        except CapReached as stop:
            result.limited = True
            self.sink.limit(stop.message, stop.limit, stop.offset)
        except AlreadyReported:
            result.malformed = True
        self._report_unknown_imports()
        return result

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
            count += 1
            if count > max_ops:
                raise CapReached("pickle opcodes", max_ops, offset)
            handler = handlers.get(op)
            if handler is None:
                raise Malformed(f"invalid opcode 0x{op:02x} at offset {offset}", offset)
            done = handler(offset)
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
        from_bytes = int.from_bytes
        stack = self.stack
        buf = r.buf
        pos = r.pos
        base = r.base
        buflen = len(buf)
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
            count += 1
            if count > max_ops:
                raise CapReached("pickle opcodes", max_ops, offset)
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
            if op == 0x7D and not (stack and type(stack[-1]) is _Called):  # EMPTY_DICT
                stack.append(_DATA)
                if len(stack) > max_depth:
                    raise CapReached("pickle stack depth", max_depth, offset)
                self._parsed = count
                continue
            if 0x85 <= op <= 0x87 and len(stack) >= op - 0x84:  # TUPLE1, TUPLE2, TUPLE3
                n = op - 0x84
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
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
            if (
                (op == 0x65 or op == 0x75)  # APPENDS, SETITEMS
                and metastack
                and metastack[-1]
                and type(metastack[-1][-1]) is not _JoblibState
            ):
                stack = self.stack = metastack.pop()
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
            if op == 0x73 and len(stack) >= 3 and type(stack[-3]) is not _JoblibState:  # SETITEM
                del stack[-2:]
                self._parsed = count
                continue
            if op == 0x61 and len(stack) >= 2:  # APPEND
                del stack[-1]
                self._parsed = count
                continue
            handler = handlers.get(op)
            if handler is None:
                raise Malformed(f"invalid opcode 0x{op:02x} at offset {offset}", offset)
            r.pos = pos
            self.stack = stack
            done = handler(offset)
            self._parsed = count
            if done:
                return
            buf = r.buf
            pos = r.pos
            base = r.base
            buflen = len(buf)
            stack = self.stack

    def _report_unknown_imports(self) -> None:
        called = {g.dotted for g in self.result.imports if g.called}
        for ref in self.result.imports:
            if ref.verdict is Verdict.UNKNOWN and ref.dotted not in called:
                self.sink.finding(
                    PICKLE_UNKNOWN_IMPORT,
                    f"pickle imports {ref.dotted} ({ref.classification.reason}) via {ref.opcode}",
                    ref.offset,
                    ref.dotted,
                )

    # -- stack -------------------------------------------------------------------------
    def push(self, value: _Value, offset: int) -> None:
        stack = self.stack
        stack.append(value)
        if len(stack) > self.limits.max_stack_depth:
            raise CapReached("pickle stack depth", self.limits.max_stack_depth, offset)
        if self._values is not None:
            self.record(value)

    def record(self, value: _Value) -> None:
        """Add a pushed string, int or global to the values, within their bounds."""
        values = self._values
        assert values is not None
        if isinstance(value, _Global):
            value = GlobalName(f"{value.ref.module}.{value.ref.name}")
        elif not isinstance(value, (str, int)):
            return
        if isinstance(value, str):
            self._value_chars += len(value)
        if len(values) >= MAX_VALUES or self._value_chars > MAX_VALUE_CHARS:
            self._values = None  # too many to be worth reading back: none at all
            return
        values.append(value)

    def pop(self, offset: int) -> _Value:
        if not self.stack:
            raise Malformed(f"stack underflow at offset {offset}", offset)
        return self.stack.pop()

    def top(self, offset: int) -> _Value:
        if not self.stack:
            raise Malformed(f"stack underflow at offset {offset}", offset)
        return self.stack[-1]

    def mark(self, offset: int) -> bool:
        self.metastack.append(self.stack)
        self.stack = []
        if len(self.metastack) > self.limits.max_stack_depth:
            raise CapReached("pickle MARK nesting", self.limits.max_stack_depth, offset)
        return False

    def pop_mark(self, offset: int) -> list[_Value]:
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

    def blob(self, length: int, offset: int, kind: str) -> bytes | None:
        """A length-prefixed argument: the bytes if short, else skipped (None)."""
        if length < 0:
            raise Malformed(f"negative length {length} at offset {offset}", offset)
        if length > self.r.remaining():
            raise Truncated(
                f"{kind} at offset {offset} declares {length:,} bytes but only "
                f"{self.r.remaining():,} remain",
                offset,
            )
        if length > self.limits.max_pickle_string:
            raise CapReached("pickle string length", self.limits.max_pickle_string, offset)
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
            self.push(_DATA, offset)
            return False
        try:
            text = data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise Malformed(f"{kind} at offset {offset} is not valid UTF-8", offset) from None
        self.push(text, offset)
        return False

    def push_bytes(self, length: int, offset: int, kind: str) -> bool:
        # Byte strings are kept as text too: py2 STRING opcodes load as str, and
        # treating bytes the same only ever adds findings.
        data = self.blob(length, offset, kind)
        self.push(_DATA if data is None else data.decode("latin-1"), offset)
        return False

    # -- imports and calls ---------------------------------------------------------------
    def import_global(self, module: str, name: str, offset: int, opcode: str) -> _Global:
        classification = classify(module, name, self.allow)
        ref = ImportedGlobal(module, name, classification, offset, opcode)
        self.result.imports.append(ref)
        if not (_is_dotted_identifier(module) and _is_dotted_identifier(name)):
            raise Malformed(
                f"{opcode} at offset {offset} names {module!r}.{name!r}, not a Python identifier",
                offset,
            )
        if classification.verdict is Verdict.DANGEROUS:
            self.sink.finding(
                PICKLE_DANGEROUS_IMPORT,
                f"pickle imports {classification.dotted} via {opcode}: {classification.reason}",
                offset,
                classification.dotted,
            )
        return _Global(ref)

    def global_lines(self, offset: int, opcode: str) -> _Value:
        module_raw = self.text_line(offset)
        name_raw = self.text_line(offset)
        if module_raw is None or name_raw is None:
            self.sink.finding(
                PICKLE_UNRESOLVED_CALL,
                f"{opcode} at offset {offset} names a global longer than {KEEP_STRING} bytes",
                offset,
                f"{opcode}:long-name",
            )
            return _Unresolved("name too long")
        try:
            module = module_raw.decode("utf-8")
            name = name_raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"{opcode} at offset {offset} is not valid UTF-8", offset) from None
        return self.import_global(module, name, offset, opcode)

    def call(self, callee: _Value, offset: int, opcode: str, args: _Value = _DATA) -> None:
        if isinstance(callee, _Global):
            ref = callee.ref
            spec = args[0] if isinstance(args, tuple) and args else None
            if ref.dotted == "numpy.dtype" and isinstance(spec, str):
                self.push(_NumpyDtype(spec), offset)
                return
            if opcode in _CALL_OPCODES:
                ref.called = True
                if ref.verdict is Verdict.UNKNOWN:
                    self.sink.finding(
                        PICKLE_UNKNOWN_CALL,
                        f"pickle calls {ref.dotted} with stream-chosen arguments via {opcode} "
                        f"({ref.classification.reason})",
                        offset,
                        ref.dotted,
                    )
            self.push(_Called(ref), offset)
            return
        if isinstance(callee, _Called):
            what = callee.callee.dotted if callee.callee is not None else "an unresolved call"
            self.sink.finding(
                PICKLE_UNRESOLVED_CALL,
                f"{opcode} at offset {offset} calls the result of calling {what}",
                offset,
                f"call-of-result:{what}",
            )
        elif isinstance(callee, _Unresolved):
            self.sink.finding(
                PICKLE_UNRESOLVED_CALL,
                f"{opcode} at offset {offset} calls a callable that cannot be resolved "
                f"({callee.why})",
                offset,
                f"call-of-unresolved:{callee.why}",
            )
        else:
            self.sink.finding(
                PICKLE_UNRESOLVED_CALL,
                f"{opcode} at offset {offset} calls a value that is not an imported global",
                offset,
                "call-of-data",
            )
        self.push(_Called(None), offset)

    # -- opcode handlers (return True at STOP) -----------------------------------------------
    def _handler_table(self) -> dict[int, Callable[[int], bool]]:
        def push_data(offset: int) -> bool:
            self.push(_DATA, offset)
            return False

        def fixed(size: int) -> Callable[[int], bool]:
            def handler(offset: int) -> bool:
                self.r.read(size, offset)
                self.push(_DATA, offset)
                return False

            return handler

        def line_data(check: Callable[[bytes, int], None]) -> Callable[[int], bool]:
            def handler(offset: int) -> bool:
                line = self.text_line(offset)
                if line is not None:
                    check(line, offset)
                self.push(_DATA, offset)
                return False

            return handler

        table: dict[int, Callable[[int], bool]] = {
            ord("("): self.mark,
            ord("."): self.op_stop,
            ord("0"): self.op_pop,
            ord("1"): self.op_pop_mark,
            ord("2"): self.op_dup,
            ord("F"): line_data(_check_float),
            ord("I"): self.op_int,
            ord("J"): lambda o: self.push_int(self.r.read(4, o), o, signed=True),
            ord("K"): lambda o: self.push_int(self.r.read(1, o), o, signed=False),
            ord("L"): self.op_long_text,
            ord("M"): lambda o: self.push_int(self.r.read(2, o), o, signed=False),
            ord("N"): push_data,
            ord("P"): line_data(_check_ascii),
            ord("Q"): self.op_binpersid,
            ord("R"): self.op_reduce,
            ord("S"): self.op_string,
            ord("T"): lambda o: self.push_bytes(self.sint4(o), o, "BINSTRING"),
            ord("U"): lambda o: self.push_bytes(self.u1(o), o, "SHORT_BINSTRING"),
            ord("V"): self.op_unicode,
            ord("X"): lambda o: self.push_unicode(self.uint(4, o), o, "BINUNICODE"),
            ord("a"): self.op_append,
            ord("b"): self.op_build,
            ord("c"): self.op_global,
            ord("d"): self.op_collect,
            ord("}"): self.op_empty_dict,
            ord("e"): self.op_extend,
            ord("g"): lambda o: self.op_get(self.int_line(o), o),
            ord("h"): lambda o: self.op_get(self.u1(o), o),
            ord("i"): self.op_inst,
            ord("j"): lambda o: self.op_get(self.uint(4, o), o),
            ord("l"): self.op_collect,
            ord("]"): push_data,
            ord("o"): self.op_obj,
            ord("p"): lambda o: self.op_put(self.int_line(o), o),
            ord("q"): lambda o: self.op_put(self.u1(o), o),
            ord("r"): lambda o: self.op_put(self.uint(4, o), o),
            ord("s"): self.op_setitem,
            ord("t"): self.op_tuple,
            ord(")"): self.op_empty_tuple,
            ord("u"): self.op_extend,
            ord("G"): fixed(8),
            # protocol 2
            0x80: self.op_proto,
            0x81: self.op_newobj,
            0x82: lambda o: self.op_ext(self.u1(o), o, "EXT1"),
            0x83: lambda o: self.op_ext(self.uint(2, o), o, "EXT2"),
            0x84: lambda o: self.op_ext(self.sint4(o), o, "EXT4"),
            0x85: lambda o: self.op_tuple_n(1, o),
            0x86: lambda o: self.op_tuple_n(2, o),
            0x87: lambda o: self.op_tuple_n(3, o),
            0x88: push_data,
            0x89: push_data,
            0x8A: lambda o: self.op_long(self.u1(o), o, "LONG1"),
            0x8B: lambda o: self.op_long(self.sint4(o), o, "LONG4"),
            # protocol 3
            ord("B"): lambda o: self.push_bytes(self.uint(4, o), o, "BINBYTES"),
            ord("C"): lambda o: self.push_bytes(self.u1(o), o, "SHORT_BINBYTES"),
            # protocol 4
            0x8C: lambda o: self.push_unicode(self.u1(o), o, "SHORT_BINUNICODE"),
            0x8D: lambda o: self.push_unicode(self.uint(8, o), o, "BINUNICODE8"),
            0x8E: lambda o: self.push_bytes(self.uint(8, o), o, "BINBYTES8"),
            0x8F: push_data,
            0x90: self.op_extend,
            0x91: self.op_collect,
            0x92: self.op_newobj_ex,
            0x93: self.op_stack_global,
            0x94: self.op_memoize,
            0x95: self.op_frame,
            # protocol 5
            0x96: lambda o: self.push_bytes(self.uint(8, o), o, "BYTEARRAY8"),
            0x97: push_data,
            0x98: self.op_readonly_buffer,
        }
        return table

    def op_stop(self, offset: int) -> bool:
        self.pop(offset)
        self.result.end = self.r.tell()
        return True

    def op_proto(self, offset: int) -> bool:
        version = self.u1(offset)
        if version > HIGHEST_PROTOCOL:
            raise Malformed(f"unsupported pickle protocol {version} at offset {offset}", offset)
        self.result.protocol = version
        return False

    def op_frame(self, offset: int) -> bool:
        # Frames only group opcodes for buffered reading; the loader refuses one
        # that declares more bytes than the input holds.
        length = self.uint(8, offset)
        if length > self.r.remaining():
            raise Truncated(
                f"FRAME at offset {offset} declares {length:,} bytes but only "
                f"{self.r.remaining():,} remain",
                offset,
            )
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
        self.push(_DATA, offset)
        return False

    def op_string(self, offset: int) -> bool:
        line = self.text_line(offset)
        if line is None:
            self.push(_DATA, offset)
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
            self.push(_DATA, offset)
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
            self.push(_DATA, offset)
        return False

    def op_long_text(self, offset: int) -> bool:
        line = self.text_line(offset)
        if line is None:
            self.push(_DATA, offset)
            return False
        _check_long(line, offset)
        digits = line[:-1] if line.endswith(b"L") else line
        self.push(int(digits) if len(digits) <= _MAX_KEPT_LONG * 3 else _DATA, offset)
        return False

    def op_int(self, offset: int) -> bool:
        line = self.text_line(offset)
        if line is None:
            self.push(_DATA, offset)
            return False
        _check_int(line, offset)
        # Protocol 0 spells the booleans as INT 00 and 01.
        self.push(_DATA if line in (b"00", b"01") else int(line), offset)
        return False

    def op_append(self, offset: int) -> bool:
        self.pop(offset)
        self.top(offset)
        return False

    def op_extend(self, offset: int) -> bool:  # APPENDS, SETITEMS, ADDITEMS
        items = self.pop_mark(offset)
        target = self.top(offset)
        if isinstance(target, _JoblibState):
            for key, value in zip(items[::2], items[1::2], strict=False):
                target_set(target, key, value)
        return False

    def op_setitem(self, offset: int) -> bool:
        value = self.pop(offset)
        key = self.pop(offset)
        target = self.top(offset)
        if isinstance(target, _JoblibState):
            target_set(target, key, value)
        return False

    def op_empty_tuple(self, offset: int) -> bool:
        self.push((), offset)
        return False

    def op_empty_dict(self, offset: int) -> bool:
        below = self.stack[-1] if self.stack else None
        if (
            isinstance(below, _Called)
            and below.callee is not None
            and below.callee.dotted == _JOBLIB_WRAPPER
        ):
            self.push(_JoblibState(), offset)
        else:
            self.push(_DATA, offset)
        return False

    def op_tuple(self, offset: int) -> bool:
        items = self.pop_mark(offset)
        self.push(tuple(items) if len(items) <= _MAX_TRACKED_TUPLE else _DATA, offset)
        return False

    def op_collect(self, offset: int) -> bool:  # LIST, TUPLE, DICT, FROZENSET
        self.pop_mark(offset)
        self.push(_DATA, offset)
        return False

    def op_tuple_n(self, n: int, offset: int) -> bool:
        items = [self.pop(offset) for _ in range(n)]
        self.push(tuple(reversed(items)), offset)
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

    def memo_text(self, text: str) -> _Value:
        """A string to keep in the memo, within a total budget for memoised text.

        A pickle can memoise millions of strings; past the budget long ones are
        remembered as opaque data (if one is later fetched for STACK_GLOBAL, that
        global is reported as unresolved rather than guessed).
        """
        if len(text) <= _MEMO_SHORT:
            return text
        self._memo_text += len(text)
        return text if self._memo_text <= _MEMO_TEXT_BUDGET else _DATA

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
        self.sink.finding(
            PICKLE_UNRESOLVED_CALL,
            f"STACK_GLOBAL at offset {offset} imports a global whose module or name is "
            f"computed or too long to resolve ({_describe(module)}, {_describe(name)})",
            offset,
            "STACK_GLOBAL:unresolved",
        )
        self.push(_Unresolved(why), offset)
        return False

    def op_ext(self, code: int, offset: int, kind: str) -> bool:
        self.sink.finding(
            PICKLE_UNRESOLVED_CALL,
            f"{kind} at offset {offset} imports extension code {code} from the copyreg "
            "registry, which is empty unless code registered it",
            offset,
            f"{kind}:{code}",
        )
        self.push(_Unresolved(f"copyreg extension {code}"), offset)
        return False

    def op_reduce(self, offset: int) -> bool:
        args = self.pop(offset)
        self.call(self.pop(offset), offset, "REDUCE", args)
        return False

    def op_inst(self, offset: int) -> bool:
        callee = self.global_lines(offset, "INST")
        self.pop_mark(offset)
        self.call(callee, offset, "INST")
        return False

    def op_obj(self, offset: int) -> bool:
        items = self.pop_mark(offset)
        if not items:
            raise Malformed(f"OBJ at offset {offset} has no class (stack underflow)", offset)
        self.call(items[0], offset, "OBJ")
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
        if (
            isinstance(target, _Called)
            and target.callee is not None
            and target.callee.dotted == _JOBLIB_WRAPPER
            and isinstance(state, _JoblibState)
        ):
            self.skip_joblib_array(state, offset)
        if isinstance(target, _Global):
            # BUILD on a class or function (not an instance) sets attributes on
            # it: a way to swap an allowlisted callable for an arbitrary one.
            self.sink.finding(
                PICKLE_UNRESOLVED_CALL,
                f"BUILD at offset {offset} sets attributes on the imported global "
                f"{target.ref.dotted} itself, changing what later uses of it call",
                offset,
                f"BUILD:{target.ref.dotted}",
            )
        return False

    # -- joblib ------------------------------------------------------------------------
    def skip_joblib_array(self, state: _JoblibState, offset: int) -> None:
        """Step over the array joblib writes right after a NumpyArrayWrapper's BUILD.

        joblib.load reads those bytes as array data (or, for object arrays, as a
        nested pickle, which is walked). pickle.load would read them as opcodes,
        so a payload hidden there is looked for too. When shape or dtype are not
        statically known the walk simply carries on, and damage gets reported.
        """
        shape = state.items.get("shape")
        dtype = state.items.get("dtype")
        if not isinstance(shape, tuple) or not isinstance(dtype, _NumpyDtype):
            return
        dims = [n for n in shape if isinstance(n, int) and n >= 0]
        if len(dims) != len(shape):
            return
        match = _DTYPE_SPEC.fullmatch(dtype.spec)
        if match is None:
            return
        kind, size = match.group(1), int(match.group(2))
        start = self.r.tell()
        if kind == "O" or (kind == "V" and self.r.remaining() > 0 and self._peek() == 0x80):
            self.walk_nested(offset)
            return
        self.look_for_payload(start, offset)
        if "numpy_array_alignment_bytes" in state.items:
            padding = self.u1(offset)
            self.r.skip(padding, offset)
        count = 1
        for n in dims:
            count *= n
        self.r.skip(count * (size * 4 if kind == "U" else size), offset)

    def _peek(self) -> int:
        byte = self.r.read(1, self.r.tell())[0]
        self.r.pos -= 1
        return byte

    def walk_nested(self, offset: int) -> None:
        if self.nesting >= _MAX_NESTED_PICKLES:
            raise CapReached("nested joblib pickles", _MAX_NESTED_PICKLES, offset)
        used = self._parsed
        limits = replace(
            self.limits, max_pickle_opcodes=max(1, self.limits.max_pickle_opcodes - used)
        )
        nested = Walker(self.r, limits, self.allow, self.sink, self.r.tell(), self.nesting + 1)
        result = nested.run()
        self.result.imports.extend(result.imports)
        self._parsed += result.opcodes
        if not result.complete:
            raise AlreadyReported("nested pickle ended early", offset)

    def look_for_payload(self, start: int, offset: int) -> None:
        # What pickle.load (not joblib.load) would execute from the array bytes.
        _, sink = trial_walk(self.r.stream, start, self.r.end, self.limits, self.allow)
        for rule, message, at, evidence in sink.findings:
            if rule in (PICKLE_DANGEROUS_IMPORT, PICKLE_UNKNOWN_CALL, PICKLE_UNRESOLVED_CALL):
                self.sink.finding(
                    rule, f"in joblib array data (read by pickle.load): {message}", at, evidence
                )


def target_set(target: _JoblibState, key: _Value, value: _Value) -> None:
    if isinstance(key, str) and len(target.items) < _MAX_JOBLIB_KEYS:
        target.items[key] = value


def _describe(value: _Value) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, _Global):
        return f"global {value.ref.dotted}"
    if isinstance(value, _Called):
        return "result of a call"
    if isinstance(value, _Unresolved):
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


# ---- entry points ---------------------------------------------------------------------
def walk_pickle(
    stream: BinaryIO,
    ctx: ScanContext,
    *,
    start: int = 0,
    limit: int | None = None,
    values: bool = False,
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

    With ``values`` the result lists the strings, ints and globals the stream
    pushes (see ``PickleStream.values``), for callers that read a format's
    framing from its pickles.
    """
    reader = Reader(stream, start, limit)
    sink = ContextSink(ctx)
    walker = Walker(reader, ctx.limits, ctx.allow_globals, sink, start, values=values)
    return walker.run()


def trial_walk(
    stream: BinaryIO, start: int, limit: int | None, ctx_limits: Limits, allow: frozenset[str]
) -> tuple[PickleStream, RecordingSink]:
    sink = RecordingSink()
    walker = Walker(Reader(stream, start, limit), ctx_limits, allow, sink, start)
    return walker.run(), sink

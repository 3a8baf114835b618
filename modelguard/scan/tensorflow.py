"""The reading "tensorflow": a SavedModel (``saved_model.pb``) or frozen GraphDef (``.pb``).

TensorFlow loads a SavedModel's graph and functions from ``saved_model.pb``, and
a frozen graph is a bare GraphDef that ``tf.compat.v1.GraphDef.ParseFromString``
reads from any file. Neither carries Python code, but their graphs may hold ops
that reach outside the tensor world whenever the model runs: ``PyFunc`` and its
kin call Python callables registered in the serving process, ``WriteFile`` and
``ReadFile`` write and read any path the graph computes, ``ImmutableConst``
maps a file by name. Those ops are reported (MG350), in the main graph and in
every function of its library.

A protobuf has no magic number, so this reading applies to files named ``.pb``
(the name TensorFlow's loaders look for) whose first field fits the schema.
The wire format is walked by hand (a few message types, fixed depth, every
length checked against its parent) rather than with protobuf's generated
classes: those need TensorFlow's schema, and the walk must stay bounded on
hostile bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

from modelguard.rules.scan import FORMAT_CLAIM_UNMET, TENSORFLOW_UNSAFE_OP
from modelguard.scan.context import Input, ScanContext

# Ops that act outside the graph's tensors when the model runs.
UNSAFE_OPS: dict[str, str] = {
    "PyFunc": "calls a Python function registered in the process",
    "PyFuncStateless": "calls a Python function registered in the process",
    "EagerPyFunc": "calls a Python function registered in the process",
    "WriteFile": "writes a file at a path the graph computes",
    "ReadFile": "reads a file at a path the graph computes",
    "MatchingFiles": "lists files matching a pattern the graph computes",
    "ImmutableConst": "memory-maps a file named in the graph",
}
SAVED_MODEL = "saved_model.pb"
KERAS_METADATA = "keras_metadata.pb"
_MAX_FIELDS = 5_000_000  # wire fields walked per file (MG002 past it)

# Message -> {field number: the message type it holds} (strings are read apart).
_SAVED_MODEL = "SavedModel"
_META_GRAPH = "MetaGraphDef"
_GRAPH = "GraphDef"
_LIBRARY = "FunctionDefLibrary"
_FUNCTION = "FunctionDef"
_NODE = "NodeDef"
_CHILDREN: dict[str, dict[int, str]] = {
    _SAVED_MODEL: {2: _META_GRAPH},  # meta_graphs
    _META_GRAPH: {2: _GRAPH},  # graph_def
    _GRAPH: {1: _NODE, 2: _LIBRARY},  # node, library
    _LIBRARY: {1: _FUNCTION},  # function
    _FUNCTION: {3: _NODE},  # node_def
}
_NODE_NAME, _NODE_OP = 1, 2


class _Malformed(Exception):
    """The bytes are not the protobuf message they were read as."""


class _TooMany(Exception):
    """More wire fields than one file may cost."""


class _Wire:
    """A bounded protobuf wire-format reader over a file, through a moving window.

    Only tags, lengths and the few strings wanted are read: a frozen graph's
    weights (Const values) are skipped by their lengths, never loaded.
    """

    _WINDOW = 1 << 20

    def __init__(self, inp: Input) -> None:
        self.inp = inp
        self.fields = 0
        self._base = 0
        self._buf = b""

    def byte(self, pos: int) -> int:
        if not self._base <= pos < self._base + len(self._buf):
            self._base, self._buf = pos, self.inp.read_at(pos, self._WINDOW)
            if not self._buf:
                raise _Malformed(f"file ends at offset {pos}")
        return self._buf[pos - self._base]

    def text(self, lo: int, hi: int) -> str:
        return self.inp.read_at(lo, min(hi - lo, 4096)).decode("utf-8", "replace")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise _Malformed(f"varint at offset {pos} runs past its message")
            byte = self.byte(pos)
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7

    def fields_of(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, value start, value end) of one message's fields."""
        pos = start
        while pos < end:
            self.fields += 1
            if self.fields > _MAX_FIELDS:
                raise _TooMany
            tag, pos = self.varint(pos, end)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise _Malformed(f"field number 0 at offset {pos}")
            if wire == 0:
                _, after = self.varint(pos, end)
            elif wire == 1:
                after = pos + 8
            elif wire == 2:
                length, pos = self.varint(pos, end)
                after = pos + length
            elif wire == 5:
                after = pos + 4
            else:  # groups (3, 4) are not in TensorFlow's schema; 6, 7 do not exist
                raise _Malformed(f"wire type {wire} at offset {pos}")
            if after > end:
                raise _Malformed(f"field {number} at offset {pos} runs past its message")
            yield number, wire, pos, after
            pos = after


def _roots(name: str, head: bytes) -> tuple[str, ...]:
    """The messages a ``.pb`` file is read as (none: its first byte starts neither).

    ``saved_model.pb`` is a SavedModel to TensorFlow's loader. Any other ``.pb``
    may be handed to ``GraphDef.ParseFromString`` or be a SavedModel renamed,
    and protobuf takes fields in any order, skipping those its schema lacks: so
    it is read both ways whatever field it starts with, and a reading counts
    only if it parses. The first byte must still be a one-byte tag of a field
    either message has (1-4, varint or length-delimited).
    """
    if name.rsplit("/", 1)[-1].lower() == SAVED_MODEL:
        return (_SAVED_MODEL,)
    if not head or head[0] & 0x80:
        return ()
    field, wire = head[0] >> 3, head[0] & 7
    return (_SAVED_MODEL, _GRAPH) if 1 <= field <= 4 and wire in (0, 2) else ()


def is_tensorflow_pb(head: bytes, name: str) -> bool:
    """The predicate: a ``.pb`` file whose first field fits SavedModel or GraphDef."""
    return name.lower().endswith(".pb") and bool(_roots(name, head[:1]))


def scan_tensorflow(inp: Input, ctx: ScanContext) -> str | bool:
    """Walk the graph and its functions under every reading that parses; report MG350."""
    base = inp.name.rsplit("/", 1)[-1].lower()
    if base == KERAS_METADATA:
        return _scan_keras_metadata(inp, ctx)
    head = inp.read_at(0, 1)
    held: list[str] = []
    hits: dict[tuple[str, str], None] = {}  # (where, op), in order, once
    problem: _Malformed | None = None
    limited = False
    for root in _roots(inp.name, head):
        found: list[tuple[str, str]] = []
        try:
            for where, op in _ops(_Wire(inp), root, 0, inp.size, ()):
                if op in UNSAFE_OPS:
                    found.append((where, op))
        except _Malformed as exc:
            problem = exc  # this reading fails to parse: nothing of it would run
            continue
        except _TooMany:
            # What was seen before the cap counts, as for every other cap.
            ctx.limit_reached("TensorFlow graph fields", _MAX_FIELDS)
            limited = True
        held.append(root)
        hits.update(dict.fromkeys(found))
        if limited:
            break
    if not held:
        if base != SAVED_MODEL:
            return False  # another .pb (a config, a damaged file): no graph to run
        ctx.report(
            FORMAT_CLAIM_UNMET,
            f"{inp.name}: named as a TensorFlow SavedModel but does not parse as one ({problem})",
            evidence="tensorflow:SavedModel",
        )
    for where, op in hits:
        ctx.report(
            TENSORFLOW_UNSAFE_OP,
            f"{where} runs op {op}, which {UNSAFE_OPS[op]}",
            evidence=f"{op}:{where}",
        )
    saved = base == SAVED_MODEL or head == b"\x08" or _GRAPH not in held
    return "tensorflow-savedmodel" if saved else "tensorflow-graph"


def _scan_keras_metadata(inp: Input, ctx: ScanContext) -> str | bool:
    """tf.keras's ``keras_metadata.pb``: each saved object's JSON config, scanned as Keras's.

    tf.keras.models.load_model rebuilds layers from these configs, Lambda layers
    from the marshalled bytecode they carry. Every string field of a saved object
    that holds a JSON object is scanned, whatever its field number.
    """
    from modelguard.scan.keras import scan_keras_layer_config

    wire = _Wire(inp)
    try:
        for number, kind, lo, hi in wire.fields_of(0, inp.size):
            if number != 1 or kind != 2:
                continue
            for _, inner_kind, text_lo, text_hi in wire.fields_of(lo, hi):
                if inner_kind != 2 or text_hi == text_lo or wire.byte(text_lo) != ord("{"):
                    continue
                if text_hi - text_lo > ctx.limits.max_header_bytes:
                    ctx.limit_reached("Keras metadata", ctx.limits.max_header_bytes)
                    continue
                raw = inp.read_at(text_lo, text_hi - text_lo)
                scan_keras_layer_config(raw, ctx, source=KERAS_METADATA)
    except _Malformed as exc:
        ctx.report(
            FORMAT_CLAIM_UNMET,
            f"{inp.name}: named as tf.keras metadata but does not parse as it ({exc})",
            evidence="tensorflow:keras_metadata",
        )
    except _TooMany:
        ctx.limit_reached("TensorFlow graph fields", _MAX_FIELDS)
    return "keras-savedmodel-metadata"


def _ops(
    wire: _Wire, message: str, start: int, end: int, path: tuple[str, ...]
) -> Iterator[tuple[str, str]]:
    """(where, op name) of every NodeDef under a message of type ``message``."""
    if message == _NODE:
        name = op = ""
        for number, kind, lo, hi in wire.fields_of(start, end):
            if kind == 2 and number in (_NODE_NAME, _NODE_OP):
                text = wire.text(lo, hi)
                if number == _NODE_NAME:
                    name = text
                else:
                    op = text
        yield "/".join((*path, f"node {name!r}")), op
        return
    children = _CHILDREN[message]
    count = 0
    for number, kind, lo, hi in wire.fields_of(start, end):
        child = children.get(number)
        if child is None or kind != 2:
            continue  # protobuf skips a field of the wrong wire type as unknown
        label = path
        if child == _FUNCTION:
            label = (*path, f"function {_function_name(wire, lo, hi) or count}")
            count += 1
        elif child == _META_GRAPH:
            label = (*path, f"meta graph {count}")
            count += 1
        yield from _ops(wire, child, lo, hi, label)


def _function_name(wire: _Wire, start: int, end: int) -> str | None:
    """A FunctionDef's name: its signature's (an OpDef) first field."""
    for number, kind, lo, hi in wire.fields_of(start, end):
        if number == 1 and kind == 2:  # signature
            for inner, inner_kind, name_lo, name_hi in wire.fields_of(lo, hi):
                if inner == 1 and inner_kind == 2:
                    return repr(wire.text(name_lo, name_hi))
            return None
    return None

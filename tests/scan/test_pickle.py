"""The pickle scanner: malicious, benign and malformed streams of every protocol.

Pickles are assembled by hand (the helpers below) or made with ``pickle.dumps``
of harmless objects. Nothing is ever unpickled here.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard.findings import Finding, Location, Severity
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import scan_readings
from modelguard.scan.pickle import plausible_pickle, scan_pickle_input, walk_pickle
from modelguard.scan.pickle.globals import Verdict

# ---- assembly helpers ------------------------------------------------------------------
STOP = b"."
MARK = b"("
REDUCE = b"R"
BUILD = b"b"
TUPLE = b"t"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
NONE = b"N"
STACK_GLOBAL = b"\x93"
MEMOIZE = b"\x94"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
OBJ = b"o"
TUPLE1 = b"\x85"


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def glob(module: str, name: str, opcode: bytes = b"c") -> bytes:
    return opcode + module.encode() + b"\n" + name.encode() + b"\n"


def sbu(text: str) -> bytes:  # SHORT_BINUNICODE
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def bu(text: str) -> bytes:  # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def bu8(text: str) -> bytes:  # BINUNICODE8
    raw = text.encode()
    return b"\x8d" + struct.pack("<Q", len(raw)) + raw


def string0(text: str) -> bytes:  # protocol 0 STRING
    return b"S" + repr(text).encode() + b"\n"


def unicode0(text: str) -> bytes:  # protocol 0 UNICODE
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def sbs(text: str) -> bytes:  # SHORT_BINSTRING
    raw = text.encode()
    return b"U" + bytes([len(raw)]) + raw


def binstring(text: str) -> bytes:
    raw = text.encode()
    return b"T" + struct.pack("<i", len(raw)) + raw


def binbytes(raw: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(raw)) + raw


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def call_with_string(arg: str) -> bytes:
    """Arguments tuple ('arg',) then REDUCE."""
    return sbu(arg) + TUPLE1 + REDUCE


# ---- scanning helpers --------------------------------------------------------------------
def scan(
    data: bytes, *, limits: Limits | None = None, allow: frozenset[str] = frozenset()
) -> list[Finding]:
    ctx = ScanContext(location=Location("m.pkl"), settings=ScanSettings(limits or Limits(), allow))
    scan_pickle_input(Input(io.BytesIO(data), len(data), "m.pkl"), ctx)
    return ctx.findings


def hits(findings: list[Finding]) -> set[tuple[str, str | None]]:
    return {(f.rule_id, f.evidence) for f in findings}


def rules(findings: list[Finding]) -> set[str]:
    return {f.rule_id for f in findings}


def assert_clean(findings: list[Finding]) -> None:
    serious = [f for f in findings if f.severity >= Severity.MEDIUM]
    assert serious == [], serious


class _Reduces:
    """Harmless to build: pickling only records (callable, args)."""

    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


# ---- malicious streams ---------------------------------------------------------------------
def test_protocol0_global_os_system_reduce() -> None:
    data = glob("os", "system") + MARK + string0("id") + TUPLE + REDUCE + STOP
    findings = scan(data)
    assert ("MG101", "os.system") in hits(findings)
    mg101 = next(f for f in findings if f.rule_id == "MG101")
    assert mg101.severity is Severity.CRITICAL
    assert mg101.location.offset == 0


@pytest.mark.parametrize("protocol", range(6))
def test_reduce_to_os_system_every_protocol(protocol: int) -> None:
    data = pickle.dumps(_Reduces(os.system, ("id",)), protocol=protocol)
    findings = scan(data)
    assert ("MG101", f"{os.system.__module__}.system") in hits(findings)
    assert "MG105" not in rules(findings)


@pytest.mark.parametrize("protocol", range(6))
def test_builtins_eval_every_protocol(protocol: int) -> None:
    data = pickle.dumps(_Reduces(eval, ("1+1",)), protocol=protocol)
    # protocols < 3 write the py2 spelling, which pickle maps back to builtins
    expected = "__builtin__.eval" if protocol < 3 else "builtins.eval"
    assert ("MG101", expected) in hits(scan(data))


@pytest.mark.parametrize(
    ("put", "get"),
    [
        (binput(0), binget(0)),
        (b"r" + struct.pack("<I", 7), b"j" + struct.pack("<I", 7)),  # LONG_BINPUT / LONG_BINGET
        (b"p3\n", b"g3\n"),  # text PUT / GET
    ],
)
def test_stack_global_operands_through_memo(put: bytes, get: bytes) -> None:
    # module string memoised and popped, then fetched back for STACK_GLOBAL
    data = proto(4) + sbu("os") + put + b"0" + get + sbu("system") + STACK_GLOBAL
    data += call_with_string("id") + STOP
    findings = scan(data)
    assert ("MG101", "os.system") in hits(findings)
    assert "MG105" not in rules(findings)


def test_stack_global_operands_through_memoize() -> None:
    data = proto(4) + sbu("subprocess") + MEMOIZE + sbu("getoutput") + MEMOIZE + b"0" + b"0"
    data += binget(0) + binget(1) + STACK_GLOBAL + call_with_string("id") + STOP
    assert ("MG101", "subprocess.getoutput") in hits(scan(data))


@pytest.mark.parametrize(
    "encode", [sbu, bu, bu8, string0, unicode0, sbs, binstring, lambda s: binbytes(s.encode())]
)
def test_stack_global_strings_from_any_string_opcode(encode: object) -> None:
    assert callable(encode)
    data = proto(4) + encode("os") + encode("system") + STACK_GLOBAL
    data += call_with_string("id") + STOP
    assert ("MG101", "os.system") in hits(scan(data))


def test_stack_global_with_computed_operand_is_unresolved() -> None:
    # module comes from a call (_codecs.encode, allowlisted) instead of a string
    data = proto(4) + glob("_codecs", "encode") + MARK + sbu("os") + sbu("latin1") + TUPLE
    data += REDUCE + sbu("system") + STACK_GLOBAL + call_with_string("id") + STOP
    findings = scan(data)
    assert ("MG104", "STACK_GLOBAL:unresolved") in hits(findings)
    assert any(f.rule_id == "MG104" and "unresolved" in (f.evidence or "") for f in findings)


def test_stack_global_with_long_string_is_unresolved() -> None:
    data = proto(4) + bu("m" * 5000) + sbu("f") + STACK_GLOBAL + STOP
    assert ("MG104", "STACK_GLOBAL:unresolved") in hits(scan(data))


def test_inst_calls_its_global() -> None:
    data = MARK + string0("id") + glob("os", "system", b"i") + STOP
    assert ("MG101", "os.system") in hits(scan(data))
    unknown = MARK + string0("x") + glob("mypkg", "run", b"i") + STOP
    findings = scan(unknown)
    assert ("MG103", "mypkg.run") in hits(findings)
    assert ("MG102", "mypkg.run") not in hits(findings)  # the call subsumes the import


def test_obj_calls_first_item_after_mark() -> None:
    data = proto(1) + MARK + glob("mypkg", "run") + string0("x") + OBJ + STOP
    findings = scan(data)
    assert ("MG103", "mypkg.run") in hits(findings)
    danger = proto(1) + MARK + glob("nt", "system") + string0("x") + OBJ + STOP
    assert ("MG101", "nt.system") in hits(scan(danger))


def test_newobj_and_newobj_ex_instantiate_unknown_class() -> None:
    newobj = proto(2) + glob("mypkg", "Net") + EMPTY_TUPLE + NEWOBJ + STOP
    findings = scan(newobj)
    assert ("MG102", "mypkg.Net") in hits(findings)
    assert "MG103" not in rules(findings)
    newobj_ex = proto(4) + sbu("mypkg") + sbu("Net") + STACK_GLOBAL + EMPTY_TUPLE + EMPTY_DICT
    newobj_ex += NEWOBJ_EX + STOP
    assert ("MG102", "mypkg.Net") in hits(scan(newobj_ex))
    dangerous = proto(4) + sbu("subprocess") + sbu("Popen") + STACK_GLOBAL
    dangerous += sbu("id") + TUPLE1 + EMPTY_DICT + NEWOBJ_EX + STOP
    assert ("MG101", "subprocess.Popen") in hits(scan(dangerous))


def test_build_setstate_on_unknown_class() -> None:
    data = proto(2) + glob("evil.payload", "Trigger") + EMPTY_TUPLE + NEWOBJ
    data += sbu("state") + BUILD + STOP
    findings = scan(data)
    assert ("MG102", "evil.payload.Trigger") in hits(findings)
    assert max(f.severity for f in findings) >= Severity.MEDIUM


def test_build_on_imported_global_itself() -> None:
    # BUILD with slot state on a class sets attributes on the class: monkeypatching
    data = proto(2) + glob("collections", "OrderedDict") + NONE + EMPTY_DICT + b"\x86"
    data += BUILD + STOP
    assert ("MG104", "BUILD:collections.OrderedDict") in hits(scan(data))


@pytest.mark.parametrize(
    ("ext", "evidence"),
    [
        (b"\x82\x05", "EXT1:5"),
        (b"\x83" + struct.pack("<H", 300), "EXT2:300"),
        (b"\x84" + struct.pack("<i", 70000), "EXT4:70000"),
    ],
)
def test_ext_opcodes_are_low_because_the_registry_is_empty(ext: bytes, evidence: str) -> None:
    data = proto(2) + ext + call_with_string("id") + STOP
    # The real loader stops at the opcode: nothing after it can run.
    with pytest.raises(ValueError, match="unregistered extension code"):
        pickle.loads(data)
    findings = scan(data)
    assert ("MG110", evidence) in hits(findings)
    assert all(f.severity <= Severity.LOW for f in findings), hits(findings)


def test_registering_an_extension_code_is_dangerous() -> None:
    # What a pickle needs to make its own EXT codes resolve: copyreg.add_extension.
    data = proto(2) + glob("copyreg", "add_extension") + MARK + string0("os")
    data += string0("system") + b"K\x05" + TUPLE + REDUCE + b"0" + b"\x82\x05"
    data += call_with_string("id") + STOP
    assert ("MG101", "copyreg.add_extension") in hits(scan(data))


@pytest.mark.parametrize(
    ("module", "name"),
    [("posix", "system"), ("nt", "system"), ("__builtin__", "eval"), ("_pickle", "loads")],
)
def test_aliases(module: str, name: str) -> None:
    data = glob(module, name) + MARK + string0("x") + TUPLE + REDUCE + STOP
    assert ("MG101", f"{module}.{name}") in hits(scan(data))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("torch._utils", "os.system"),
        ("numpy.testing._private.utils", "os.system"),
        ("collections", "OrderedDict.__init__.__globals__"),
    ],
)
def test_dotted_qualname_through_allowed_module(module: str, name: str) -> None:
    data = proto(4) + sbu(module) + sbu(name) + STACK_GLOBAL + call_with_string("id") + STOP
    assert ("MG101", f"{module}.{name}") in hits(scan(data))


def test_getattr_gadget_and_call_of_call_result() -> None:
    # getattr(collections.OrderedDict, "fromkeys") then call the result
    data = proto(2) + glob("builtins", "getattr") + MARK + glob("collections", "OrderedDict")
    data += sbu("fromkeys") + TUPLE + REDUCE + MARK + sbu("x") + TUPLE + REDUCE + STOP
    found = hits(scan(data))
    assert ("MG101", "builtins.getattr") in found
    assert ("MG104", "call-of-result:builtins.getattr") in found


def test_reduce_on_plain_data_is_unresolved() -> None:
    data = proto(2) + sbu("os.system") + EMPTY_TUPLE + REDUCE + STOP
    assert ("MG104", "call-of-data") in hits(scan(data))


def test_unknown_global_called_is_mg103() -> None:
    data = pickle.dumps(_Reduces(collections.UserDict, ({"a": 1},)), protocol=4)
    findings = scan(data)
    assert ("MG103", "collections.UserDict") in hits(findings)
    assert next(f for f in findings if f.rule_id == "MG103").severity is Severity.HIGH


def test_harmless_stdlib_constructor_is_judged_by_what_it_is_given() -> None:
    # defaultdict is harmless; the factory it is given is judged on its own import
    clean = pickle.dumps(collections.defaultdict(list, a=[1]), protocol=4)
    assert scan(clean) == []
    hostile = pickle.dumps(_Reduces(collections.defaultdict, (os.system,)), protocol=4)
    assert ("MG101", f"{os.system.__module__}.system") in hits(scan(hostile))


def test_numpy_random_state_is_clean_and_its_ctor_argument_is_called() -> None:
    assert scan(pickle.dumps(np.random.default_rng(0), protocol=4)) == []
    assert scan(pickle.dumps(np.random.RandomState(0), protocol=2)) == []
    # __generator_ctor calls its second argument with its first
    data = proto(4) + sbu("numpy.random._pickle") + sbu("__generator_ctor") + STACK_GLOBAL
    data += sbu("id") + sbu("mypkg") + sbu("run") + STACK_GLOBAL + b"\x86" + REDUCE + STOP
    assert ("MG103", "mypkg.run") in hits(scan(data))


def test_second_pickle_after_stop_carries_payload() -> None:
    benign = pickle.dumps({"w": [1, 2, 3]}, protocol=2)
    payload = pickle.dumps(_Reduces(os.system, ("id",)), protocol=2)
    findings = scan(benign + payload)
    assert ("MG107", "multiple-streams") in hits(findings)
    mg101 = next(f for f in findings if f.rule_id == "MG101")
    assert mg101.location.offset is not None and mg101.location.offset >= len(benign)
    assert "MG106" not in rules(findings)


def test_payload_hidden_in_trailing_data() -> None:
    benign = pickle.dumps([1, 2], protocol=2)
    payload = pickle.dumps(_Reduces(os.system, ("id",)), protocol=4)
    findings = scan(benign + b"\x00\xffjunk that is not a pickle" + payload)
    found = hits(findings)
    assert ("MG106", "trailing-data") in found
    assert ("MG101", f"{os.system.__module__}.system") in found


def test_text_payload_hidden_in_trailing_data() -> None:
    benign = pickle.dumps([1, 2], protocol=2)
    findings = scan(benign + b"\x00\x01" + glob("os", "system") + b"garbage")
    assert ("MG101", "os.system") in hits(findings)


def test_plain_trailing_bytes_are_low() -> None:
    findings = scan(pickle.dumps([1], protocol=3) + b"\x00\x00 trailing text")
    assert hits(findings) == {("MG106", "trailing-data")}
    assert findings[0].severity is Severity.LOW


# ---- benign streams --------------------------------------------------------------------------
_BENIGN_OBJECTS: list[object] = [
    {"a": [1, 2.5, "s", b"bytes", (1, 2, 3), None, True, False, 2**100, -7]},
    collections.OrderedDict([("layer.weight", [0.1, 0.2]), ("layer.bias", (0.0,))]),
    [[[[{"deep": {"er": [set(), frozenset({1}), bytearray(b"x"), 1j]}}]]]],
    ("unicode ✓", "x" * 5000, b"y" * 5000),
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.float64(1.5),
    np.dtype("int16"),
    {"arr": np.zeros((2, 2)), "odict": collections.OrderedDict(k=np.ones(3))},
]


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("index", range(len(_BENIGN_OBJECTS)))
def test_benign_objects_every_protocol(protocol: int, index: int) -> None:
    findings = scan(pickle.dumps(_BENIGN_OBJECTS[index], protocol=protocol))
    assert findings == []


def test_memo_shared_references() -> None:
    shared = [1, 2]
    assert scan(pickle.dumps({"a": shared, "b": shared, "c": [shared]}, protocol=4)) == []


def _torch_data_pkl(obj: object) -> bytes:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        return archive.read(name)


def test_torch_state_dict_is_clean() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2)
    )
    state = model.state_dict()
    state["half"] = torch.zeros(2, dtype=torch.float16)
    state["param"] = torch.nn.Parameter(torch.ones(3))
    state["meta"] = {"epoch": 3, "lr": 0.1, "size": torch.Size([1, 2])}
    findings = scan(_torch_data_pkl(state))
    assert findings == []


def test_torch_full_model_reports_its_classes_as_unknown() -> None:
    torch = pytest.importorskip("torch")
    findings = scan(_torch_data_pkl(torch.nn.Linear(2, 2)))
    assert ("MG102", "torch.nn.modules.linear.Linear") in hits(findings)
    assert all(f.severity < Severity.HIGH for f in findings)


def test_py2_style_protocol2_names_are_clean() -> None:
    data = proto(2) + glob("__builtin__", "set") + MARK + b"K\x01" + b"]" + TUPLE + REDUCE
    data += glob("copy_reg", "_reconstructor") + b"0" + STOP
    assert scan(data) == []


def test_policy_allow_globals_silences_unknown_but_not_dangerous() -> None:
    data = proto(2) + glob("mypkg.nets", "Net") + EMPTY_TUPLE + NEWOBJ + b"0"
    data += glob("os", "system") + b"0" + NONE + STOP
    findings = scan(data, allow=frozenset({"mypkg.nets.Net", "os.system"}))
    assert hits(findings) == {("MG101", "os.system")}


def test_findings_deduplicate_by_global() -> None:
    one = glob("os", "system") + b"0"
    findings = scan(proto(2) + one * 5 + NONE + STOP)
    assert [f.rule_id for f in findings] == ["MG101"]


# ---- malformed streams ---------------------------------------------------------------------
_SMALL = pickle.dumps({"k": [1, "two", 3.0, b"four"], "o": _Reduces(os.system, ("id",))}, 4)


@pytest.mark.parametrize("cut", range(len(_SMALL)))
def test_truncated_at_every_offset(cut: int) -> None:
    findings = scan(_SMALL[:cut])
    assert "MG105" in rules(findings)
    assert "MG004" not in rules(findings)


def test_invalid_opcode() -> None:
    findings = scan(proto(2) + b"K\x01\xff" + STOP)
    assert any(f.rule_id == "MG105" and "invalid opcode 0xff" in f.message for f in findings)


@pytest.mark.parametrize(
    "data",
    [
        proto(2) + REDUCE + STOP,  # nothing to call
        proto(2) + b"e" + STOP,  # APPENDS without MARK
        proto(2) + STOP,  # STOP on an empty stack
        proto(2) + b"a" + STOP,
        proto(2) + b"\x87" + STOP,  # TUPLE3
        proto(2) + MARK + OBJ + STOP,
    ],
)
def test_stack_underflow(data: bytes) -> None:
    findings = scan(data)
    assert any(f.rule_id == "MG105" and "underflow" in f.message for f in findings)


def test_missing_stop() -> None:
    findings = scan(proto(2) + b"K\x01")
    assert any(f.rule_id == "MG105" and "before STOP" in f.message for f in findings)


def test_protocol_above_five() -> None:
    findings = scan(b"\x80\x06" + NONE + STOP)
    assert any(f.rule_id == "MG105" and "protocol 6" in f.message for f in findings)


def test_memo_get_before_put() -> None:
    assert "MG105" in rules(scan(proto(2) + binget(9) + STOP))


@pytest.mark.parametrize(
    "data",
    [
        proto(4) + b"\x8d" + struct.pack("<Q", 2**60) + b"x" + STOP,  # BINUNICODE8
        proto(4) + b"\x8e" + struct.pack("<Q", 2**63) + STOP,  # BINBYTES8
        proto(5) + b"\x96" + struct.pack("<Q", 2**64 - 1) + STOP,  # BYTEARRAY8
        proto(4) + b"\x95" + struct.pack("<Q", 2**62) + NONE + STOP,  # FRAME
        proto(2) + b"T" + struct.pack("<i", -5) + STOP,  # negative BINSTRING
    ],
)
def test_huge_or_negative_declared_lengths(data: bytes) -> None:
    findings = scan(data)
    assert "MG105" in rules(findings)


def test_text_pickle_with_bad_arguments() -> None:
    assert "MG105" in rules(scan(b"Inot a number\n."))
    assert "MG105" in rules(scan(b"Sunquoted\n."))
    assert "MG105" in rules(scan(b"cnot a module\nname\n."))


def test_empty_input() -> None:
    assert rules(scan(b"")) == {"MG105"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    for finding in scan(data):
        assert finding.rule_id.startswith("MG1") or finding.rule_id == "MG002"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=200))
def test_mutated_pickles_never_raise(patch: bytes, where: int) -> None:
    data = bytearray(_SMALL)
    at = where % len(data)
    data[at : at + len(patch)] = patch
    for finding in scan(bytes(data)):
        assert finding.rule_id.startswith("MG1") or finding.rule_id == "MG002"


# ---- caps -------------------------------------------------------------------------------------
def _cap_hits(data: bytes, **caps: int) -> list[Finding]:
    return [f for f in scan(data, limits=Limits(**caps)) if f.rule_id == "MG002"]


def test_cap_opcodes() -> None:
    data = pickle.dumps(list(range(50)), protocol=2)
    assert _cap_hits(data, max_pickle_opcodes=10)
    assert not _cap_hits(data, max_pickle_opcodes=1000)


def test_cap_memo_entries() -> None:
    data = pickle.dumps([[i] for i in range(20)], protocol=4)
    assert _cap_hits(data, max_memo_entries=5)


def test_cap_stack_depth() -> None:
    nested: object = 1
    for _ in range(30):
        nested = [nested]
    assert _cap_hits(pickle.dumps(nested, protocol=2), max_stack_depth=10)
    assert _cap_hits(proto(2) + NONE * 50 + STOP, max_stack_depth=10)


def test_cap_pickle_streams() -> None:
    data = pickle.dumps(1, protocol=2) * 5
    assert _cap_hits(data, max_pickle_streams=3)
    assert not _cap_hits(data, max_pickle_streams=5)


def test_cap_string_length_skips_without_reading() -> None:
    data = pickle.dumps(b"z" * 100_000, protocol=4)
    assert _cap_hits(data, max_pickle_string=1000)
    assert scan(data) == []


def test_payload_after_cap_is_not_silently_passed() -> None:
    data = pickle.dumps([0] * 100 + [_Reduces(os.system, ("id",))], protocol=2)
    findings = scan(data, limits=Limits(max_pickle_opcodes=20))
    assert "MG002" in rules(findings)
    assert max(f.severity for f in findings) >= Severity.HIGH


# ---- the reusable walker ----------------------------------------------------------------------
def test_walk_pickle_at_offset_reports_end_and_imports() -> None:
    first = pickle.dumps(np.arange(3), protocol=2)
    second = pickle.dumps(_Reduces(os.system, ("id",)), protocol=2)
    raw = b"HEADER" + first + second + b"\x00" * 64  # raw storage bytes after the pickles
    ctx = ScanContext(location=Location("legacy.pt"))
    stream = io.BytesIO(raw)
    one = walk_pickle(stream, ctx, start=6, limit=len(raw))
    assert one.end == 6 + len(first)
    assert one.complete and not one.truncated
    assert {g.dotted for g in one.imports} >= {"numpy.ndarray", "numpy.dtype"}
    assert all(g.verdict is Verdict.SAFE for g in one.imports)
    two = walk_pickle(stream, ctx, start=one.end, limit=None)
    assert two.end == 6 + len(first) + len(second)
    (imported,) = two.imports
    assert imported.verdict is Verdict.DANGEROUS and imported.called
    assert imported.offset >= one.end
    assert rules(ctx.findings) == {"MG101"}


def test_walk_pickle_limit_truncates() -> None:
    data = pickle.dumps({"a": 1}, protocol=2)
    ctx = ScanContext(location=Location("x"))
    result = walk_pickle(io.BytesIO(data), ctx, start=0, limit=len(data) - 1)
    assert result.end is None and result.truncated
    assert rules(ctx.findings) == {"MG105"}


# ---- sniffing -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        b"lorem ipsum dolor sit amet\n",
        b"class Foo:\n    pass\n",
        b"I am a text file\n",
        b"id,name\n1,foo\n",
        b"c\nc\n",
        b"Perhaps this is prose.\nSecond line.\n",
        b"(hello)\n",
        b"",
    ],
)
def test_text_is_not_a_pickle(text: bytes) -> None:
    assert not plausible_pickle(text)


@pytest.mark.parametrize("protocol", range(6))
def test_pickles_are_plausible(protocol: int) -> None:
    assert plausible_pickle(pickle.dumps({"a": [1, 2]}, protocol=protocol))
    assert plausible_pickle(pickle.dumps(_Reduces(os.system, ("x",)), protocol=protocol))


def test_text_starting_with_an_opcode_is_no_reading_but_pickles_are() -> None:
    text = b"lorem ipsum\n"
    assert readings(text) == []
    assert readings(pickle.dumps([1, "a"], protocol=0)) == ["pickle"]


def readings(data: bytes) -> list[str]:
    inp = Input(io.BytesIO(data), len(data), "t")
    return scan_readings(inp, ScanContext(location=Location("t")))


@pytest.mark.parametrize("extra", [1, 10, 5000])
def test_walk_pickle_limit_beyond_a_short_stream(extra: int) -> None:
    # the caller's limit is trusted (no seek to the end); a short stream is truncation
    data = pickle.dumps({"a": b"q" * 2000}, protocol=4)
    for cut in (len(data) - 1, len(data) // 2, 3):
        ctx = ScanContext(location=Location("x"))
        result = walk_pickle(io.BytesIO(data[:cut]), ctx, start=0, limit=len(data) + extra)
        assert result.end is None and result.truncated
        assert rules(ctx.findings) == {"MG105"}


# ---- joblib: raw array bytes inside the pickle ---------------------------------------------
def _joblib_dump(obj: object, protocol: int | None = None) -> bytes:
    joblib = pytest.importorskip("joblib")
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, protocol=protocol)
    return buffer.getvalue()


_JOBLIB_ARRAYS: dict[str, object] = {
    "int32": np.arange(5, dtype=np.int32),
    "fortran": np.asfortranarray(np.ones((3, 2))),
    "unicode": np.array(["ab", "c"]),
    "bytes": np.array([b"xy"]),
    "bool": np.array([True, False]),
    "empty": np.zeros((0, 4)),
    "scalar": np.array(3.5),
    "structured": np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]),
    "structured-object": np.zeros(2, dtype=[("a", "i4"), ("b", "O")]),
    "datetime": np.array(["2020-01-01"], dtype="M8[D]"),
    "complex": np.ones(3, dtype=np.complex64),
    "object": np.array([1, "x", None], dtype=object),
    "nested-object": np.array([np.array([1, None], dtype=object)], dtype=object),
    "large": np.zeros(200_000),
}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_joblib_arrays_are_skipped_not_malformed(protocol: int) -> None:
    data = _joblib_dump({**_JOBLIB_ARRAYS, "after": [1, 2, "end"]}, protocol)
    assert scan(data) == []


@pytest.mark.parametrize("name", sorted(_JOBLIB_ARRAYS))
def test_joblib_each_array_kind(name: str) -> None:
    findings = scan(_joblib_dump({name: _JOBLIB_ARRAYS[name], "after": 1}))
    if "object" in name:
        # pickle.load reads the object array's nested pickle in the outer stream's
        # context (memo keys cross): garbage calls, listed low.
        assert_clean(findings)
        assert {f.rule_id for f in findings} <= {"MG102", "MG103", "MG104"}
    else:
        assert findings == []


def test_joblib_object_array_payload_is_found() -> None:
    data = _joblib_dump({"o": np.array([_Reduces(os.system, ("id",)), 1], dtype=object)})
    assert ("MG101", f"{os.system.__module__}.system") in hits(scan(data))


def test_joblib_truncated_array_bytes() -> None:
    data = _joblib_dump({"a": np.zeros(1000)})
    findings = scan(data[: len(data) // 2])
    assert "MG105" in rules(findings)


def _joblib_by_hand(array_bytes: bytes, *, aligned: bool) -> bytes:
    """A NumpyArrayWrapper for a uint8 array of len(array_bytes), then the bytes."""
    data = proto(4) + sbu("joblib.numpy_pickle") + sbu("NumpyArrayWrapper") + STACK_GLOBAL
    data += EMPTY_TUPLE + NEWOBJ + EMPTY_DICT + MARK
    data += sbu("shape") + b"J" + struct.pack("<i", len(array_bytes)) + TUPLE1
    data += sbu("dtype") + sbu("numpy") + sbu("dtype") + STACK_GLOBAL
    data += sbu("u1") + b"\x89\x88\x87" + REDUCE  # dtype("u1", False, True)
    data += sbu("order") + sbu("C")
    if aligned:
        data += sbu("numpy_array_alignment_bytes") + b"K\x10"
    data += b"u" + BUILD
    if aligned:
        data += b"\x03" + b"\xff" * 3  # padding length, then padding
    return data + array_bytes + STOP


def test_joblib_hand_built_wrapper_is_clean() -> None:
    assert scan(_joblib_by_hand(b"\x00" * 64, aligned=True)) == []
    assert scan(_joblib_by_hand(b"\x07" * 64, aligned=False)) == []


def test_joblib_array_bytes_hiding_a_payload_for_pickle_load() -> None:
    # joblib.load reads these bytes as array data; pickle.load would execute them
    payload = glob("os", "system") + MARK + string0("id") + TUPLE + REDUCE + b"0"
    findings = scan(_joblib_by_hand(payload, aligned=False))
    assert ("MG101", "os.system") in hits(findings)
    assert "MG105" not in rules(findings)


def test_memoised_text_beyond_budget_becomes_unresolved(monkeypatch: pytest.MonkeyPatch) -> None:
    # modelguard.scan is also the public scan() function, so patch by module object
    monkeypatch.setattr(sys.modules[walk_pickle.__module__], "_MEMO_TEXT_BUDGET", 150)
    module = "a" * 70 + ".os"  # long enough to count against the budget
    early = proto(4) + sbu(module) + MEMOIZE + b"0"  # memo 0: kept
    late = sbu("b" * 100) + MEMOIZE + b"0" + sbu(module) + MEMOIZE + b"0"  # memo 2: over budget
    data = early + late + binget(0) + sbu("x") + STACK_GLOBAL + b"0"
    data += binget(2) + sbu("y") + STACK_GLOBAL + b"0" + NONE + STOP
    found = hits(scan(data))
    assert ("MG101", f"{module}.x") in found  # resolved through the memo
    assert ("MG104", "STACK_GLOBAL:unresolved") in found  # not guessed once over budget

"""The safetensors scanner: real files stay clean, every header defect is reported.

Malformed files are assembled by hand; the reference library is used to make
benign files and, for agreement, to confirm that what we flag it rejects too.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as np_save
from safetensors.torch import save as torch_save

import modelguard
from modelguard.findings import Finding, Location
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import dispatch
from modelguard.scan.safetensors import DTYPE_BITS, scan_safetensors


def scan(data: bytes, *, limits: Limits | None = None, direct: bool = True) -> list[Finding]:
    ctx = ScanContext(location=Location("m.safetensors"), settings=ScanSettings(limits or Limits()))
    inp = Input(io.BytesIO(data), len(data), "m.safetensors")
    if direct:
        scan_safetensors(inp, ctx)
    else:
        dispatch(inp, ctx)
    return ctx.findings


def build(header: object, data: bytes = b"", *, raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def pairs(findings: list[Finding]) -> list[tuple[str, str | None]]:
    return [(f.rule_id, f.evidence) for f in findings]


def reference_accepts(data: bytes) -> bool:
    try:
        safetensors.deserialize(data)
    except Exception:  # noqa: BLE001 - the library raises its own untyped error
        return False
    return True


# ---- benign ----------------------------------------------------------------------------
def benign_numpy() -> bytes:
    return np_save(
        {
            "weight": np.ones((3, 4), dtype=np.float32),
            "bias": np.arange(3, dtype=np.int64),
            "empty": np.zeros((0, 2), dtype=np.float16),
            "mask": np.array([True, False]),
        },
        metadata={"format": "np", "author": "test"},
    )


def benign_torch() -> bytes:
    return torch_save(
        {
            "w": torch.randn(4, 4),
            "bf": torch.zeros(3, dtype=torch.bfloat16),
            "f8a": torch.zeros(5, dtype=torch.float8_e4m3fn),
            "f8b": torch.zeros(2, dtype=torch.float8_e5m2),
            "u16": torch.zeros(2, dtype=torch.uint16),
            "u64": torch.zeros(1, dtype=torch.uint64),
            "c": torch.zeros(2, dtype=torch.complex64),
            "scalar": torch.tensor(1.5, dtype=torch.float64),
        },
        metadata={"format": "pt"},
    )


@pytest.mark.parametrize("make", [benign_numpy, benign_torch, lambda: torch_save({})])
def test_library_files_have_no_findings(make: object) -> None:
    data = make()  # type: ignore[operator]
    assert reference_accepts(data)
    assert scan(data, direct=False) == []


def test_file_on_disk_reports_its_format(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(benign_torch())
    report = modelguard.scan(path, root=tmp_path, workers=1)
    assert report.artifacts[0].format == "safetensors"
    assert report.findings == ()


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes"),
    [("F4", [4], 2), ("F4", [2, 3], 3), ("F6_E2M3", [4], 3), ("F6_E3M2", [8], 6)],
)
def test_sub_byte_dtypes_sized_in_bits(dtype: str, shape: list[int], nbytes: int) -> None:
    data = build({"t": tensor(dtype, shape, 0, nbytes)}, b"\0" * nbytes)
    assert reference_accepts(data)
    assert scan(data) == []


def test_every_reference_dtype_is_known() -> None:
    for dtype, bits in DTYPE_BITS.items():
        count = 8  # a whole number of bytes for every width
        nbytes = count * bits // 8
        data = build({"t": tensor(dtype, [count], 0, nbytes)}, b"\0" * nbytes)
        assert reference_accepts(data), dtype
        assert scan(data) == [], dtype


# ---- header length and JSON ------------------------------------------------------------
def test_too_short_for_length() -> None:
    assert pairs(scan(b"\x10\0\0")) == [("MG310", "truncated-length")]


def test_header_length_past_end() -> None:
    data = struct.pack("<Q", 1000) + b"{}"
    assert pairs(scan(data)) == [("MG310", "header-length")]
    assert not reference_accepts(data)


def test_header_length_over_cap_is_a_limit() -> None:
    data = build({"t": tensor("U8", [4], 0, 4)}, b"\0" * 4)
    assert [f.rule_id for f in scan(data, limits=Limits(max_header_bytes=8))] == ["MG002"]


@pytest.mark.parametrize(
    ("raw", "evidence"),
    [
        (b'{"t": ', "json"),
        (b"\xff\xfe{}", "utf-8"),
        (b"[1, 2]", "not-object"),
        (b'"text"', "not-object"),
        (b"[" * 100_000 + b"]" * 100_000, "json"),
        (b"{}\x00", "json"),
    ],
)
def test_bad_json(raw: bytes, evidence: str) -> None:
    data = build(None, raw_header=raw)
    assert pairs(scan(data)) == [("MG310", evidence)]
    assert not reference_accepts(data)


def test_duplicate_keys_are_reported() -> None:
    raw = (
        b'{"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    )
    assert pairs(scan(build(None, b"\0", raw_header=raw))) == [("MG310", "duplicate-key:t")]


# ---- tensor entries --------------------------------------------------------------------
@pytest.mark.parametrize(
    "entry",
    [
        "not an object",
        {"dtype": "U8", "shape": [1]},
        {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]},
        {"dtype": "U8", "shape": [1.5], "data_offsets": [0, 1]},
        {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]},
        {"dtype": "U8", "shape": "1", "data_offsets": [0, 1]},
        {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 1]},
        {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]},
    ],
)
def test_malformed_tensor_entries(entry: object) -> None:
    data = build({"t": entry}, b"\0")
    assert pairs(scan(data)) == [("MG310", "t")]
    assert not reference_accepts(data)


@pytest.mark.parametrize("dtype", ["XX", "F8", "C128", "float32", 3, None])
def test_unknown_dtype(dtype: object) -> None:
    data = build({"t": {"dtype": dtype, "shape": [1], "data_offsets": [0, 1]}}, b"\0")
    findings = scan(data)
    assert [f.rule_id for f in findings] == ["MG312"]
    assert not reference_accepts(data)


@pytest.mark.parametrize(
    ("tensors", "data_size", "evidence"),
    [
        ({"a": tensor("U8", [4], 0, 8)}, 4, "a: out of range"),
        ({"a": tensor("U8", [4], 4, 0)}, 4, "a: out of range"),
        ({"a": tensor("F32", [2], 0, 4)}, 4, "a: size"),
        ({"a": tensor("F32", [1], 0, 8)}, 8, "a: size"),
        ({"a": tensor("F4", [3], 0, 2)}, 2, "a: size"),
        ({"a": tensor("F4", [10**40, 10**40], 0, 2)}, 2, "a: size"),
        (
            {"a": tensor("U8", [2], 0, 2), "b": tensor("U8", [1], 1, 2)},
            2,
            "b: overlap",
        ),
        (
            {"a": tensor("U8", [1], 0, 1), "b": tensor("U8", [1], 2, 3)},
            3,
            "b: gap",
        ),
        ({"a": tensor("U8", [1], 1, 2)}, 2, "a: gap"),
        ({"a": tensor("U8", [2], 0, 2)}, 6, "trailing-data"),
    ],
)
def test_bad_layout(tensors: dict[str, object], data_size: int, evidence: str) -> None:
    data = build(tensors, b"\0" * data_size)
    assert pairs(scan(data)) == [("MG311", evidence)]
    assert not reference_accepts(data)


def test_aliased_tensors_overlap() -> None:
    # Two names for the same bytes: readers that trust offsets alias the tensors.
    data = build({"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [4], 0, 4)}, b"\0" * 4)
    assert pairs(scan(data)) == [("MG311", "b: overlap")]


def test_too_many_tensors_is_a_limit() -> None:
    header = {f"t{i}": tensor("U8", [1], i, i + 1) for i in range(5)}
    data = build(header, b"\0" * 5)
    assert scan(data) == []
    assert [f.rule_id for f in scan(data, limits=Limits(max_tensors=4))] == ["MG002"]


# ---- metadata --------------------------------------------------------------------------
def test_metadata_values_must_be_strings() -> None:
    data = build({"__metadata__": {"ok": "yes", "n": 1, "d": {"x": "y"}}})
    assert sorted(pairs(scan(data))) == [("MG313", "d"), ("MG313", "n")]
    assert not reference_accepts(data)


def test_metadata_must_be_an_object() -> None:
    data = build({"__metadata__": ["a"]})
    assert pairs(scan(data)) == [("MG313", "not-object")]


def test_null_metadata_is_no_metadata() -> None:
    data = build({"__metadata__": None})
    assert reference_accepts(data)
    assert scan(data) == []


def test_metadata_beside_tensors_is_fine() -> None:
    data = build({"__metadata__": {"k": "v"}, "a": tensor("I16", [2], 0, 4)}, b"\0" * 4)
    assert reference_accepts(data)
    assert scan(data) == []


# ---- truncation and fuzzing ------------------------------------------------------------
@pytest.mark.parametrize("make", [benign_numpy, benign_torch])
def test_every_truncation_is_a_finding(make: object) -> None:
    data = make()  # type: ignore[operator]
    for cut in range(len(data)):
        findings = scan(data[:cut])
        assert findings, f"no finding when cut at {cut}"
        assert {f.rule_id for f in findings} <= {"MG310", "MG311"}, (cut, findings)


def test_tensor_data_is_never_read() -> None:
    data = benign_torch()
    (length,) = struct.unpack("<Q", data[:8])

    class Guarded(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            assert self.tell() < 8 + length, "read past the header"
            return super().read(size)

    ctx = ScanContext(location=Location("m.safetensors"))
    scan_safetensors(Input(Guarded(data), len(data), "m"), ctx)
    assert ctx.findings == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**70) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "__metadata__"]),
        st.fixed_dictionaries(
            {},
            optional={
                "dtype": st.sampled_from(["U8", "F32", "F4", "BOOL", "XX"]) | json_values,
                "shape": st.lists(st.integers(-1, 6), max_size=3) | json_values,
                "data_offsets": st.lists(st.integers(-1, 30), max_size=3) | json_values,
            },
        )
        | json_values,
    ),
    st.integers(0, 40),
)
def test_our_verdict_agrees_with_the_reference(header: dict[str, object], size: int) -> None:
    data = build(header, b"\0" * size)
    findings = scan(data)
    assert "MG004" not in {f.rule_id for f in findings}
    accepted = reference_accepts(data)
    # Every file the reference loader rejects gets a finding from us. (We are
    # stricter the other way round: duplicate keys and the like.)
    if not accepted:
        assert findings, header
    elif findings:
        assert {f.rule_id for f in findings} <= {"MG310"}, findings

"""The .npy scanner: real numpy files, object-array pickles, malformed headers, .npz members."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelguard
from modelguard.findings import Finding, Location, Severity
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import dispatch
from modelguard.scan.numpy import OBJECT_DATA_MEMBER, read_npy_header, scan_npy


class _RunsCommand:
    """Pickles as a call to os.system; only ever pickled here, never unpickled."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def npy_bytes(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    if version is None:
        np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    else:
        np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)
    return buffer.getvalue()


def raw_npy(header: bytes, data: bytes = b"", version: int = 1) -> bytes:
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header + data


def scan(data: bytes, *, limits: Limits | None = None, direct: bool = True) -> list[Finding]:
    ctx = ScanContext(location=Location("a.npy"), settings=ScanSettings(limits or Limits()))
    inp = Input(io.BytesIO(data), len(data), "a.npy")
    if direct:
        scan_npy(inp, ctx)
    else:
        dispatch(inp, ctx)
    return ctx.findings


def rule_ids(findings: list[Finding]) -> set[str]:
    return {f.rule_id for f in findings}


# ---- benign ----------------------------------------------------------------------------
BENIGN_ARRAYS = {
    "float64": np.arange(12.0).reshape(3, 4),
    "int8-scalar": np.array(7, dtype=np.int8),
    "empty": np.zeros((0, 5), dtype=np.float32),
    "fortran": np.asfortranarray(np.ones((3, 4), dtype=">i4")),
    "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,)), ("c", "S3")]),
    "nested-structured": np.zeros(2, dtype=[("p", [("x", "<f4"), ("y", "<f4")]), ("n", "<u2")]),
    "unicode": np.array(["ab", "cde"]),
    "datetime": np.array(["2024-01-01"], dtype="datetime64[D]"),
    "complex": np.ones(4, dtype=np.complex128),
    "bool": np.array([True, False]),
}


@pytest.mark.parametrize("name", sorted(BENIGN_ARRAYS))
def test_benign_arrays_have_no_findings(name: str) -> None:
    findings = scan(npy_bytes(BENIGN_ARRAYS[name]), direct=False)
    assert findings == []


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_header_version_is_read(version: tuple[int, int]) -> None:
    array = np.zeros(3, dtype=[("ü", "<f4")]) if version == (3, 0) else np.arange(5)
    data = npy_bytes(array, version)
    assert data[6:8] == bytes(version)
    ctx = ScanContext(location=Location("a.npy"))
    header = read_npy_header(Input(io.BytesIO(data), len(data), "a.npy"), ctx)
    assert header is not None and header.version == version
    assert header.data_offset + header.data_bytes == len(data)
    assert scan(data) == []


def test_header_fields_match_numpy() -> None:
    array = np.asfortranarray(np.ones((2, 3), dtype="<u2"))
    data = npy_bytes(array)
    ctx = ScanContext(location=Location("a.npy"))
    header = read_npy_header(Input(io.BytesIO(data), len(data), "a.npy"), ctx)
    assert header is not None
    assert header.shape == (2, 3) and header.fortran_order is True
    assert header.dtype.str == np.dtype("<u2").str and not header.has_object
    assert header.dtype.itemsize == 2


def test_plain_descriptors_match_numpy_without_importing_it() -> None:
    from numpy.lib.format import descr_to_dtype

    from modelguard.scan.numpy import plain_dtype

    checked = 0
    for order in "<>|=":
        for kind in "biufcSUVOMm?":
            for size in ("", "0", "1", "2", "3", "4", "8", "10", "16", "32"):
                descr = f"{order}{kind}{size}"
                mine = plain_dtype(descr)
                if mine is None:
                    continue  # left to numpy's own descr_to_dtype
                real = descr_to_dtype(descr)
                assert (mine.itemsize, mine.hasobject) == (real.itemsize, bool(real.hasobject))
                checked += 1
    assert checked > 50


def test_python2_long_suffix_is_accepted() -> None:
    header = b"{'descr': '<i8', 'fortran_order': False, 'shape': (2L,), }\n"
    assert scan(raw_npy(header, b"\0" * 16)) == []


# ---- object arrays ---------------------------------------------------------------------
def test_object_array_with_os_system_pickle() -> None:
    data = npy_bytes(np.array([_RunsCommand()], dtype=object))
    findings = scan(data)
    mg301 = [f for f in findings if f.rule_id == "MG301"]
    assert len(mg301) == 1 and mg301[0].location.members == ()
    dangerous = [f for f in findings if f.rule_id == "MG101"]
    assert dangerous, findings
    assert dangerous[0].severity is Severity.CRITICAL
    assert dangerous[0].location.members == (OBJECT_DATA_MEMBER,)
    assert "system" in (dangerous[0].evidence or "")


def test_harmless_object_array_is_reported_but_not_dangerous() -> None:
    data = npy_bytes(np.array([1, "x", None, 2.5], dtype=object))
    findings = scan(data)
    assert rule_ids(findings) == {"MG301"}
    # its embedded pickle is clean: low, not medium
    assert [f.severity for f in findings] == [Severity.LOW]


def test_object_array_with_a_payload_stays_medium() -> None:
    findings = scan(npy_bytes(np.array([_RunsCommand()], dtype=object)))
    assert next(f for f in findings if f.rule_id == "MG301").severity is Severity.MEDIUM


def test_object_array_with_an_unknown_class_stays_medium() -> None:
    import types

    findings = scan(npy_bytes(np.array([types.SimpleNamespace(a=1)], dtype=object)))
    assert next(f for f in findings if f.rule_id == "MG301").severity is Severity.MEDIUM


def test_structured_dtype_with_object_field_is_an_object_array() -> None:
    array = np.zeros(1, dtype=[("n", "<i4"), ("payload", "O")])
    array[0]["payload"] = _RunsCommand()
    findings = scan(npy_bytes(array))
    assert {"MG301", "MG101"} <= rule_ids(findings)


def test_object_array_without_data_is_malformed() -> None:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n"
    findings = scan(raw_npy(header))
    assert {f.evidence for f in findings if f.rule_id == "MG302"} == {"object-data-missing"}


def test_object_array_garbage_data_goes_to_pickle_scanner() -> None:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n"
    findings = scan(raw_npy(header, b"\xff\xfe garbage"))
    assert "MG301" in rule_ids(findings)
    assert any(f.rule_id.startswith("MG1") for f in findings), findings


# ---- malformed -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "evidence"),
    [
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': (2,)", "header-syntax"),
        (b"[1, 2, 3]", "header-type"),
        (b"{'descr': '<f8', 'fortran_order': False}", "header-keys"),
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1}", "header-keys"),
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': [2]}", "shape"),
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': (2.0,)}", "shape"),
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': (-1,)}", "shape"),
        (b"{'descr': '<f8', 'fortran_order': 0, 'shape': (2,)}", "fortran-order"),
        (b"{'descr': '<q9', 'fortran_order': False, 'shape': (2,)}", "descr"),
        (b"{'descr': 42, 'fortran_order': False, 'shape': (2,)}", "descr"),
        (b"{'descr': [('a', 'zz')], 'fortran_order': False, 'shape': (2,)}", "descr"),
        (b"{'descr': __import__('os'), 'fortran_order': False, 'shape': (2,)}", "header-syntax"),
        (b"((((((((((((((((((((((((((((((((((((((((((((((((((((((((((" * 10, "header-syntax"),
    ],
)
def test_malformed_headers(header: bytes, evidence: str) -> None:
    findings = scan(raw_npy(header, b"\0" * 16))
    assert [(f.rule_id, f.evidence) for f in findings] == [("MG302", evidence)]


def test_unsupported_version() -> None:
    data = b"\x93NUMPY\x04\x00" + b"\0" * 32
    assert [f.evidence for f in scan(data)] == ["version"]


def test_bad_utf8_in_v3_header() -> None:
    data = raw_npy(b"{'descr': '\xff', 'fortran_order': False, 'shape': ()}", version=3)
    assert [f.evidence for f in scan(data)] == ["header-encoding"]


def test_declared_data_larger_than_file() -> None:
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000, 1000), }\n"
    findings = scan(raw_npy(header, b"\0" * 64))
    assert [(f.rule_id, f.evidence) for f in findings] == [("MG302", "data-size")]
    assert "8,000,000" in findings[0].message


def test_huge_shape_does_not_allocate() -> None:
    header = (
        b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000000000000), }\n"
    )
    assert [f.evidence for f in scan(raw_npy(header, b"\0" * 8))] == ["data-size"]


def test_dense_header_literal_over_cap_is_a_limit() -> None:
    dims = "1, " * 200_000
    header = f"{{'descr': '|O', 'fortran_order': False, 'shape': ({dims}), }}".encode()
    findings = scan(raw_npy(header, b"\0" * 8, version=2))
    assert [f.rule_id for f in findings] == ["MG002"]


def test_whitespace_padding_does_not_count_against_the_literal_cap() -> None:
    header = b"{'descr': '<u1', 'fortran_order': False, 'shape': (4,), }" + b" " * 500_000
    assert scan(raw_npy(header + b"\n", b"\0" * 4, version=2)) == []


def test_many_huge_dimensions_are_cheap() -> None:
    dims = ", ".join(["9" * 30] * 5000)
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({dims},), }}\n".encode()
    assert [f.evidence for f in scan(raw_npy(header, b"\0" * 8, version=2))] == ["data-size"]


def test_trailing_bytes_after_data_are_low() -> None:
    data = npy_bytes(np.arange(4)) + b"hidden payload"
    findings = scan(data)
    assert [(f.rule_id, f.evidence, f.severity) for f in findings] == [
        ("MG302", "trailing-data", Severity.LOW)
    ]


def test_header_length_over_cap_is_a_limit() -> None:
    data = npy_bytes(np.arange(4))
    findings = scan(data, limits=Limits(max_header_bytes=16))
    assert rule_ids(findings) == {"MG002"}


def test_header_length_past_end_of_file() -> None:
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", 5000) + b"{}"
    assert [f.evidence for f in scan(data)] == ["truncated-header"]


@pytest.mark.parametrize("name", ["float64", "structured", "fortran"])
def test_every_truncation_is_a_finding(name: str) -> None:
    data = npy_bytes(BENIGN_ARRAYS[name])
    for cut in range(len(data)):
        findings = scan(data[:cut])
        assert findings, f"no finding when cut at {cut}"
        assert rule_ids(findings) <= {"MG302"}, (cut, findings)


def test_truncated_object_array_reports_pickle_damage() -> None:
    data = npy_bytes(np.array([_RunsCommand()], dtype=object))
    findings = scan(data[:-3])
    assert "MG301" in rule_ids(findings)
    assert any(f.rule_id == "MG105" for f in findings), findings


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_header_bytes_never_raise(header: bytes) -> None:
    for version in (1, 2, 3):
        findings = scan(raw_npy(header, b"\0" * 8, version=version))
        assert "MG004" not in rule_ids(findings)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["descr", "fortran_order", "shape"]),
        st.one_of(
            st.text(max_size=8),
            st.booleans(),
            st.tuples(st.integers(-3, 10**20)),
            st.lists(st.tuples(st.text(max_size=3), st.text(max_size=4)), max_size=3),
        ),
    )
)
def test_arbitrary_header_dicts_never_raise(header: dict[str, object]) -> None:
    findings = scan(raw_npy(repr(header).encode("utf-8"), b"\0" * 8, version=3))
    assert "MG004" not in rule_ids(findings)


# ---- npz and the public API ------------------------------------------------------------
def test_npz_object_member_is_scanned_through_the_zip_scanner(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(
        path,
        weights=np.arange(10.0),
        evil=np.array([_RunsCommand()], dtype=object),
    )
    report = modelguard.scan(path, root=tmp_path, workers=1)
    (artifact,) = report.artifacts
    by_rule = {f.rule_id: f for f in artifact.findings}
    assert "MG004" not in by_rule
    assert by_rule["MG301"].location.members == ("evil.npy",)
    assert by_rule["MG101"].location.members == ("evil.npy", OBJECT_DATA_MEMBER)


def test_compressed_npz_of_numbers_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez_compressed(path, a=np.zeros((64, 64)), b=np.arange(7, dtype=np.int16))
    report = modelguard.scan(path, root=tmp_path, workers=1)
    assert report.findings == ()


def test_npy_file_on_disk_names_its_format(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(3))
    report = modelguard.scan(path, root=tmp_path, workers=1)
    assert report.artifacts[0].format == "numpy"
    assert report.findings == ()


def test_object_array_is_low_when_its_pickle_is_clean_and_medium_when_not() -> None:
    clean = io.BytesIO()
    np.save(clean, np.array([(1, "a"), (2, "b")], dtype=object), allow_pickle=True)
    findings = scan(clean.getvalue())
    assert [f.severity for f in findings if f.rule_id == "MG301"] == [Severity.LOW]
    evil = io.BytesIO()
    np.save(evil, np.array([_Exec()], dtype=object), allow_pickle=True)
    findings = scan(evil.getvalue())
    assert [f.severity for f in findings if f.rule_id == "MG301"] == [Severity.MEDIUM]


class _Exec:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("pass",))

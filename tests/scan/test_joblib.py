"""joblib.load as its own reading: compressors, wrappers, array bytes, dtypes.

Positive controls run the real ``joblib.load`` in a subprocess on files built
here and see the canary; the scan must flag the same files and pass their
benign twins. The fixture files (``fixtures/gen_pickle.py``) are covered by the
manifest-driven fixture and canary tests; these tests pin the mechanisms.
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelguard
from modelguard.findings import Location, Severity
from modelguard.policy import Policy
from modelguard.scan.context import ScanContext
from modelguard.scan.pickle import joblib as joblib_model
from modelguard.scan.pickle import walk_pickle
from modelguard.scan.pickle.values import Dict, Dtype
from modelguard.scan.pickle.walker import JOBLIB, JOBLIB_MMAP

joblib = pytest.importorskip("joblib")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
import gen_pickle  # noqa: E402

PAYLOAD = (
    "import os; open(os.environ['MODELGUARD_CANARY'], 'w').write('x')"  # what the child checks
)


class _Reduce:
    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def joblib_runs(path: Path, tmp_path: Path, *, mmap: bool = False) -> bool:
    """Positive control: does the real joblib.load run the payload (in a child)?"""
    canary = tmp_path / f"canary-{path.name}"
    mode = "'r'" if mmap else "None"
    script = (
        "import sys, joblib\n"
        f"try:\n    joblib.load(sys.argv[1], mmap_mode={mode})\n"
        "except Exception:\n    pass\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path)],
        env={**os.environ, "MODELGUARD_CANARY": str(canary)},
        timeout=120,
        check=False,
        capture_output=True,
    )
    return canary.exists()


def scan_file(path: Path) -> set[tuple[str, Severity]]:
    report = modelguard.scan(path, policy=Policy(), workers=1)
    assert not report.errors
    return {(f.rule_id, f.severity) for f in report.findings}


def flagged(found: set[tuple[str, Severity]]) -> bool:
    return any(severity >= Severity.MEDIUM for _, severity in found)


HOSTILE = {"coef": np.arange(4.0), "hook": _Reduce(builtins.exec, (PAYLOAD,))}
BENIGN = {"coef": np.arange(4.0), "names": np.array(["a", None], dtype=object), "n": 3}


@pytest.mark.parametrize("compress", ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"])
def test_every_compressor_joblib_accepts(compress: str, tmp_path: Path) -> None:
    if compress == "lz4":
        pytest.importorskip("lz4")
    hostile = tmp_path / f"hostile.{compress}.joblib"
    joblib.dump(HOSTILE, hostile, compress=(compress, 3))
    assert joblib_runs(hostile, tmp_path)
    found = scan_file(hostile)
    assert ("MG101", Severity.CRITICAL) in found
    benign = tmp_path / f"benign.{compress}.joblib"
    joblib.dump(BENIGN, benign, compress=(compress, 3))
    assert not flagged(scan_file(benign))


def test_legacy_zfile(tmp_path: Path) -> None:
    import pickle

    hostile = tmp_path / "old.pkl"
    hostile.write_bytes(gen_pickle.zfile(pickle.dumps(_Reduce(builtins.exec, (PAYLOAD,)))))
    assert joblib_runs(hostile, tmp_path)
    assert ("MG101", Severity.CRITICAL) in scan_file(hostile)
    benign = tmp_path / "old-benign.pkl"
    benign.write_bytes(gen_pickle.zfile(pickle.dumps({"a": [1, 2]})))
    assert scan_file(benign) == set()


def test_lz4_without_the_package_is_a_medium_cannot_inspect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("lz4")
    path = tmp_path / "m.joblib"
    joblib.dump(BENIGN, path, compress=("lz4", 3))
    # modelguard.scan is also the public scan() function: reach the module by name
    compressed = importlib.import_module("modelguard.scan.compressed")
    monkeypatch.setattr(compressed, "lz4_available", lambda: False)
    assert ("MG003", Severity.MEDIUM) in scan_file(path)


BUILT = [
    "joblib_alignment_none",
    "joblib_wrapper_by_reduce",
    "joblib_wrapper_by_copyreg",
    "joblib_wrapper_rebuilt",
    "joblib_frame_split",
    "joblib_float_claims_objects",
]


@pytest.mark.parametrize("name", BUILT)
def test_wrapper_shapes_joblib_reads(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.joblib"
    data = getattr(gen_pickle, name)(PAYLOAD)
    path.write_bytes(data)
    assert joblib_runs(path, tmp_path)
    assert ("MG101", Severity.CRITICAL) in scan_file(path)
    # The joblib reading itself walks to the end of the file: it located every array.
    ctx = ScanContext(location=Location(name))
    result = walk_pickle(io.BytesIO(data), ctx, reading=JOBLIB)
    assert result.end == len(data)
    assert "builtins.exec" in {g.dotted for g in result.imports}


def test_a_wrong_padding_model_would_miss_the_payload() -> None:
    # alignment None: the first array byte (0x40) is data, not a padding length
    data = gen_pickle.joblib_alignment_none(PAYLOAD)
    ctx = ScanContext(location=Location("x"))
    assert walk_pickle(io.BytesIO(data), ctx, reading=JOBLIB).end == len(data)
    found = {f.rule_id for f in ctx.findings}
    assert "MG105" not in found and "MG101" in found


def test_benign_unaligned_and_object_arrays_are_clean(tmp_path: Path) -> None:
    path = tmp_path / "unaligned.joblib"
    path.write_bytes(gen_pickle.joblib_unaligned(BENIGN))
    assert joblib.load(path)["n"] == 3
    assert not flagged(scan_file(path))


def test_forged_object_dtype_is_mg109() -> None:
    data = gen_pickle.joblib_forged_object_dtype()
    ctx = ScanContext(location=Location("x"))
    walk_pickle(io.BytesIO(data), ctx, reading=JOBLIB)
    assert ("MG109", "joblib-raw-object-array") in {(f.rule_id, f.evidence) for f in ctx.findings}


def test_mmap_mode_reading_maps_instead_of_unpickling(tmp_path: Path) -> None:
    # allow_mmap on a dtype that claims objects: joblib.load reads a nested pickle,
    # joblib.load(mmap_mode="r") maps the bytes as an object array instead.
    extra = gen_pickle.sbu("allow_mmap") + b"\x88" + gen_pickle.sbu("order") + gen_pickle.sbu("C")
    data = gen_pickle.joblib_float_claims_objects(PAYLOAD).replace(
        gen_pickle.sbu("shape"), extra + gen_pickle.sbu("shape")
    )
    ctx = ScanContext(location=Location("x"))
    default = walk_pickle(io.BytesIO(data), ctx, reading=JOBLIB)
    assert default.mmap_differs
    ctx = ScanContext(location=Location("x"))
    walk_pickle(io.BytesIO(data), ctx, reading=JOBLIB_MMAP)
    assert "MG109" in {f.rule_id for f in ctx.findings}


def test_unlocatable_wrapper_state_is_high() -> None:
    # a state the scanner cannot follow (built by a call): joblib would read array
    # bytes from a place that cannot be located, so the file cannot be vouched for
    data = gen_pickle.PROTO4 + gen_pickle.global_(*gen_pickle.WRAPPER) + b")\x81"
    data += gen_pickle.global_("collections", "OrderedDict") + b")R" + b"b" + b"N."
    ctx = ScanContext(location=Location("x"))
    walk_pickle(io.BytesIO(data), ctx, reading=JOBLIB)
    hits = {(f.rule_id, f.evidence, f.severity) for f in ctx.findings}
    assert ("MG104", "joblib-wrapper-unresolved", Severity.HIGH) in hits


def _numpy_facts(spec: str, state: tuple[Any, ...] | None) -> tuple[int, bool] | None:
    d = np.dtype(spec, False, True)
    if state is not None:
        try:
            d.__setstate__(state)
        except (TypeError, ValueError, SystemError):
            return None
    return d.itemsize, bool(d.hasobject)


def _model_facts(spec: str, state: tuple[Any, ...] | None) -> tuple[int, bool] | None:
    def value(v: Any) -> Any:
        if v is None:
            return joblib_model.NONE
        if isinstance(v, np.dtype):
            made = Dtype(v.__reduce__()[1][0])
            made.state = value(v.__reduce__()[2])
            return made
        if isinstance(v, tuple):
            return tuple(value(i) for i in v)
        if isinstance(v, dict):
            d = Dict()
            for k, item in v.items():
                d.set(k, value(item), 64)
            return d
        return v

    made = Dtype(spec)
    made.state = None if state is None else value(state)
    facts = joblib_model.dtype_facts(made)
    return None if facts is None else (facts.itemsize, facts.hasobject)


OBJ = np.dtype("O")
DTYPE_CASES = [
    ("f8", None),
    ("f8", (3, "<", None, None, None, -1, -1, 0)),
    ("f8", (3, "<", None, None, None, -1, -1, 1)),  # a float dtype claiming objects
    ("f8", (3, "<", None, None, None, -1, -1, 2)),
    ("f8", (3, "<", None, None, None, -1, -1, -1)),
    ("f8", (4, "<", None, None, None, -1, -1, 1, None)),
    ("f8", (2, "<", None, None, None, -1, -1, 0)),
    ("f8", (2, "<", None, None, None, -1, -1, 1)),
    ("O8", (3, "|", None, None, None, -1, -1, 63)),
    ("O8", (3, "|", None, None, None, -1, -1, 0)),  # an object dtype denying it
    ("O8", (2, "|", None, None, None, -1, -1, 0)),
    ("V16", (3, "|", None, None, None, 100, 1, 0)),
    ("V16", (3, "|", None, None, None, 16, 1, 0)),
    ("U10", (3, "<", None, None, None, 8, 4, 8)),
    ("S5", (3, "|", None, None, None, 5, 1, 0)),
    ("i8", (3, "<", None, None, None, 16, 1, 0)),
    ("V16", (3, "|", None, ("a",), {"a": (OBJ, 0)}, 16, 1, 0)),
    ("V16", (3, "|", None, ("a",), {"a": (OBJ, 0)}, 16, 1, 63)),
    ("V16", (2, "|", None, ("a",), {"a": (OBJ, 0)}, 16, 1, 0)),
    ("V8", (3, "|", (OBJ, (1,)), None, None, 8, 8, 0)),
    ("V8", (3, "|", (OBJ, (1,)), None, None, 8, 8, 63)),
    ("M8", (4, "<", None, None, None, -1, -1, 0, (None, (b"ns", 1, 1, 1)))),
]


@pytest.mark.parametrize(("spec", "state"), DTYPE_CASES)
def test_dtype_facts_match_numpy(spec: str, state: tuple[Any, ...] | None) -> None:
    assert _model_facts(spec, state) == _numpy_facts(spec, state)


def test_shape_count_wraps_like_int64() -> None:
    assert joblib_model.element_count((2**32, 2**32)) == (0, 2**64)
    assert joblib_model.element_count(()) == (1, 1)
    with pytest.raises(joblib_model.CannotLoad):
        joblib_model.element_count((2**63,))
    assert np.multiply.reduce([np.int64(2**32), np.int64(2**32)]) == 0

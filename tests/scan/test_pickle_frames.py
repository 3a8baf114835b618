"""FRAME as each unpickler applies it, checked against CPython's own unpicklers.

Three framings exist (``walker.Framing``): the C unpickler over bytes or a
peekable file (``pickle.load``), the C unpickler over a file without ``peek``
(``torch.load``, ``pickle.load(io.BytesIO(...))``), which drops what is left
of a frame when an argument does not fit in it, and ``pickle._Unpickler``
(joblib, dill), which refuses reads across a frame's end and lets a frame be
shorter than declared. Each stream below is loaded by all three real
unpicklers and walked in the matching reading; they must agree on whether the
stream loads and on the string it loads.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import modelguard
from modelguard.findings import Location, Severity
from modelguard.policy import Policy
from modelguard.scan.context import ScanContext
from modelguard.scan.pickle import walk_pickle
from modelguard.scan.pickle.walker import CONTIGUOUS, Framing, Reading

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
import gen_pickle


def frame(n: int) -> bytes:
    return b"\x95" + struct.pack("<Q", n)


P4 = b"\x80\x04"
STREAMS = {
    "arg crosses the frame end": P4 + frame(3) + b"\x8c\x05hello.",
    "frame longer than the file": P4 + frame(1000) + b"\x8c\x05hello.",
    "text line crosses the frame end": P4 + frame(4) + b"Vhello\n.",
    "unframed after a frame": P4 + frame(7) + b"\x8c\x05hello" + b".",
    "bytes lost at the frame end": P4 + frame(4) + b"\x8c\x05abcdefghij.",
    "bytes read into the object": P4 + frame(4) + b"C\x05abcde.",
    "BINUNICODE crossing": P4 + frame(4) + b"X\x05\x00\x00\x00abcde.",
    "int argument crossing": P4 + frame(2) + b"J\x01\x02\x03\x04\x05\x06.",
    "frame inside a frame": P4 + frame(19) + frame(7) + b"\x8c\x05hello" + b"." + b"...",
    "empty frame": P4 + frame(0) + b"\x8c\x05hello.",
    "frames back to back": P4 + frame(7) + b"\x8c\x05hello" + frame(1) + b".",
    "crafted (fixture)": gen_pickle.frame_crossing("x = 1"),
}


class _NoPeek:
    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._b.read(n)

    def readline(self) -> bytes:
        return self._b.readline()

    def readinto(self, buf: Any) -> int:
        return self._b.readinto(buf)


LOADERS: dict[Framing, Callable[[bytes], Any]] = {
    Framing.CONTIGUOUS: pickle.loads,
    Framing.UNBUFFERED: lambda data: pickle.load(_NoPeek(data)),  # type: ignore[arg-type]
    Framing.PYTHON: pickle._loads,  # type: ignore[attr-defined]
}


def _real(framing: Framing, data: bytes) -> tuple[bool, Any]:
    if b"exec" in data:
        return (True, None) if framing is Framing.UNBUFFERED else (False, None)  # not run here
    try:
        return True, LOADERS[framing](data)
    except (pickle.UnpicklingError, EOFError, ValueError, MemoryError, SystemError):
        return False, None


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("framing", list(Framing))
def test_each_reading_matches_its_unpickler(name: str, framing: Framing) -> None:
    data = STREAMS[name]
    loads, value = _real(framing, data)
    ctx = ScanContext(location=Location("x"))
    result = walk_pickle(io.BytesIO(data), ctx, values=True, reading=Reading(framing))
    if name == "crafted (fixture)" and framing is not Framing.UNBUFFERED:
        # only the reading that drops the frame's rest sees the exec; the others
        # either load one string or fail
        assert "builtins.exec" not in {g.dotted for g in result.imports}
    if name != "crafted (fixture)":
        assert result.complete is loads, (name, framing, ctx.findings)
    if loads and isinstance(value, str) and result.values:
        assert result.values[-1] == value


def test_the_contiguous_reading_notices_where_framings_part() -> None:
    for name, data in STREAMS.items():
        ctx = ScanContext(location=Location("x"))
        result = walk_pickle(io.BytesIO(data), ctx, reading=CONTIGUOUS)
        differ = len({_real(f, data)[0] for f in Framing}) > 1
        if differ:
            assert result.frame_anomaly is not None, name
            assert "frame-disagreement" in {f.evidence for f in ctx.findings}, name


def test_well_framed_pickles_raise_no_anomaly() -> None:
    for protocol in (4, 5):
        data = pickle.dumps({"a": [1.5] * 10_000, "b": b"x" * 200_000, "c": "y"}, protocol)
        ctx = ScanContext(location=Location("x"))
        result = walk_pickle(io.BytesIO(data), ctx)
        assert result.frame_anomaly is None
        assert ctx.findings == []


def _loads_in_child(path: Path, how: str, tmp_path: Path) -> bool:
    canary = tmp_path / f"canary-{how}"
    loaders = {
        "c": "pickle.load(open(sys.argv[1], 'rb'))",
        "bytesio": "pickle.load(io.BytesIO(open(sys.argv[1], 'rb').read()))",
        "python": "pickle._load(open(sys.argv[1], 'rb'))",
    }
    script = f"import io, pickle, sys\ntry:\n    {loaders[how]}\nexcept Exception:\n    pass\n"
    subprocess.run(
        [sys.executable, "-c", script, str(path)],
        env={**os.environ, "MODELGUARD_CANARY": str(canary)},
        timeout=60,
        check=False,
        capture_output=True,
    )
    return canary.exists()


PAYLOAD = "import os; open(os.environ['MODELGUARD_CANARY'], 'w').write('x')"


@pytest.mark.parametrize(
    ("build", "runs_under"),
    [
        (gen_pickle.frame_past_end, {"python"}),
        (gen_pickle.frame_crossing, {"bytesio"}),
    ],
)
def test_positive_control_and_scan(
    build: Callable[[str], bytes], runs_under: set[str], tmp_path: Path
) -> None:
    path = tmp_path / "frames.pkl"
    path.write_bytes(build(PAYLOAD))
    ran = {how for how in ("c", "bytesio", "python") if _loads_in_child(path, how, tmp_path)}
    assert ran == runs_under
    report = modelguard.scan(path, policy=Policy(), workers=1)
    assert ("MG101", Severity.CRITICAL) in {(f.rule_id, f.severity) for f in report.findings}
    assert report.exit_code(Severity.MEDIUM) == 1

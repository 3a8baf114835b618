"""The walker's inline fast path and its opcode handlers agree, on every fixture.

The fast path re-implements the commonest opcodes inline for speed, beside the
handlers that implement every opcode. Silent drift between the two would make
the verdict depend on where a buffer boundary falls, so every fixture is
scanned both ways (all its readings and members) and every file is also walked
raw from byte 0, and the results must be identical. Random opcode soup covers
what the fixtures do not.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelguard
from modelguard.findings import Finding, Location
from modelguard.policy import Policy
from modelguard.scan.context import ScanContext
from modelguard.scan.pickle import walk_pickle
from modelguard.scan.pickle.walker import Walker

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FILES = sorted(
    p
    for sub in ("benign", "malicious", "backdoor")
    for p in (FIXTURES / sub).rglob("*")
    if p.is_file()
)


def _scan_findings(path: Path) -> list[Finding]:
    report = modelguard.scan([path], policy=Policy(), root=FIXTURES, workers=1)
    return list(report.findings)


def _walk(data: bytes) -> tuple[dict[str, Any], list[Finding]]:
    ctx = ScanContext(location=Location("x"))
    result = walk_pickle(io.BytesIO(data), ctx)
    return asdict(result), list(ctx.findings)


def _both_ways(monkeypatch: pytest.MonkeyPatch, run: Any) -> tuple[Any, Any]:
    fast = run()
    with monkeypatch.context() as patch:
        patch.setattr(Walker, "inline_fast_path", False)
        slow = run()
    return fast, slow


def test_the_fixture_set_is_there() -> None:
    assert len(FILES) > 50


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(FIXTURES).as_posix() for p in FILES])
def test_fast_path_and_handlers_agree_on_a_fixture(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = _both_ways(monkeypatch, lambda: _scan_findings(path))
    assert fast == slow
    data = path.read_bytes()
    fast_walk, slow_walk = _both_ways(monkeypatch, lambda: _walk(data))
    assert fast_walk == slow_walk


# Opcodes the fast path inlines, with arguments, mixed with the rest.
_PIECES = st.sampled_from(
    [
        b"N", b"]", b")", b"\x88", b"\x89", b"\x8f", b"G" + bytes(8), b"K\x07",
        b"J\x01\x00\x00\x00",
        b"M\x02\x01", b"\x94", b"X\x03\x00\x00\x00abc", b"X\xff\x00\x00\x00", b"}", b"\x85",
        b"\x86", b"\x87", b"\x8c\x02os", b"\x8c\x06system", b"(", b"e", b"u", b"q\x01",
        b"r\x02\x00\x00\x00", b"j\x02\x00\x00\x00", b"h\x01", b"h\x09", b"s", b"a", b"\x93",
        b"R", b"b", b"t", b"l", b"d", b"0", b"1", b"2", b"cos\nsystem\n", b"\x80\x04",
        b"\x95\x10\x00\x00\x00\x00\x00\x00\x00", b".", b"\xff",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40))
def test_fast_path_and_handlers_agree_on_opcode_soup(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    fast = _walk(data)
    Walker.inline_fast_path = False
    try:
        slow = _walk(data)
    finally:
        Walker.inline_fast_path = True
    assert fast == slow

"""Tiny model files for the integration tests, made here (never loaded).

Tests get them through the ``models`` fixture (pytest runs with
--import-mode=importlib, so test modules cannot import a sibling helper). The
loopback server (``range_server``, ``plain_server``) is the shared one in
``tests/conftest.py``.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest


class _RunsShell:
    """Pickles to a call of os.system: what a booby-trapped checkpoint contains."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def malicious_pickle() -> bytes:
    """A protocol-4 pickle that would run a shell command when unpickled."""
    return pickle.dumps({"state_dict": {}, "hook": _RunsShell()}, protocol=4)


def malicious_text_pickle() -> bytes:
    """A protocol-0 pickle: pure ASCII text that still calls os.system."""
    return b"cos\nsystem\n(S'echo pwned'\ntR."


def benign_pickle() -> bytes:
    return pickle.dumps({"weights": [0.5, -1.25, 3.0], "epoch": 7}, protocol=4)


def torch_like_zip(pickle_bytes: bytes, padding_bytes: int = 0) -> bytes:
    """A zip laid out like torch.save's: archive/data.pkl plus (stored) tensor data."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", "little")
        if padding_bytes:
            archive.writestr("archive/data/0", os.urandom(padding_bytes))
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def models() -> SimpleNamespace:
    """The model makers above, for tests."""
    return SimpleNamespace(
        malicious_pickle=malicious_pickle,
        malicious_text_pickle=malicious_text_pickle,
        benign_pickle=benign_pickle,
        torch_like_zip=torch_like_zip,
        write=write,
    )

"""Keys and a model folder for the provenance tests (the fake Hub is in tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# ---- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def _write_pair(folder: Path, name: str, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(private, public)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    folder = tmp_path_factory.mktemp("keys")
    return {
        "alice": _write_pair(folder, "alice", ec.generate_private_key(ec.SECP256R1())),
        "mallory": _write_pair(folder, "mallory", ec.generate_private_key(ec.SECP256R1())),
        "p384": _write_pair(folder, "p384", ec.generate_private_key(ec.SECP384R1())),
    }


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (model / "config.json").write_text('{"hidden": 8}\n')
    (model / "sub" / "tokenizer.txt").write_text("a b c\n")
    return model

"""A fake Hugging Face Hub and keys for the provenance tests.

``FakeHub`` builds on the shared loopback server (``tests/conftest.py``) and
answers the slice of the Hub API that huggingface_hub's
``model_info(files_metadata=True)``, ``hf_hub_download`` and
``snapshot_download`` use (checked against huggingface_hub 0.24's and 2.4's
source): repo metadata with siblings and LFS sha256, the recursive tree
listing, and ``/resolve/`` answering HEAD and GET with ``X-Repo-Commit``,
``ETag`` / ``X-Linked-Etag`` and ``X-Linked-Size``. It can lie: ``tamper``
serves other bytes than the metadata vouches for, and ``add`` takes any file
names, hostile ones included.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

if TYPE_CHECKING:
    from conftest import LoopbackServer


# ---- fake Hugging Face Hub ----------------------------------------------------------------


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, bytes]
    lfs: set[str]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    refs: dict[str, str] = field(default_factory=dict)
    served: dict[str, Any] = field(default_factory=dict)  # tampered Routes by file name

    def siblings(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for name, data in sorted(self.files.items()):
            entry: dict[str, object] = {
                "rfilename": name,
                "size": len(data),
                "blobId": git_blob_id(data),
            }
            if name in self.lfs:
                entry["lfs"] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "pointerSize": 134,
                }
            out.append(entry)
        return out

    def tree(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for name, data in sorted(self.files.items()):
            entry: dict[str, object] = {
                "type": "file",
                "path": name,
                "size": len(data),
                "oid": git_blob_id(data),
            }
            if name in self.lfs:
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            out.append(entry)
        return out

    def resolve(self, revision: str) -> str | None:
        if revision == self.commit:
            return self.commit
        return self.refs.get(revision, self.commit if revision == "main" else None)


class FakeHub:
    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.repos: dict[str, HubRepo] = {}
        server.fallback = self._route

    @property
    def endpoint(self) -> str:
        return self.server.url

    def add(self, repo_id: str, files: dict[str, bytes], lfs: set[str] | None = None) -> HubRepo:
        repo = HubRepo(repo_id, files, lfs if lfs is not None else set())
        self.repos[repo_id] = repo
        return repo

    def tamper(self, repo_id: str, name: str, body: bytes, **kwargs: object) -> None:
        """Make the download of ``name`` answer ``body`` while the metadata stays honest."""
        self.repos[repo_id].served[name] = self.server.Route(body, **kwargs)

    def _json(self, value: object) -> Any:
        body = json.dumps(value).encode()
        return self.server.Route(body, headers={"Content-Type": "application/json"})

    def _route(self, method: str, raw_path: str, headers: Mapping[str, str]) -> Any:
        Route = self.server.Route
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = self.repos.get(f"{parts[2]}/{parts[3]}")
            if repo is None:
                return Route(b'{"error": "Repository not found"}', status=404)
            rest = parts[4:]
            revision = rest[1] if len(rest) >= 2 else "main"
            commit = repo.resolve(revision)
            if commit is None:
                return Route(b'{"error": "Revision not found"}', status=404)
            if not rest or rest[0] == "revision":
                return self._json({"id": repo.repo_id, "sha": commit, "siblings": repo.siblings()})
            if rest[0] == "tree":
                return self._json(repo.tree())
            return None
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.repos.get(f"{parts[0]}/{parts[1]}")
            if repo is None:
                return None
            commit = repo.resolve(parts[3])
            name = "/".join(parts[4:])
            if commit is None or name not in repo.files:
                return Route(b"", status=404, headers={"X-Error-Code": "EntryNotFound"})
            data = repo.files[name]
            etag = hashlib.sha256(data).hexdigest() if name in repo.lfs else git_blob_id(data)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}
            if name in repo.lfs:
                headers["X-Linked-Etag"] = f'"{etag}"'
                headers["X-Linked-Size"] = str(len(data))
            tampered = repo.served.get(name)
            if tampered is not None:
                tampered.headers.update(headers)
                return tampered
            return Route(data, headers=headers)
        return None


@pytest.fixture
def hub(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return FakeHub(server)


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

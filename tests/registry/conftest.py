"""Loopback registries for the registry tests and the benchmark: a fake Hub and moto's S3.

The fake Hub serves the slice of the Hub API that huggingface_hub 2.x and the
scanner use: ``/api/models?author=`` (paginated with ``Link`` headers, as the
Hub does), ``/api/models/{repo}[/revision/{rev}]`` (with ``blobs=True``:
``siblings[].lfs.sha256``), ``/api/models/{repo}/tree/{rev}``, and
``/{repo}/resolve/{rev}/{file}`` answering HEAD and ranged GET with
``X-Repo-Commit`` and ``ETag``. It counts what it serves, can add latency to
every request and can answer 429 for a while.

The S3 endpoint is moto's server (its WSGI app under werkzeug, in a thread),
wrapped in a middleware that counts requests and object bytes.

Models are made here, never loaded: a zip laid out like ``torch.save``'s with
a pickle that is benign or calls ``os.system``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import threading
import time
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

ORG = "acme"
MALICIOUS_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."  # protocol 0: calls os.system


def benign_pickle(index: int) -> bytes:
    return pickle.dumps({"weights": [index, 0.5, -1.25], "epoch": index % 7}, protocol=4)


def torch_like_zip(pickle_bytes: bytes, padding: int, seed: int) -> bytes:
    """A zip laid out like torch.save's; ``padding`` bytes of tensor data.

    Zeros, then ``seed`` (every file differs, malicious ones included), not random
    bytes: random tensor data that starts with a pickle opcode byte is flagged by
    the scanner on main (MG104 on ``archive/data/0``, reported to the scan
    owners); these tests are about the registry, not that reading.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", "little")
        if padding:
            tensor = bytes(max(0, padding - 8)) + seed.to_bytes(8, "little")
            archive.writestr("archive/data/0", tensor[:padding])
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def model_bytes(index: int, malicious: bool, padding: int) -> bytes:
    payload = MALICIOUS_PICKLE if malicious else benign_pickle(index)
    return torch_like_zip(payload, padding, index)


def commit_of(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


# ---- the fake Hub ---------------------------------------------------------------------


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    tags: list[str] = field(default_factory=list)
    generation: int = 0

    @property
    def sha(self) -> str:
        return commit_of(self.repo_id, self.generation, sorted(self.files))

    def sibling(self, name: str) -> dict[str, Any]:
        data = self.files[name]
        entry: dict[str, Any] = {
            "rfilename": name,
            "size": len(data),
            "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
        }
        if not name.endswith(".json"):
            entry["lfs"] = {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "pointerSize": 134,
            }
        return entry

    def etag(self, name: str) -> str:
        sibling = self.sibling(name)
        return f'"{sibling["lfs"]["sha256"] if "lfs" in sibling else sibling["blobId"]}"'


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 overflows when a machine with many cores runs 8
    # workers of 4 threads each: connections then wait out SYN retransmits.
    request_queue_size = 128


class FakeHub:
    """A threaded loopback server holding ``repos``; see the module docstring."""

    PAGE = 50

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.delay = 0.0  # seconds added to every request
        self.answer_429 = 0  # the next N throttled requests get 429
        self.retry_after = "1"
        self.counts: Counter[str] = Counter()  # request kind -> count
        self.file_requests: Counter[str] = Counter()  # resolve GETs per "repo/file"
        self.model_bytes = 0  # body bytes of file content sent
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's
            # algorithm and delayed ACKs add 40 ms to every response.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, files: dict[str, bytes], tags: Iterable[str] = ()) -> Repo:
        repo = Repo(repo_id, dict(files), list(tags))
        self.repos[repo_id] = repo
        return repo

    def change(self, repo_id: str, name: str, data: bytes) -> None:
        repo = self.repos[repo_id]
        repo.files[name] = data
        repo.generation += 1

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.file_requests.clear()
            self.model_bytes = 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- routing ---------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler, head: bool) -> None:
        parts = urllib.parse.urlsplit(request.path)
        path = urllib.parse.unquote(parts.path)
        query = urllib.parse.parse_qs(parts.query)
        if self.delay:
            time.sleep(self.delay)
        throttled = path != "/api/models"
        with self._lock:
            if throttled and self.answer_429 > 0:
                self.answer_429 -= 1
                self.counts["429"] += 1
                refuse = True
            else:
                refuse = False
        if refuse:
            self._send(request, 429, b"", {"Retry-After": self.retry_after}, head)
            return
        if path == "/api/models":
            self._count("list")
            self._list(request, query, head)
            return
        if path.startswith("/api/models/"):
            self._count("api")
            self._api(request, path[len("/api/models/") :], query, head)
            return
        if "/resolve/" in path:
            self._resolve(request, path.lstrip("/"), head)
            return
        self._send(request, 404, b"", {}, head)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _list(
        self, request: BaseHTTPRequestHandler, query: dict[str, list[str]], head: bool
    ) -> None:
        author = query.get("author", [""])[0]
        wanted = set(query.get("filter", []))
        repos = [
            r
            for r in sorted(self.repos.values(), key=lambda r: r.repo_id)
            if r.repo_id.split("/")[0] == author and wanted <= set(r.tags)
        ]
        start = int(query.get("cursor", ["0"])[0])
        page = repos[start : start + self.PAGE]
        full = query.get("full", ["false"])[0].lower() == "true"
        body = [
            {"id": r.repo_id, "author": author, "tags": r.tags}
            | ({"sha": r.sha, "siblings": [{"rfilename": n} for n in r.files]} if full else {})
            for r in page
        ]
        headers = {"Content-Type": "application/json"}
        if start + self.PAGE < len(repos):
            next_query = {k: v for k, v in query.items() if k != "cursor"}
            next_query["cursor"] = [str(start + self.PAGE)]
            link = f"{self.url}/api/models?{urllib.parse.urlencode(next_query, doseq=True)}"
            headers["Link"] = f'<{link}>; rel="next"'
        self._send(request, 200, json.dumps(body).encode(), headers, head)

    def _api(
        self,
        request: BaseHTTPRequestHandler,
        rest: str,
        query: dict[str, list[str]],
        head: bool,
    ) -> None:
        owner, _, tail = rest.partition("/")
        name, _, tail = tail.partition("/")
        repo = self.repos.get(f"{owner}/{name}")
        if repo is None:
            self._send(request, 404, b'{"error": "Repository not found"}', {}, head)
            return
        if tail.startswith("tree/"):
            body: Any = [
                {
                    "type": "file",
                    "path": n,
                    "size": len(d),
                    "oid": repo.sibling(n)["blobId"],
                    **(
                        {"lfs": {"oid": s["lfs"]["sha256"], "size": len(d), "pointerSize": 134}}
                        if "lfs" in (s := repo.sibling(n))
                        else {}
                    ),
                }
                for n, d in sorted(repo.files.items())
            ]
        else:
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = [repo.sibling(n) if blobs else {"rfilename": n} for n in sorted(repo.files)]
            body = {"id": repo.repo_id, "sha": repo.sha, "tags": repo.tags, "siblings": siblings}
        self._send(request, 200, json.dumps(body).encode(), {}, head)

    def _resolve(self, request: BaseHTTPRequestHandler, path: str, head: bool) -> None:
        repo_part, _, rest = path.partition("/resolve/")
        revision, _, name = rest.partition("/")
        repo = self.repos.get(repo_part)
        if repo is None or name not in repo.files or revision not in (repo.sha, "main"):
            self._send(request, 404, b"", {}, head)
            return
        data = repo.files[name]
        headers = {"X-Repo-Commit": repo.sha, "ETag": repo.etag(name), "Accept-Ranges": "bytes"}
        if head:
            self._count("head")
            headers["Content-Length"] = str(len(data))
            self._send(request, 200, b"", headers, head=True, length=len(data))
            return
        self._count("file")
        with self._lock:
            self.file_requests[f"{repo_part}/{name}"] += 1
        wanted = request.headers.get("Range")
        if wanted:
            unit, _, spec = wanted.partition("=")
            first, _, last = spec.partition("-")
            start = int(first)
            end = min(int(last) if last else len(data) - 1, len(data) - 1)
            if unit != "bytes" or start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                self._send(request, 416, b"", headers, head)
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(request, 206, data[start : end + 1], headers, head, model=True)
            return
        self._send(request, 200, data, headers, head, model=True)

    def _send(
        self,
        request: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str],
        head: bool,
        model: bool = False,
        length: int | None = None,
    ) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        if "Content-Length" not in headers:
            request.send_header("Content-Length", str(len(body) if length is None else length))
        request.end_headers()
        if model:
            with self._lock:
                self.model_bytes += len(body)
        if not head:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                request.wfile.write(body)


@dataclass(frozen=True)
class HubFleet:
    hub: FakeHub
    malicious: frozenset[str]  # repo ids whose model is malicious
    model_file: str = "pytorch_model.bin"


def build_fleet(
    hub: FakeHub, count: int, every_malicious: int = 40, padding: int = 320 * 1024
) -> HubFleet:
    """``count`` repositories of ``ORG``: a model and a config each; some malicious."""
    malicious = set()
    for index in range(count):
        repo_id = f"{ORG}/model-{index:04d}"
        evil = index % every_malicious == 7
        if evil:
            malicious.add(repo_id)
        files = {
            "pytorch_model.bin": model_bytes(index, evil, padding),
            "config.json": json.dumps({"hidden": 4 + index % 3, "index": index}).encode(),
        }
        hub.add(repo_id, files, tags=["pytorch"] + (["vision"] if index % 10 == 0 else []))
    return HubFleet(hub, frozenset(malicious))


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[FakeHub]:
    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield hub
    hub.close()


@pytest.fixture
def make_model() -> Callable[[int, bool, int], bytes]:
    """``model_bytes(index, malicious, padding)`` for tests (they cannot import this module)."""
    return model_bytes


def report_differences(got: Any, want: Any) -> list[str]:
    """What differs between two reports, artifact by artifact (pytest's diff of
    420 artifacts is too long for a CI log's tail)."""
    differences: list[str] = []
    mine = {a.path: a for a in got.artifacts}
    theirs = {a.path: a for a in want.artifacts}
    for path in sorted(mine.keys() | theirs.keys()):
        if mine.get(path) != theirs.get(path):
            differences.append(f"{path}:\n  got  {mine.get(path)!r}\n  want {theirs.get(path)!r}")
    if [a.path for a in got.artifacts] != [a.path for a in want.artifacts]:
        differences.append("the artifacts are in another order")
    for name in ("errors", "skipped"):
        if getattr(got, name) != getattr(want, name):
            differences.append(f"{name}: got {getattr(got, name)!r}, want {getattr(want, name)!r}")
    if not differences and got != want:
        differences.append(f"the reports differ elsewhere: {got!r} != {want!r}")
    return differences


@pytest.fixture
def same_report() -> Callable[[Any, Any], list[str]]:
    """``same_report(got, want)``: the differences, [] when the reports are equal."""
    return report_differences


@pytest.fixture
def hub_fleet(fake_hub: FakeHub) -> HubFleet:
    return build_fleet(fake_hub, 210)


# ---- moto's S3 server -----------------------------------------------------------------


class S3Server:
    """moto's server in a subprocess (``s3_server.py`` beside this file), with its counts."""

    def __init__(self) -> None:
        import subprocess
        import sys
        from pathlib import Path

        script = Path(__file__).with_name("s3_server.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, path: str, method: str = "GET") -> Any:
        import urllib.request

        request = urllib.request.Request(f"{self.url}{path}", method=method)
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    @property
    def counts(self) -> Counter[str]:
        return Counter(self._call("/__counts")["counts"])

    @property
    def object_gets(self) -> Counter[str]:
        return Counter(self._call("/__counts")["object_gets"])

    @property
    def model_bytes(self) -> int:
        return int(self._call("/__counts")["model_bytes"])

    def reset_counts(self) -> None:
        self._call("/__reset", "POST")

    def reset_moto(self) -> None:
        """Empty buckets and counts."""
        self._call("/__reset?moto=1", "POST")

    def set_delay(self, seconds: float) -> None:
        self._call(f"/__delay?seconds={seconds}", "POST")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """One moto server per test module (filling a bucket costs seconds); see ``bucket``."""
    s3fs = pytest.importorskip("s3fs")
    server = S3Server()
    saved = {key: os.environ.get(key) for key in s3_environment(server.url)}
    os.environ.update(s3_environment(server.url))
    s3fs.S3FileSystem.clear_instance_cache()  # instances keep the endpoint they were made with
    yield server
    s3fs.S3FileSystem.clear_instance_cache()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.close()


def s3_environment(url: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }


@dataclass(frozen=True)
class Bucket:
    server: S3Server
    name: str
    malicious: frozenset[str]  # s3:// names of the malicious objects


def fill_bucket(
    server: S3Server, count: int, every_malicious: int = 40, padding: int = 320 * 1024
) -> Bucket:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("models")
    malicious = set()
    for index in range(count):
        team = "team-a" if index % 2 else "team-b"
        key = f"models/{team}/m{index:04d}.pt"
        evil = index % every_malicious == 3
        if evil:
            malicious.add(f"s3://{key}")
        fs.pipe_file(key, model_bytes(index, evil, padding))
    return Bucket(server, "models", frozenset(malicious))


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> Bucket:
    """204 objects below s3://models/; a test that changes one puts it back."""
    return fill_bucket(s3_server, 204)


@pytest.fixture
def counted(s3_server: S3Server) -> S3Server:
    s3_server.reset_counts()
    return s3_server

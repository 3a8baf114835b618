"""Fixtures every test folder shares: one loopback HTTP(S) server and a non-root user.

``LoopbackServer`` is a stdlib HTTP server on 127.0.0.1 in a thread. Tests give it
routes: plain files (with Range support that can be switched off), failures (503
first), connections that die mid-body, redirects, JSON, and *cloaking* routes that
choose their body from the request (a server that shows a scanner other bytes than
a loader). ``fallback`` lets a fake service (the fake Hugging Face Hub) answer
paths it computes. It records every request and counts the body bytes it sent.
With ``tls`` it speaks HTTPS with a throw-away certificate that the ``https_server``
fixture makes trusted through ``SSL_CERT_FILE``.

``FakeHub`` (fixture ``hub``) answers, on that server, the slice of the Hugging
Face Hub API that huggingface_hub's ``model_info(files_metadata=True)``,
``hf_hub_download`` and ``snapshot_download`` use (checked against the source of
huggingface_hub 0.24 and 2.4): repo metadata with siblings and LFS sha256, the
recursive tree listing, and ``/resolve/`` answering HEAD and GET with
``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag`` and ``X-Linked-Size``. It can
lie: ``tamper`` serves other bytes than the metadata vouches for, and ``add``
takes any file names, hostile ones included.

``unprivileged`` runs code as a user without root's power over file modes: the
current user when it is not root, else ``nobody`` (uid 65534) through setuid in a
subprocess; it skips with the reason when neither is possible.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

# ---- the loopback server -------------------------------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    die_after: int | None = None  # close the connection after this many body bytes
    hold_after: int | None = None  # send this many body bytes, then wait for ``release``
    fail_first: int = 0  # answer 503 this many times first
    cut_ranges: int = 0  # the first N ranged answers stop halfway and close
    redirect: str | None = None  # answer ``status`` (default 302) with this Location
    cloak: Callable[[Mapping[str, str]], bytes] | None = None  # body chosen per request
    hits: int = 0


class Hit(NamedTuple):
    method: str
    path: str  # as sent, with the query string
    range: str | None


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if not first:
        count = int(last)
        if count == 0 or size == 0:
            return None
        return max(0, size - count), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


class LoopbackServer:
    def __init__(self, *, ranges: bool = True, tls: TlsFiles | None = None) -> None:
        self.ranges = ranges
        self.routes: dict[str, Route] = {}
        self.requests: list[Hit] = []
        self.request_headers: list[dict[str, str]] = []  # beside ``requests``, one per request
        self.bytes_sent = 0
        # (method, raw path, request headers) -> Route | None, for fake services
        self.fallback: Callable[[str, str, Mapping[str, str]], Route | None] | None = None
        self._lock = threading.Lock()
        self.release = threading.Event()  # lets held responses finish (set on close)
        self.scheme = "https" if tls else "http"
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                server._answer(self, "HEAD")

            def do_GET(self) -> None:
                server._answer(self, "GET")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    # -- set-up ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def serve(self, path: str, body: bytes = b"", **kwargs: object) -> str:
        self.routes[path] = Route(body, **kwargs)  # type: ignore[arg-type]
        return self.url + path

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = Route(status=status, redirect=location)
        return self.url + path

    def json(self, path: str, value: object) -> str:
        body = json.dumps(value).encode()
        return self.serve(path, body, headers={"Content-Type": "application/json"})

    @property
    def authorizations(self) -> list[str | None]:
        return [headers.get("Authorization") for headers in self.request_headers]

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()
            self.bytes_sent = 0

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- answering -------------------------------------------------------------------------
    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        headers = {k: v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(Hit(method, handler.path, headers.get("Range")))
            self.request_headers.append(headers)
        path = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path)
        route = self.routes.get(path)
        if route is None and self.fallback is not None:
            route = self.fallback(method, handler.path, headers)
        if route is None:
            self._send(handler, method, 404, b"", {})
            return
        route.hits += 1
        if route.hits <= route.fail_first:
            self._send(handler, method, 503, b"", {})
            return
        if route.redirect is not None:
            self._send(handler, method, route.status, b"", {"Location": route.redirect})
            return
        body = route.cloak(headers) if route.cloak is not None else route.body
        out = dict(route.headers)
        if route.etag is not None:
            out["ETag"] = route.etag
        wanted = headers.get("Range")
        plain = route.die_after is None and route.hold_after is None
        if self.ranges and route.status == 200 and plain:
            out["Accept-Ranges"] = "bytes"
            if_range = headers.get("If-Range")
            if wanted and (if_range is None or if_range == route.etag):
                span = _parse_range(wanted, len(body))
                if span is None:
                    out["Content-Range"] = f"bytes */{len(body)}"
                    self._send(handler, method, 416, b"", out)
                    return
                start, end = span
                out["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                part = body[start : end + 1]
                with self._lock:
                    cut = route.cut_ranges > 0 and len(part) > 1
                    route.cut_ranges -= cut
                if cut:
                    self._send(handler, method, 206, part, out, die_after=len(part) // 2)
                    return
                self._send(handler, method, 206, part, out)
                return
        self._send(handler, method, route.status, body, out, route.die_after, route.hold_after)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        status: int,
        body: bytes,
        headers: Mapping[str, str],
        die_after: int | None = None,
        hold_after: int | None = None,
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        if die_after is not None:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if method == "HEAD":
            return
        sent = body if die_after is None else body[:die_after]
        # Counted before the write: the client may read the body and the test may
        # check the count before this thread runs again.
        with self._lock:
            self.bytes_sent += len(sent)
        try:
            if hold_after is not None:
                handler.wfile.write(sent[:hold_after])
                handler.wfile.flush()
                self.release.wait(60)
                sent = sent[hold_after:]
            handler.wfile.write(sent)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with self._lock:
                self.bytes_sent -= len(sent)
        if die_after is not None:
            handler.close_connection = True


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def range_server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer(ranges=True)
    yield srv
    srv.close()


@pytest.fixture
def plain_server() -> Iterator[LoopbackServer]:
    """A server that ignores Range headers (always answers 200 with the whole file)."""
    srv = LoopbackServer(ranges=False)
    yield srv
    srv.close()


def make_tls_files(folder: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 and localhost, written into ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelguard loopback")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(folder / "cert.pem", folder / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_server(tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """An HTTPS loopback server whose certificate urllib (and subprocesses) trust."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.cert))
    srv = LoopbackServer(tls=tls_files)
    yield srv
    srv.close()


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
    served: dict[str, Route] = field(default_factory=dict)  # tampered answers by file name

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
        self.repos[repo_id].served[name] = Route(body, **kwargs)  # type: ignore[arg-type]

    def _json(self, value: object) -> Route:
        body = json.dumps(value).encode()
        return Route(body, headers={"Content-Type": "application/json"})

    def _route(self, method: str, raw_path: str, headers: Mapping[str, str]) -> Route | None:
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


# ---- a user without root's power over file modes -------------------------------------------

NOBODY = 65534
# Linux capabilities that let root ignore file modes and ownership.
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3
_PR_CAPBSET_DROP = 24


def _drop_file_mode_powers() -> None:
    """In a child of root: lose the capabilities that bypass file modes, then exec."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@dataclass(frozen=True)
class Unprivileged:
    """Runs commands without root's power over file modes.

    ``how`` is "self" (we are not root), "nobody" (setuid to uid 65534), or
    "capless-root" for Python when the interpreter lives where nobody cannot
    reach it (a pyenv under /root): root without CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH and CAP_FOWNER obeys file modes like any owner.
    Plain tools (``cat``) always run as nobody when we are root.
    """

    how: str
    python_how: str
    made: list[Path] = field(default_factory=list)  # folders to remove at the end

    @property
    def other_user(self) -> bool:
        """True when ``run`` executes as a different user than the test process."""
        return self.how == "nobody"

    @staticmethod
    def _preexec(how: str) -> Callable[[], None] | None:
        return {"nobody": _become_nobody, "capless-root": _drop_file_mode_powers}.get(how)

    def run(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run a tool as this user (text mode, output captured, 120 s cap)."""
        return self._run(self.how, argv, **kwargs)

    def _run(self, how: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            argv,
            preexec_fn=self._preexec(how),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **kwargs,
        )

    def python(self, code: str, **kwargs: object) -> str:
        """Run Python code in this interpreter without file-mode powers; its stdout."""
        done = self._run(self.python_how, [sys.executable, "-c", code], **kwargs)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def folder(self) -> Path:
        """A fresh folder the unprivileged Python owns (pytest's temp folders are root's)."""
        path = Path(tempfile.mkdtemp(prefix="modelguard-nonroot-"))
        self.made.append(path)
        path.chmod(0o755)
        if self.python_how == "nobody":
            os.chown(path, NOBODY, NOBODY)
        return path


def _remove_tree(path: Path) -> None:
    for folder, dirnames, _ in os.walk(path):
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(folder, name), 0o700)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def unprivileged() -> Iterator[Unprivileged]:
    user = _unprivileged_user()
    yield user
    for path in user.made:
        _remove_tree(path)


_PROBE = (
    "import modelguard, os, tempfile\n"
    "d = tempfile.mkdtemp(); p = os.path.join(d, 'x'); open(p, 'w').close(); os.chmod(p, 0)\n"
    "try:\n    open(p).close(); print('modes ignored')\n"
    "except PermissionError:\n    print('modes obeyed')\n"
    "os.chmod(p, 0o600); os.remove(p); os.rmdir(d)\n"
)


def _unprivileged_user() -> Unprivileged:
    if os.geteuid() != 0:
        return Unprivileged("self", "self")
    problems = []
    for how in ("nobody", "capless-root"):
        try:
            probe = Unprivileged(how, how)._run(how, [sys.executable, "-c", _PROBE])
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{how}: {exc}")
            continue
        if probe.returncode == 0 and probe.stdout.strip() == "modes obeyed":
            return Unprivileged("nobody", how)
        problems.append(f"{how}: {(probe.stderr or probe.stdout).strip()[-200:]}")
    pytest.skip("no way to run Python without root's file-mode powers: " + "; ".join(problems))

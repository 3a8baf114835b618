"""The results store: registry scans remembered by content identity, in SQLite.

A row's key is a digest of the artifact's identity (the Hub's LFS sha256 or git
blob id, an object's path with its ETag/version, a URL with its strong ETag),
modelguard's version and rule-set digest, and the settings that change what a
scanner reports (caps, allowed globals). So a new release, an edited scanner
or another policy never answers from an old row, and identical files in many
repositories are scanned once.

Rows hold the raw findings (before policy, without the display path), exactly
like :mod:`modelguard.scan.cache`, whose serialisation they share: the driver
turns a fresh scan and a stored one into the report through the same function,
so the two cannot differ.

Only the driver writes. Rows are committed in small batches while the run goes
on (and on any exit), so an interrupted run resumes where it stopped. A row
that does not parse is a miss: the store can save time, never change a verdict.
A Hub repository's file list is also kept per commit (a commit never changes),
so a nightly rerun of an unchanged organisation costs its listing pages only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from modelguard._version import __version__
from modelguard.errors import UsageError
from modelguard.findings import Finding
from modelguard.policy import Policy
from modelguard.registry.artifacts import Artifact, RawScan
from modelguard.rules.scan import SCANNER_ERROR
from modelguard.scan.cache import (
    _finding_from_json,
    _finding_to_json,
    default_cache_dir,
    ruleset_digest,
)

STORE_SCHEMA = 1
DEFAULT_NAME = "registry-results-v1.sqlite"
COMMIT_EVERY = 64  # rows; a crash loses at most this many scans
COMMIT_INTERVAL_S = 2.0
_UNSTORABLE_RULES = frozenset({SCANNER_ERROR.id})

_TABLES = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    format TEXT NOT NULL,
    size INTEGER NOT NULL,
    findings TEXT NOT NULL,
    last_display TEXT NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT PRIMARY KEY,
    artifacts TEXT NOT NULL,
    stored_at REAL NOT NULL
);
"""


def default_store_path() -> Path:
    return default_cache_dir() / DEFAULT_NAME


def scan_settings_digest(policy: Policy) -> str:
    """What besides the bytes decides a scan's raw findings."""
    material = {
        "schema": STORE_SCHEMA,
        "version": __version__,
        "ruleset": ruleset_digest(),
        "limits": sorted(vars(policy.limits).items()),
        "allow_globals": sorted(policy.allow_globals),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def storable(raw: RawScan) -> bool:
    """A scan that did not finish normally (a scanner error) is tried again next run."""
    return not any(f.rule_id in _UNSTORABLE_RULES for f in raw.findings)


def encode_findings(findings: Sequence[Finding]) -> str:
    return json.dumps([_finding_to_json(f) for f in findings], sort_keys=True)


def decode_findings(text: str, display: str) -> tuple[Finding, ...]:
    """Findings re-located at ``display``; raises ValueError/KeyError/TypeError if malformed."""
    raw = json.loads(text)
    if not isinstance(raw, list):
        raise TypeError("findings is not a list")
    return tuple(_finding_from_json(item, display) for item in raw)


class ResultStore:
    """One SQLite file; open with :meth:`open`, used by the driver only."""

    def __init__(self, connection: sqlite3.Connection, path: Path, settings: str) -> None:
        self._db = connection
        self.path = path
        self._settings = settings
        self._pending = 0
        self._last_commit = time.monotonic()

    @classmethod
    def open(cls, path: Path, policy: Policy) -> ResultStore:
        """Open (creating) the store at ``path``.

        Raises:
            UsageError: ``path`` cannot be created or is not a results database.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=30, isolation_level="DEFERRED")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_TABLES)
            db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"{path}: cannot open the results database: {exc}") from None
        return cls(db, path, scan_settings_digest(policy))

    def _key(self, identity: str) -> str:
        return hashlib.sha256(f"{self._settings}\x1f{identity}".encode()).hexdigest()

    # -- scan results ----------------------------------------------------------------
    def lookup(self, artifact: Artifact) -> RawScan | None:
        """The stored raw scan for this artifact's identity, re-located at its display."""
        if artifact.identity is None:
            return None
        row = self._db.execute(
            "SELECT format, size, findings FROM results WHERE key = ?",
            (self._key(artifact.identity),),
        ).fetchone()
        if row is None:
            return None
        fmt, size, text = row
        try:
            findings = decode_findings(text, artifact.display)
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        if not isinstance(fmt, str) or not isinstance(size, int):
            return None
        return RawScan(fmt, size, findings)

    def put(self, identity: str, display: str, raw: RawScan) -> bool:
        """Remember a scan; False when it is not storable (it did not finish normally)."""
        if not storable(raw):
            return False
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self._key(identity),
                identity,
                raw.format,
                raw.size,
                encode_findings(raw.findings),
                display,
                time.time(),
            ),
        )
        self._written()
        return True

    # -- Hub file lists per commit -----------------------------------------------------
    def snapshot(self, endpoint: str, repo: str, commit: str) -> tuple[Artifact, ...] | None:
        row = self._db.execute(
            "SELECT artifacts FROM snapshots WHERE key = ?",
            (_snapshot_key(endpoint, repo, commit),),
        ).fetchone()
        if row is None:
            return None
        try:
            return tuple(_artifact(item) for item in json.loads(row[0]))
        except (ValueError, KeyError, TypeError):
            return None

    def put_snapshot(
        self, endpoint: str, repo: str, commit: str, artifacts: Iterable[Artifact]
    ) -> None:
        body = json.dumps([asdict(a) for a in artifacts], sort_keys=True)
        self._db.execute(
            "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)",
            (_snapshot_key(endpoint, repo, commit), body, time.time()),
        )
        self._written()

    # -- commits -----------------------------------------------------------------------
    def _written(self) -> None:
        self._pending += 1
        due = time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S
        if self._pending >= COMMIT_EVERY or due:
            self.commit()

    def commit(self) -> None:
        self._db.commit()
        self._pending = 0
        self._last_commit = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.commit()
        self._db.close()

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return count


def _snapshot_key(endpoint: str, repo: str, commit: str) -> str:
    return f"{STORE_SCHEMA}\x1f{endpoint}\x1f{repo}\x1f{commit}"


def _artifact(item: Any) -> Artifact:
    if not isinstance(item, dict):
        raise TypeError("artifact is not an object")
    # JSON has no tuples: the published digests come back as lists of pairs.
    expected = tuple((str(kind), str(value)) for kind, value in item.pop("expected", ()))
    artifact = Artifact(**item, expected=expected)
    if not isinstance(artifact.display, str) or artifact.kind not in ("http", "fsspec"):
        raise TypeError("malformed artifact")
    return artifact

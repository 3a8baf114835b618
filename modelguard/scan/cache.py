"""Scan-result cache: skip re-scanning files that have not changed.

Why the key is file identity, not a content digest: the scanner reads only the
parts of a file that can execute code (a torch checkpoint's pickle members, a
safetensors header), so hashing every byte of a 1 GiB checkpoint would cost far
more than scanning it. An entry is therefore keyed by what ``stat`` says about
the file: real path, device, inode, size, mtime_ns and ctime_ns. Any write to
the file changes mtime and ctime; ``touch -d``/``os.utime`` can put mtime back
but not ctime, which only the kernel sets, so swapped content with a forged
mtime still misses. The key also holds the modelguard version, a digest of the
rule catalogue and of the scanner code itself (so an edited scanner in a
development checkout never serves stale results), and the policy settings that
change what a scanner reports (caps, allowed globals).

Entries store the raw findings, before policy suppressions, without the display
path; policy and display path are applied on every run, so a changed ignore list
or scan root takes effect without invalidating anything.

An entry that fails to parse, fails its checksum, or names a different key is
ignored and the file is scanned again: the cache can only save time, never
change a verdict. Writes go to a temporary file renamed into place, so readers
never see half an entry. Entries older than 30 days are deleted (checked at
most once a day, when an entry is written). The cache lives in ``$MODELGUARD_CACHE_DIR``, else
``$XDG_CACHE_HOME/modelguard``, else ``~/.cache/modelguard``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelguard._version import __version__
from modelguard.files import ENV_CACHE_DIR as ENV_CACHE_DIR  # the name tests set
from modelguard.files import user_cache_dir
from modelguard.findings import Finding, Location, Severity
from modelguard.policy import ScanSettings
from modelguard.rules.scan import SCANNER_ERROR

ENTRY_SCHEMA = 1
MAX_AGE_DAYS = 30
PRUNE_INTERVAL_S = 86400
# Findings of these rules mean the scan itself did not finish normally; such a
# result is never stored, so the next run tries again.
_UNCACHEABLE_RULES = frozenset({SCANNER_ERROR.id})


def default_cache_dir() -> Path:
    """The cache folder: MODELGUARD_CACHE_DIR, XDG_CACHE_HOME/modelguard or ~/.cache/modelguard."""
    return user_cache_dir()


@functools.lru_cache(maxsize=1)
def ruleset_digest() -> str:
    """Digest of the rule catalogue and the scanner code that produces findings."""
    from modelguard import rules

    h = hashlib.sha256()
    h.update(__version__.encode())
    for rule in rules.all_rules():
        h.update(f"\x1e{rule.id}\x1f{rule.name}\x1f{rule.severity.label}".encode())
    # The scanner sources: an edited scanner (editable installs, development
    # checkouts) must not be answered from results of the old code.
    package = Path(__file__).resolve().parent
    for source in sorted(package.glob("*.py")):
        h.update(b"\x1e" + source.name.encode() + b"\x1f")
        with contextlib.suppress(OSError):
            h.update(source.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class FileIdentity:
    """What ``stat`` says about a file; any content change alters it."""

    real_path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, real_path: str, info: os.stat_result) -> FileIdentity:
        return cls(
            real_path=real_path,
            device=info.st_dev,
            inode=info.st_ino,
            size=info.st_size,
            mtime_ns=info.st_mtime_ns,
            ctime_ns=info.st_ctime_ns,
        )


@dataclass(frozen=True)
class CachedScan:
    """A stored scan result: the format label and the raw findings."""

    format: str
    findings: tuple[Finding, ...]


def _key_material(identity: FileIdentity, settings: ScanSettings) -> str:
    return json.dumps(
        {
            "schema": ENTRY_SCHEMA,
            "version": __version__,
            "ruleset": ruleset_digest(),
            "file": [
                identity.real_path,
                identity.device,
                identity.inode,
                identity.size,
                identity.mtime_ns,
                identity.ctime_ns,
            ],
            "limits": sorted(vars(settings.limits).items()),
            "allow_globals": sorted(settings.allow_globals),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _finding_to_json(finding: Finding) -> dict[str, Any]:
    message = finding.message
    # Messages that start with the file's display name ("a.bin: format not
    # recognised") get the current name back on a hit, whatever the scan root.
    prefix = f"{finding.location.path}: "
    named = message.startswith(prefix)
    return {
        "rule": finding.rule_id,
        "severity": finding.severity.label,
        "message": message[len(prefix) :] if named else message,
        "named": named,
        "members": list(finding.location.members),
        "offset": finding.location.offset,
        "evidence": finding.evidence,
    }


def _finding_from_json(raw: Any, display: str) -> Finding:
    """Rebuild one finding; raises ValueError/KeyError/TypeError on a malformed entry."""
    if not isinstance(raw, dict):
        raise TypeError("finding is not an object")
    rule_id, message, members = raw["rule"], raw["message"], raw["members"]
    offset, evidence = raw["offset"], raw["evidence"]
    if not isinstance(rule_id, str) or not isinstance(message, str):
        raise TypeError("rule and message must be strings")
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise TypeError("members must be a list of strings")
    if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)):
        raise TypeError("offset must be an integer")
    if evidence is not None and not isinstance(evidence, str):
        raise TypeError("evidence must be a string")
    severity = Severity.parse(str(raw["severity"]))
    if raw.get("named") is True:
        message = f"{display}: {message}"
    return Finding(
        rule_id=rule_id,
        severity=severity,
        message=message,
        location=Location(display, tuple(members), offset),
        evidence=evidence,
    )


@dataclass(frozen=True)
class ScanCache:
    """A folder of scan results. Picklable, so worker processes share it."""

    directory: Path

    @classmethod
    def default(cls) -> ScanCache:
        return cls(default_cache_dir())

    def _entry_path(self, key: str) -> Path:
        return self.directory / f"v{ENTRY_SCHEMA}" / key[:2] / f"{key}.json"

    def lookup(
        self,
        identity: FileIdentity,
        settings: ScanSettings,
        display: str,
    ) -> CachedScan | None:
        """The stored result for this exact file state, or None (miss or bad entry)."""
        material = _key_material(identity, settings)
        key = hashlib.sha256(material.encode()).hexdigest()
        try:
            text = self._entry_path(key).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        return _parse_entry(text, material, display)

    def store(
        self,
        identity: FileIdentity,
        settings: ScanSettings,
        fmt: str,
        findings: Sequence[Finding],
    ) -> bool:
        """Store a result atomically; returns False when it was not stored.

        Results of scans that did not finish normally (scanner errors) are not
        stored. A cache folder that cannot be written is not an error: the scan
        result stands, it is just not remembered.
        """
        if any(f.rule_id in _UNCACHEABLE_RULES for f in findings):
            return False
        material = _key_material(identity, settings)
        key = hashlib.sha256(material.encode()).hexdigest()
        payload = {
            "key": material,
            "format": fmt,
            "findings": [_finding_to_json(f) for f in findings],
        }
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        entry = json.dumps(
            {"sha256": hashlib.sha256(body.encode()).hexdigest(), "body": body},
            separators=(",", ":"),
        )
        path = self._entry_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".entry.", suffix=".tmp", dir=path.parent)
        except OSError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(entry)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False
        self.prune_if_due()
        return True

    def prune_if_due(self, now: float | None = None) -> int:
        """At most once a day, delete entries written more than MAX_AGE_DAYS ago.

        Entries of files that changed are never hit again; this keeps them from
        piling up. An unchanged file's entry simply expires and is rescanned.
        Returns the number of entries deleted.
        """
        now = time.time() if now is None else now
        marker = self.directory / f"v{ENTRY_SCHEMA}" / "last-prune"
        try:
            if now - marker.stat().st_mtime < PRUNE_INTERVAL_S:
                return 0
        except FileNotFoundError:
            pass
        except OSError:
            return 0
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os.utime(marker, (now, now))
        except OSError:
            return 0
        removed = 0
        cutoff = now - MAX_AGE_DAYS * 86400
        for entry in marker.parent.glob("*/*"):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
        return removed


def _parse_entry(text: str, material: str, display: str) -> CachedScan | None:
    """Validate an entry completely; anything unexpected makes it a miss."""
    try:
        entry = json.loads(text)
        if not isinstance(entry, dict):
            return None
        body, checksum = entry.get("body"), entry.get("sha256")
        if not isinstance(body, str) or not isinstance(checksum, str):
            return None
        if hashlib.sha256(body.encode("utf-8", errors="surrogatepass")).hexdigest() != checksum:
            return None
        payload = json.loads(body)
        if not isinstance(payload, dict) or payload.get("key") != material:
            return None
        fmt, raw_findings = payload.get("format"), payload.get("findings")
        if not isinstance(fmt, str) or not isinstance(raw_findings, list):
            return None
        findings = tuple(_finding_from_json(raw, display) for raw in raw_findings)
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return CachedScan(format=fmt, findings=findings)

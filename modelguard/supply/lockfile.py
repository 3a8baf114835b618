"""``modelguard.lock``: pinned, hashed artifacts in a small, diff-friendly TOML file.

Format (version 1)::

    # modelguard.lock: pinned model artifacts. Check with `modelguard verify`.
    version = 1

    [[artifact]]
    path = "models/resnet50.safetensors"   # POSIX, relative to the lock file's folder
    size = 102469840
    sha256 = "c2a8…"
    sha1 = "8e89…"                         # only where a source publishes sha1 (zoo)
    source = "hf://owner/repo@<commit>/resnet50.safetensors"
    revision = "<commit sha>"              # pinned revision, when the source has one
    scan = "clean"          # verdict when locked: clean|info|low|medium|high|critical|not-scanned

Entries are sorted by path and keys are written in a fixed order, so a
re-lock of unchanged files is a no-op diff.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from modelguard.errors import UsageError
from modelguard.files import write_atomic
from modelguard.findings import Finding, Severity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

LOCK_NAME = "modelguard.lock"
LOCK_VERSION = 1
NOT_SCANNED = "not-scanned"
_KEY_ORDER = ("path", "size", "sha256", "sha1", "source", "revision", "scan")


@dataclass(frozen=True)
class LockEntry:
    path: str
    size: int
    sha256: str | None = None
    sha1: str | None = None
    source: str | None = None
    revision: str | None = None
    scan: str | None = None

    def expected_digests(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.sha256:
            out["sha256"] = self.sha256
        if self.sha1:
            out["sha1"] = self.sha1
        return out


@dataclass(frozen=True)
class LockFile:
    entries: tuple[LockEntry, ...] = ()

    def by_path(self) -> dict[str, LockEntry]:
        return {e.path: e for e in self.entries}

    def updated(self, new: Iterable[LockEntry]) -> LockFile:
        """Entries of ``new`` replace same-path entries; the rest are kept."""
        table = self.by_path()
        for entry in new:
            old = table.get(entry.path)
            if old is not None and entry.source is None and entry.sha256 == old.sha256:
                # Re-locking a fetched file keeps where it came from.
                entry = replace(entry, source=old.source, revision=old.revision)
            table[entry.path] = entry
        return LockFile(tuple(sorted(table.values(), key=lambda e: e.path)))


def scan_verdict(findings: Iterable[Finding]) -> str:
    """The ``scan`` value of an entry: "clean", or the worst severity above info."""
    worst = max((f.severity for f in findings), default=None)
    return "clean" if worst is None or worst == Severity.INFO else worst.label


def lock_relative(path: Path, lock_path: Path) -> str:
    """``path`` as stored in the lock: POSIX, relative to the lock file's folder."""
    base = lock_path.resolve().parent
    absolute = path.resolve()
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        raise UsageError(
            f"{path}: cannot lock a file outside the lock file's folder {base}"
        ) from None


def require_recordable(rel: str, path: Path) -> None:
    """Refuse a name a TOML lock file cannot hold.

    TOML is UTF-8 text; a file name that is not valid UTF-8 (kept by Python as
    surrogate escapes) would be written as an escape TOML rejects, and every
    later ``verify`` would fail on the lock instead of checking the files.
    """
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise UsageError(
            f"{shown}: the file name is not valid UTF-8, so a lock file (TOML, UTF-8 "
            "text) cannot record it; rename the file"
        ) from None


def read_lock(path: Path) -> LockFile:
    """Parse and validate a lock file; errors name the file and the entry."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{path}: lock file not found") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read lock file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    version = document.get("version")
    if version != LOCK_VERSION:
        raise UsageError(f"{path}: unsupported lock version {version!r} (expected {LOCK_VERSION})")
    raw = document.get("artifact", [])
    if not isinstance(raw, list):
        raise UsageError(f"{path}: 'artifact' must be an array of tables")
    entries: list[LockEntry] = []
    for index, item in enumerate(raw):
        where = f"{path}: artifact[{index}]"
        if not isinstance(item, dict):
            raise UsageError(f"{where} must be a table")
        unknown = set(item) - set(_KEY_ORDER)
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        rel = item.get("path")
        size = item.get("size")
        if not isinstance(rel, str) or not rel:
            raise UsageError(f"{where}: 'path' (a string) is required")
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise UsageError(f"{where}: path {rel!r} must be relative and stay inside the folder")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UsageError(f"{where}: 'size' must be a non-negative integer")
        fields: dict[str, str | None] = {}
        for key in ("sha256", "sha1", "source", "revision", "scan"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"{where}: {key!r} must be a string")
            fields[key] = value
        for key, length in (("sha256", 64), ("sha1", 40)):
            value = fields[key]
            if value is not None and (
                len(value) != length or any(c not in "0123456789abcdef" for c in value.lower())
            ):
                raise UsageError(f"{where}: {key} {value!r} is not {length} hex digits")
        entries.append(LockEntry(path=rel, size=size, **fields))
    return LockFile(tuple(entries))


def render_lock(lock: LockFile) -> str:
    lines = [
        "# modelguard.lock: pinned model artifacts. Check with `modelguard verify`.",
        "# Generated by modelguard; paths are relative to this file's folder.",
        f"version = {LOCK_VERSION}",
    ]
    for entry in sorted(lock.entries, key=lambda e: e.path):
        lines += ["", "[[artifact]]"]
        for key in _KEY_ORDER:
            value = getattr(entry, key)
            if value is None:
                continue
            # json.dumps yields a valid TOML basic string (same escapes).
            lines.append(
                f"{key} = {value}" if isinstance(value, int) else f"{key} = {json.dumps(value)}"
            )
    return "\n".join(lines) + "\n"


def write_lock(path: Path, lock: LockFile) -> None:
    """Write atomically (temporary file + rename): a reader never sees half a lock."""
    try:
        write_atomic(path, render_lock(lock).encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write lock file: {exc.strerror or exc}") from None

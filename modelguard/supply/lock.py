"""``lock``: pin files (size, sha256, scan verdict) in ``modelguard.lock``.

The digest and the verdict recorded together describe the same bytes: a file
whose identity (inode, size, mtime, ctime) changed between hashing and scanning
is not locked but reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from modelguard.files import GIT_PATHS, Entry, Kind, cwd_root, walk
from modelguard.findings import ArtifactResult, InputError, Location, Report
from modelguard.policy import Policy, ignored_policy_report, load_policy
from modelguard.rules import provenance as R
from modelguard.scan.engine import run_scan
from modelguard.supply.hashing import hash_files
from modelguard.supply.lockfile import (
    LOCK_NAME,
    NOT_SCANNED,
    LockEntry,
    LockFile,
    lock_relative,
    read_lock,
    require_recordable,
    scan_verdict,
    write_lock,
)
from modelguard.supply.signing import DEFAULT_SIGNATURE_NAME, SIGNATURE_SUFFIX

PathLike = str | os.PathLike[str]
# Never locked inside a folder: git's own files (as model signing leaves them out)
# and the folder's signature bundle, which changes whenever the model is re-signed.
NOT_LOCKED_AT_TOP = (*GIT_PATHS, DEFAULT_SIGNATURE_NAME)


def is_signature_of_sibling(entry: Entry, names: set[str]) -> bool:
    """``x.sig`` beside ``x``: the single-file bundle, left out of locks."""
    return (
        entry.path.name.endswith(SIGNATURE_SUFFIX)
        and str(entry.path.with_name(entry.path.name[: -len(SIGNATURE_SUFFIX)])) in names
    )


def _identity(path: Path) -> tuple[int, ...] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def lock(
    paths: PathLike | Sequence[PathLike],
    *,
    lockfile: PathLike = LOCK_NAME,
    scan: bool = True,
    policy: Policy | None = None,
) -> Report:
    """Record size, sha256 and scan verdict of files (folders recursively) in a lock file.

    Existing entries for other paths are kept; entries for these files are
    replaced (keeping their recorded source). Inside folders, git's files and
    signature bundles are left out. Returns the scan report of the locked files
    (provenance-only when ``scan`` is False); a leftover partial download is a
    finding (MG411) and is not locked.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    lock_path = Path(lockfile)
    if policy is None:
        policy = load_policy(checked=items)
    existing = read_lock(lock_path) if lock_path.exists() else LockFile()
    listing = walk(items, skip=[lock_path], ignore_top=NOT_LOCKED_AT_TOP)
    root = cwd_root()
    errors = [_error(e) for e in (*listing.missing, *listing.unreadable, *listing.links)]
    if errors:
        return Report(errors=tuple(errors), root=root.as_posix())
    names = {str(e.path) for e in listing.files}
    files = [e for e in listing.files if not is_signature_of_sibling(e, names)]
    before = {str(e.path): _identity(e.path) for e in files}
    old = existing.by_path()
    rels = [lock_relative(e.path, lock_path) for e in files]
    for entry, rel in zip(files, rels, strict=True):
        require_recordable(rel, entry.path)
    need_sha1 = any(old.get(r) is not None and old[r].sha1 for r in rels)
    digests = hash_files([e.path for e in files], ("sha256", "sha1") if need_sha1 else ("sha256",))
    report = Report(root=root.as_posix())
    if scan and files:
        # Files named by the walk are scanned whatever the policy excludes: a lock
        # entry's verdict must describe the file.
        report = run_scan([e.path for e in files], policy=replace(policy, exclude=()), root=root)
    by_display = {a.path: a for a in report.artifacts}
    not_models = {s.path for s in report.skipped}  # scanned: not a model, nothing to flag
    entries = []
    artifacts = []
    changed = []
    for entry, rel in zip(files, rels, strict=True):
        art = by_display.get(entry.display)
        if _identity(entry.path) != before[str(entry.path)]:
            changed.append(InputError(entry.display, "changed while it was being locked"))
            continue
        size = entry.path.stat().st_size
        entries.append(
            LockEntry(
                path=rel,
                size=size,
                sha256=digests[entry.path]["sha256"],
                sha1=digests[entry.path].get("sha1") if old.get(rel) and old[rel].sha1 else None,
                scan=_verdict(art, entry.display in not_models),
            )
        )
        artifacts.append(art if art is not None else ArtifactResult(entry.display, "unknown", size))
    for partial in listing.partial:
        finding = R.PARTIAL_DOWNLOAD.finding(
            f"{partial.display} is an unfinished download: not locked", Location(partial.display)
        )
        artifacts.append(ArtifactResult(partial.display, "unknown", 0, findings=(finding,)))
    write_lock(lock_path, existing.updated(entries))
    result = Report(
        artifacts=tuple(artifacts), errors=report.errors + tuple(changed), root=root.as_posix()
    )
    return result.merged(ignored_policy_report(policy))


def _verdict(scanned: ArtifactResult | None, not_a_model: bool) -> str:
    if scanned is not None:
        return scan_verdict(scanned.findings)
    return scan_verdict(()) if not_a_model else NOT_SCANNED


def _error(entry: Entry) -> InputError:
    if entry.kind is Kind.MISSING:
        return InputError(entry.display, "no such file or directory")
    if entry.kind is Kind.UNREADABLE:
        return InputError(entry.display, f"cannot list folder: {entry.note}")
    return InputError(entry.display, f"{entry.kind.value}: lock its target instead")

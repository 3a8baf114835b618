"""``verify``: check files against a lock file, a digest, or an OpenSSF model-signing bundle.

Every file present is accounted for. Against a lock, a file the lock does not
list is unexpected (MG403), at info severity where lock files leave files out by
default (git's files and signature bundles at the top of the folder), and a
leftover partial download is reported (MG411); against a signature, the same
holds for files the bundle does not cover.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from modelguard.errors import UnreadableInput, UsageError
from modelguard.files import Entry, Kind, cwd_root, display_path, walk
from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.policy import Policy, ignored_policy_report, load_policy
from modelguard.rules import provenance as R
from modelguard.supply import signing
from modelguard.supply.hashing import expected_digests, hash_files
from modelguard.supply.lock import NOT_LOCKED_AT_TOP, is_signature_of_sibling
from modelguard.supply.lockfile import LOCK_NAME, LockEntry, lock_relative, read_lock

PathLike = str | os.PathLike[str]


def verify(
    path: PathLike,
    *,
    lockfile: PathLike | None = None,
    sha256: str | None = None,
    sha1: str | None = None,
    signature: PathLike | None = None,
    key: PathLike | None = None,
    policy: Policy | None = None,
    root: PathLike | None = None,
) -> Report:
    """Check files against a lock file, a digest, or an OpenSSF model-signing bundle.

    Modes (several may be combined; their findings are merged):

    * ``sha256``/``sha1``: ``path`` is one file that must have this digest.
    * ``key`` (+ ``signature``, default ``<folder>/model.sig`` or ``<file>.sig``):
      the bundle must be signed by ``key`` and cover every file present.
    * ``lockfile`` (the default mode, ``modelguard.lock``): like pip's
      ``--require-hashes``, every locked file below ``path`` must exist with its
      size and digest, and no unlocked file may be present.

    ``policy`` (default: discovered, never from inside ``path``) suppresses
    findings it ignores with a reason; its ``fail_on_for`` decides the verdict.
    ``root``: paths in the report are relative to this folder (default: the
    working folder), as in ``scan``, so the two reports merge file by file.

    Raises:
        UsageError: contradictory options, missing lock file, unusable key.
        UnreadableInput: ``path`` does not exist.
    """
    target = Path(path)
    base = Path(root).resolve() if root is not None else cwd_root()
    if not target.exists():
        raise UnreadableInput(display_path(target, base), "no such file or directory")
    if signature is not None and key is None:
        raise UsageError(
            "`signature` needs `key`, the signer's public key (keyless certificate "
            "verification is not supported)"
        )
    if policy is None:
        policy = load_policy(checked=[target])
    report = Report(root=base.as_posix())
    digests = expected_digests(sha256, sha1)
    if digests:
        report = report.merged(_verify_digests(target, digests, base))
    if key is not None:
        bundle = Path(signature) if signature is not None else _default_bundle(target)
        found = signing.verify_signature(target, bundle, Path(key), display_path(target, base))
        report = report.merged(_group(found, base))
    if lockfile is not None or (not digests and key is None):
        report = report.merged(_verify_lock(target, Path(lockfile or LOCK_NAME), base))
    return _suppressed(report, policy).merged(ignored_policy_report(policy))


def _suppressed(report: Report, policy: Policy) -> Report:
    artifacts = []
    for art in report.artifacts:
        kept, suppressed = policy.partition(art.findings)
        artifacts.append(
            ArtifactResult(
                art.path, art.format, art.size, tuple(kept), (*art.suppressed, *suppressed)
            )
        )
    return Report(artifacts=tuple(artifacts), errors=report.errors, root=report.root)


def _default_bundle(target: Path) -> Path:
    if target.is_dir():
        return target / signing.DEFAULT_SIGNATURE_NAME
    return target.with_name(target.name + signing.SIGNATURE_SUFFIX)


def _group(findings: Iterable[Finding], root: Path) -> Report:
    """One ArtifactResult per reported path, sizes from disk where the file exists."""
    grouped: dict[str, list[Finding]] = {}
    for f in findings:
        grouped.setdefault(f.location.path, []).append(f)
    artifacts = []
    for shown, found in grouped.items():
        candidate = root / shown  # an absolute display path stays as it is
        size = candidate.stat().st_size if candidate.is_file() else 0
        artifacts.append(
            ArtifactResult(path=shown, format="unknown", size=size, findings=tuple(found))
        )
    return Report(artifacts=tuple(artifacts), root=root.as_posix())


def _verify_digests(target: Path, expected: Mapping[str, str], root: Path) -> Report:
    shown = display_path(target, root)
    if target.is_dir():
        raise UsageError(f"{shown}: `sha256`/`sha1` check a single file, not a folder")
    try:
        actual = hash_files([target], tuple(expected))[target]
    except UnreadableInput as exc:
        raise UnreadableInput(shown, exc.problem) from None
    found = []
    for algorithm, want in expected.items():
        got = actual[algorithm]
        if got == want:
            found.append(R.VERIFIED.finding(f"{algorithm} {got} matches", Location(shown)))
        else:
            found.append(
                R.DIGEST_MISMATCH.finding(
                    f"{algorithm} mismatch: expected {want}, got {got}",
                    Location(shown),
                    evidence=f"{algorithm}:{got}",
                )
            )
    size = target.stat().st_size
    return Report(
        artifacts=(ArtifactResult(shown, "unknown", size, findings=tuple(found)),),
        root=root.as_posix(),
    )


def _verify_lock(target: Path, lock_path: Path, root: Path) -> Report:
    if not lock_path.exists():
        raise UsageError(
            f"{lock_path}: lock file not found; create it with `modelguard lock PATH`, "
            "or check a digest or a signature instead"
        )
    locked = read_lock(lock_path)
    base = lock_path.resolve().parent
    rel_target = lock_relative(target, lock_path)
    prefix = "" if rel_target == "." else rel_target + "/"
    entries = [e for e in locked.entries if e.path == rel_target or e.path.startswith(prefix)]
    if not entries and target.is_file():
        shown = display_path(target, root)
        finding = R.FILE_UNEXPECTED.finding(f"{shown} is not in {lock_path}", Location(shown))
        return _group([finding], root)
    listing = walk([target], root=root, skip=[lock_path], ignore_top=NOT_LOCKED_AT_TOP)
    if listing.unreadable:
        first = listing.unreadable[0]
        raise UnreadableInput(first.display, f"cannot list folder: {first.note}")
    names = {str(e.path) for e in listing.files}
    # Files a lock leaves out by default still match an entry that names them.
    left_out = [
        e
        for e in (*listing.files, *listing.excluded)
        if e.kind is Kind.EXCLUDED or is_signature_of_sibling(e, names)
    ]
    on_disk = {lock_relative(e.path, lock_path): e for e in listing.files}
    for entry in left_out:
        if entry.path.is_file() and not entry.path.is_symlink():
            on_disk.setdefault(lock_relative(entry.path, lock_path), entry)
    found = _check_entries(entries, on_disk, base, lock_path, root)
    locked_paths = {e.path for e in entries}
    quietly = {lock_relative(e.path, lock_path) for e in left_out}
    for rel in sorted(set(on_disk) - locked_paths):
        shown = on_disk[rel].display
        if rel in quietly:
            found.append(
                R.FILE_UNEXPECTED.finding(
                    f"{rel} is not in {lock_path}; lock files leave it out by default "
                    "(git's files, signature bundles)",
                    Location(shown),
                    evidence=rel,
                    severity=Severity.INFO,
                )
            )
        else:
            found.append(
                R.FILE_UNEXPECTED.finding(
                    f"{rel} is not in {lock_path}", Location(shown), evidence=rel
                )
            )
    for entry in listing.excluded:
        if entry.path.is_dir() and not entry.path.is_symlink():
            found.append(
                R.FILE_UNEXPECTED.finding(
                    f"{entry.display}/ is not in {lock_path}; lock files leave git's "
                    "folders out by default",
                    Location(entry.display),
                    evidence=entry.rel,
                    severity=Severity.INFO,
                )
            )
    found += [_odd_file(e) for e in (*listing.partial, *listing.links)]
    return _group(found, root)


def _odd_file(entry: Entry) -> Finding:
    if entry.kind is Kind.PARTIAL:
        return R.PARTIAL_DOWNLOAD.finding(
            f"{entry.display} is an unfinished download: its bytes were never verified",
            Location(entry.display),
            evidence=entry.display,
        )
    return R.FILE_UNEXPECTED.finding(
        f"{entry.display} is a {entry.kind.value}; locked models hold regular files only",
        Location(entry.display),
        evidence=entry.display,
    )


def _check_entries(
    entries: list[LockEntry],
    on_disk: Mapping[str, Entry],
    base: Path,
    lock_path: Path,
    root: Path,
) -> list[Finding]:
    need = {e.path for e in entries if e.path in on_disk}
    algos = ("sha256", "sha1") if any(e.sha1 and not e.sha256 for e in entries) else ("sha256",)
    sized = [
        on_disk[e.path].path
        for e in entries
        if e.path in need and on_disk[e.path].path.stat().st_size == e.size
    ]
    digests = hash_files(sized, algos)
    found: list[Finding] = []
    for entry in entries:
        shown = display_path(base / entry.path, root)
        where = Location(shown)
        present = on_disk.get(entry.path)
        if present is None:
            found.append(
                R.FILE_MISSING.finding(
                    f"{entry.path} is locked but missing", where, evidence=entry.path
                )
            )
            continue
        size = present.path.stat().st_size
        if size != entry.size:
            found.append(
                R.SIZE_MISMATCH.finding(
                    f"{entry.path} is {size} bytes, locked at {entry.size}",
                    where,
                    evidence=f"size:{size}",
                )
            )
            continue
        expected = entry.expected_digests()
        if not expected:
            found.append(R.NOT_LOCKED.finding(f"{entry.path}: lock entry has no digest", where))
            continue
        actual = digests[present.path]
        algorithm = "sha256" if "sha256" in expected else "sha1"
        if actual[algorithm] != expected[algorithm].lower():
            found.append(
                R.DIGEST_MISMATCH.finding(
                    f"{entry.path} was modified: {algorithm} {actual[algorithm]}, "
                    f"locked {expected[algorithm]}",
                    where,
                    evidence=f"{algorithm}:{actual[algorithm]}",
                )
            )
        else:
            found.append(R.VERIFIED.finding(f"{algorithm} matches {lock_path}", where))
    return found

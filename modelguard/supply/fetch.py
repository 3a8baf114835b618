"""``fetch``: plan → vet names → stage and hash → verify → scan → place or quarantine → lock.

Nothing unverified reaches the destination. Every file of a source is staged
beside its final name (:mod:`modelguard.supply.download`), checked against the
digest its publisher, the user or the lock file vouches for, and scanned by the
engine under the name it will have; only when all of them pass is each one
renamed into place. The bytes placed are the bytes hashed and scanned: the
staged file is checked unchanged before it is renamed, and the lock records
that digest with that scan verdict.

Before any byte is downloaded, fetch refuses names it must never place (escapes,
control characters, ``.git``), leaves out dotfiles, policy and hook files unless
allowed, and refuses to replace a file it did not place itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from modelguard.errors import FetchError, UnreadableInput, UsageError
from modelguard.files import Target, cwd_root, display_path, user_cache_dir
from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.policy import Policy, ignored_policy_report, load_policy
from modelguard.rules import provenance as R
from modelguard.scan.engine import scan_file
from modelguard.supply import hub, placed
from modelguard.supply.download import (
    Destination,
    DownloadOptions,
    PlacementError,
    StagedFile,
    discard,
    place,
    quarantine,
    read_text_url,
    removing_partials_on_signal,
    stage_copy,
    stage_url,
)
from modelguard.supply.hashing import expected_digests
from modelguard.supply.http import InsecureRedirect, describe
from modelguard.supply.lockfile import (
    NOT_SCANNED,
    LockEntry,
    LockFile,
    lock_relative,
    read_lock,
    scan_verdict,
    write_lock,
)
from modelguard.supply.sources import (
    MAX_README_BYTES,
    DownloadPlan,
    RemoteFile,
    check_url,
    is_zoo_readme,
    name_problem,
    needs_opt_in,
    parse_zoo_readme,
    read_local_readme,
    url_plan,
    zoo_plan,
)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch`` did: the report, and where files went."""

    report: Report
    placed: tuple[Path, ...] = ()
    quarantined: tuple[Path, ...] = ()
    source: str = ""
    revision: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.placed) and not self.quarantined


def default_quarantine() -> Path:
    return user_cache_dir() / "quarantine"


def plan_source(
    source: str,
    *,
    expected: Mapping[str, str] | None = None,
    allow_http: bool = False,
    token: str | None = None,
    options: DownloadOptions | None = None,
) -> DownloadPlan:
    """Resolve SOURCE (hf://, URL, zoo readme path or URL) into a download plan."""
    wanted = dict(expected or {})
    options = options or DownloadOptions()
    if hub.is_hf(source):
        plan = hub.hf_plan(source, token=token)
    elif source.startswith(("http://", "https://")):
        check_url(source, allow_http)
        if not is_zoo_readme(source):
            return url_plan(source, wanted)
        text = read_text_url(source, options, MAX_README_BYTES, allow_http=allow_http)
        plan = zoo_plan(parse_zoo_readme(text, source), source)
        check_url(plan.files[0].url or "", allow_http)
    else:
        plan = zoo_plan(parse_zoo_readme(read_local_readme(Path(source)), source), source)
        check_url(plan.files[0].url or "", allow_http)
    if wanted:
        if len(plan.files) != 1:
            raise UsageError(f"{source}: `sha256`/`sha1` need a single file, not a folder")
        plan = replace(plan, files=(_with_expected(plan.files[0], wanted, "the digest given"),))
    return plan


class _PinConflict(Exception):
    """Internal: two parties vouch for different digests of the same file."""

    def __init__(self, remote: RemoteFile, message: str) -> None:
        super().__init__(message)
        self.remote = remote


def _with_expected(remote: RemoteFile, extra: Mapping[str, str], who: str) -> RemoteFile:
    merged = dict(remote.expected)
    for name, value in extra.items():
        if name in merged and merged[name] != value:
            raise _PinConflict(
                remote,
                f"{remote.source}: {who} pins {name} {value} but {remote.vouched_by} "
                f"publishes {merged[name]}; not downloaded (refusing to guess which is right)",
            )
        merged[name] = value
    vouched = f"{remote.vouched_by} and {who}" if remote.vouched_by else who
    return replace(remote, expected=merged, vouched_by=vouched)


def fetch(
    source: str,
    dest: PathLike = ".",
    *,
    lock: PathLike | None = None,
    scan: bool = True,
    policy: Policy | None = None,
    sha256: str | None = None,
    sha1: str | None = None,
    allow_http: bool = False,
    token: str | None = None,
    cache_dir: PathLike | None = None,
    quarantine_dir: PathLike | None = None,
    options: DownloadOptions | None = None,
    force: bool = False,
    allow_dotfiles: bool = False,
) -> FetchResult:
    """Download, verify, scan and atomically place a model artifact.

    Args:
        source: ``hf://owner/repo[@revision][/path]``, an ``https://`` URL, or a
            Caffe-Model-Zoo readme (local path or URL) naming caffemodel_url and sha1.
        dest: destination folder (created if needed).
        lock: a lock file to pin digests from (when it has an entry for the
            destination path) and to record the fetched files into.
        scan: statically scan each file before it is placed.
        policy: scan policy; its ``fail_on`` decides quarantine (default: discovered
            from the working folder upwards, never from inside ``dest``).
        sha256, sha1: the digest the file must have (single-file sources).
        allow_http: accept plain ``http://`` URLs and redirects to them.
        token: Hugging Face token (default: HF_TOKEN / the saved login).
        cache_dir: Hugging Face cache (default: HF_HUB_CACHE or HF_HOME/hub).
        quarantine_dir: where flagged files go (default: the user cache's quarantine).
        options: timeouts, retries, size cap and a byte-progress callback.
        force: replace files at the destination that modelguard did not place.
        allow_dotfiles: also place dotfiles, policy files and hook files the
            source holds (never anything inside a ``.git`` folder).

    Returns:
        A :class:`FetchResult`. Files are placed only when every file of the
        source matched its expected digest and no scan finding reached
        ``policy.fail_on``; otherwise nothing is placed, mismatching files are
        deleted and flagged ones are moved to the quarantine folder.

    Raises:
        UsageError: bad source or options. FetchError: the download itself failed
        (nothing is left at the destination).
    """
    options = options or DownloadOptions()
    dest_dir = Path(dest)
    if policy is None:
        policy = load_policy(checked=[dest_dir])
    notes = ignored_policy_report(policy)
    lock_path = Path(lock) if lock is not None else None
    existing: LockFile | None = None
    try:
        plan = plan_source(
            source,
            expected=expected_digests(sha256, sha1),
            allow_http=allow_http,
            token=token,
            options=options,
        )
        plan, refused = _vet_names(plan, dest_dir, allow_dotfiles)
        if any(f.severity > Severity.INFO for f in refused):
            return FetchResult(notes.merged(_report(refused)), source=source)
        existing = read_lock(lock_path) if lock_path is not None and lock_path.exists() else None
        if lock_path is not None:
            for remote in plan.files:  # fail before downloading, not after placing
                lock_relative(dest_dir / remote.name, lock_path)
        if existing is not None and lock_path is not None:
            plan = replace(
                plan,
                files=tuple(_pin_from_lock(f, dest_dir, lock_path, existing) for f in plan.files),
            )
    except _PinConflict as conflict:
        shown = display_path(dest_dir / conflict.remote.name, cwd_root())
        finding = R.DIGEST_MISMATCH.finding(
            str(conflict), Location(shown), evidence=conflict.remote.source
        )
        return FetchResult(notes.merged(_report([finding])), source=source)
    notes = notes.merged(_report(refused))
    if not plan.files:
        return FetchResult(notes, source=plan.source, revision=plan.revision)

    with Destination(dest_dir) as destination, removing_partials_on_signal():
        blocked, judged = _overwrite_findings(plan, destination, existing, lock_path, force)
        if blocked:
            return FetchResult(notes.merged(_report(blocked)), source=source)
        try:
            staged, cached = _stage_all(plan, destination, token, cache_dir, options, allow_http)
        except InsecureRedirect as exc:
            shown = display_path(dest_dir / plan.files[0].name, cwd_root())
            finding = R.INSECURE_REDIRECT.finding(
                str(exc), Location(shown), evidence=describe(exc.hops)
            )
            return FetchResult(notes.merged(_report([finding])), source=source)
        try:
            result, verdicts = _verify_scan_place(
                plan, staged, cached, destination, judged, scan, policy, quarantine_dir
            )
            if lock_path is not None and result.placed:
                _record_lock(plan, staged, verdicts, lock_path, existing)
            return replace(result, report=notes.merged(result.report))
        finally:
            for item in staged:  # anything not placed or quarantined is removed
                discard(item)


def _report(findings: Sequence[Finding]) -> Report:
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.location.path, []).append(finding)
    artifacts = tuple(
        ArtifactResult(path, "unknown", 0, findings=tuple(found)) for path, found in grouped.items()
    )
    return Report(artifacts=artifacts, root=cwd_root().as_posix())


def _vet_names(
    plan: DownloadPlan, dest: Path, allow_dotfiles: bool
) -> tuple[DownloadPlan, list[Finding]]:
    """Refuse names that must never be placed; leave out opt-in names unless allowed."""
    findings: list[Finding] = []
    kept: list[RemoteFile] = []
    for remote in plan.files:
        problem = name_problem(remote.name)
        if problem is not None:
            shown = display_path(dest, cwd_root())
            findings.append(
                R.UNSAFE_FILE_NAME.finding(
                    f"{remote.source}: the file name {remote.name!r} {problem}; nothing from "
                    f"{plan.source} was downloaded",
                    Location(shown),
                    evidence=ascii(remote.name),
                )
            )
            continue
        opt_in = needs_opt_in(remote.name)
        if opt_in is not None and not allow_dotfiles:
            shown = display_path(dest / remote.name, cwd_root())
            findings.append(
                R.UNSAFE_FILE_NAME.finding(
                    f"{remote.name} {opt_in}: not fetched (dotfiles are not allowed)",
                    Location(shown),
                    evidence=remote.name,
                    severity=Severity.INFO,
                )
            )
            continue
        kept.append(remote)
    return replace(plan, files=tuple(kept)), findings


def _pin_from_lock(remote: RemoteFile, dest: Path, lock_path: Path, lock: LockFile) -> RemoteFile:
    try:
        rel = lock_relative(dest / remote.name, lock_path)
    except UsageError:
        return remote
    entry = lock.by_path().get(rel)
    if entry is None or not entry.expected_digests():
        return remote
    return _with_expected(remote, entry.expected_digests(), f"{lock_path}")


Identity = tuple[int, ...] | None  # what lstat saw at a name (None: nothing there)


def _identity_at(destination: Destination, name: str) -> Identity:
    info = destination.lstat(name)
    if info is None:
        return None
    return (
        info.st_mode,
        info.st_dev,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )


def _overwrite_findings(
    plan: DownloadPlan,
    destination: Destination,
    lock: LockFile | None,
    lock_path: Path | None,
    force: bool,
) -> tuple[list[Finding], dict[str, Identity]]:
    """Why placing a planned file would harm what is at the destination (empty: it would not).

    Also returns what was judged at each name, so placing can check it is still there.
    """
    findings = []
    judged: dict[str, Identity] = {}
    for remote in plan.files:
        shown = display_path(destination.folder / remote.name, cwd_root())
        try:
            judged[remote.name] = _identity_at(destination, remote.name)
            problem = _overwrite_problem(remote, destination, lock, lock_path, force)
        except PlacementError as exc:
            problem = str(exc)
        if problem is not None:
            findings.append(
                R.OVERWRITE_REFUSED.finding(
                    f"{shown}: {problem}; nothing from {plan.source} was downloaded",
                    Location(shown),
                    evidence=remote.name,
                )
            )
    return findings, judged


def _overwrite_problem(
    remote: RemoteFile,
    destination: Destination,
    lock: LockFile | None,
    lock_path: Path | None,
    force: bool,
) -> str | None:
    info = destination.lstat(remote.name)
    if info is None:
        return None
    if stat.S_ISDIR(info.st_mode):
        return "a folder is in the way"
    if force:
        return None
    if stat.S_ISLNK(info.st_mode):
        return (
            "a symbolic link is in the way (it is never written through; replacing it needs force)"
        )
    if not stat.S_ISREG(info.st_mode):
        return "a special file is in the way"
    current = destination.sha256_of(remote.name)
    if current is None:
        return "the file there cannot be read"
    vouched = {
        remote.expected.get("sha256"),
        placed.placed_sha256(_real_final(destination, remote)),
    }
    if lock is not None and lock_path is not None:
        try:
            entry = lock.by_path().get(lock_relative(destination.folder / remote.name, lock_path))
        except UsageError:
            entry = None
        if entry is not None:
            vouched.add(entry.sha256)
    if current in vouched:
        return None
    return (
        "a file modelguard did not place is there (it is not in the lock file nor in "
        "modelguard's record of placed files); replacing it needs force"
    )


def _real_final(destination: Destination, remote: RemoteFile) -> Path:
    return Path(os.path.realpath(destination.folder)) / remote.name


def _algorithms(remote: RemoteFile) -> tuple[str, ...]:
    return ("sha256", "sha1") if "sha1" in remote.expected else ("sha256",)


def _stage_all(
    plan: DownloadPlan,
    destination: Destination,
    token: str | None,
    cache_dir: PathLike | None,
    options: DownloadOptions,
    allow_http: bool,
) -> tuple[list[StagedFile], dict[str, Path]]:
    staged: list[StagedFile] = []
    cached: dict[str, Path] = {}
    try:
        if plan.hf_repo is not None:
            for remote in plan.files:  # the Hub announces sizes: refuse before downloading
                if remote.size is not None and remote.size > options.max_bytes:
                    raise FetchError(
                        f"{remote.source}: {remote.size} bytes, over the size cap of "
                        f"{options.max_bytes} bytes"
                    )
            cached = hub.download(plan, token, cache_dir, options.timeout)
            for remote in plan.files:
                staged.append(
                    stage_copy(
                        cached[remote.name],
                        remote.name,
                        destination,
                        algorithms=_algorithms(remote),
                        git_blob_size=remote.size if "git-blob-sha1" in remote.expected else None,
                        options=options,
                    )
                )
        else:
            for remote in plan.files:
                staged.append(
                    stage_url(
                        remote.url or "",
                        remote.name,
                        destination,
                        algorithms=_algorithms(remote),
                        options=options,
                        allow_http=allow_http,
                    )
                )
    except BaseException:
        for item in staged:
            discard(item)
        raise
    return staged, cached


def _digest_findings(remote: RemoteFile, item: StagedFile, shown: str) -> list[Finding]:
    where = Location(shown)
    hops: list[Finding] = []
    if len(item.hops) > 1:
        hops.append(
            R.DOWNLOAD_REDIRECTED.finding(
                f"{remote.source} was redirected: {describe(item.hops)}",
                where,
                evidence=describe(item.hops),
            )
        )
    if not remote.expected:
        return [
            *hops,
            R.UNPINNED_DOWNLOAD.finding(
                f"{remote.source} publishes no digest; trusted on first use with sha256 "
                f"{item.digests['sha256']}",
                where,
                evidence=f"sha256:{item.digests['sha256']}",
            ),
        ]
    if remote.size is not None and item.size != remote.size:
        return [
            *hops,
            R.DIGEST_MISMATCH.finding(
                f"{remote.source}: server returned {item.size} bytes, {remote.vouched_by} "
                f"says {remote.size}; file rejected",
                where,
                evidence=f"size:{item.size}",
            ),
        ]
    for algorithm, want in remote.expected.items():
        got = item.digests.get(algorithm, "")
        if got != want.lower():
            return [
                *hops,
                R.DIGEST_MISMATCH.finding(
                    f"{remote.source}: {algorithm} mismatch: expected {want} "
                    f"({remote.vouched_by}), got {got}; file rejected",
                    where,
                    evidence=f"{algorithm}:{got}",
                ),
            ]
    names = ", ".join(f"{a} {v}" for a, v in remote.expected.items())
    return [*hops, R.VERIFIED.finding(f"{names} matches {remote.vouched_by}", where)]


def _scan(item: StagedFile, shown: str, policy: Policy) -> ArtifactResult:
    """Scan the staged bytes through the engine under the name they will have."""
    result = scan_file(Target(fs_path=item.readable_path, display=shown), policy)
    if not isinstance(result, ArtifactResult):
        raise UnreadableInput(shown, f"cannot scan the downloaded file: {result.message}")
    if not item.unchanged():
        raise FetchError(f"{shown}: the staged download changed while it was scanned")
    return result


def _verify_scan_place(
    plan: DownloadPlan,
    staged: list[StagedFile],
    cached: Mapping[str, Path],
    destination: Destination,
    judged: Mapping[str, Identity],
    scan: bool,
    policy: Policy,
    quarantine_dir: PathLike | None,
) -> tuple[FetchResult, dict[str, str]]:
    """Check, scan and place (or quarantine); also returns each file's scan verdict."""
    by_name = {f.name: f for f in plan.files}
    root = cwd_root()
    artifacts: list[ArtifactResult] = []
    bad_digest: set[str] = set()
    flagged: set[str] = set()
    verdicts: dict[str, str] = {}
    for item in staged:
        remote = by_name[item.name]
        shown = display_path(item.final, root)
        provenance = _digest_findings(remote, item, shown)
        if any(f.rule_id == R.DIGEST_MISMATCH.id for f in provenance):
            bad_digest.add(item.name)
            if item.name in cached:
                hub.evict(cached[item.name])
        kept, suppressed = policy.partition(provenance)
        fmt = "unknown"
        verdicts[item.name] = NOT_SCANNED
        if scan and item.name not in bad_digest:
            scanned = _scan(item, shown, policy)
            fmt = scanned.format
            verdicts[item.name] = scan_verdict(scanned.findings)
            kept += scanned.findings
            suppressed += scanned.suppressed
        fail_on = policy.fail_on
        if fail_on is not None and any(f.severity >= fail_on for f in kept):
            flagged.add(item.name)
        artifacts.append(
            ArtifactResult(
                shown, fmt, item.size, findings=tuple(kept), suppressed=tuple(suppressed)
            )
        )
    report = Report(artifacts=tuple(artifacts), root=root.as_posix())

    if bad_digest or flagged:
        qdir = Path(quarantine_dir) if quarantine_dir is not None else default_quarantine()
        moved = tuple(
            quarantine(item, qdir) for item in staged if item.name in flagged - bad_digest
        )
        return FetchResult(report, (), moved, plan.source, plan.revision), verdicts

    # What was judged before the download must still be what is there now.
    moved_in = [
        R.OVERWRITE_REFUSED.finding(
            f"{display_path(item.final, root)}: something else appeared there during the "
            "download; nothing was placed",
            Location(display_path(item.final, root)),
            evidence=item.name,
        )
        for item in staged
        if _identity_at(destination, item.name) != judged.get(item.name)
    ]
    if moved_in:
        result = FetchResult(report.merged(_report(moved_in)), (), (), plan.source, plan.revision)
        return result, verdicts
    done = []
    for item in staged:
        done.append(place(item))
        final = _real_final(destination, by_name[item.name])
        placed.record(final, item.digests["sha256"], item.size)
    return FetchResult(report, tuple(done), (), plan.source, plan.revision), verdicts


def _record_lock(
    plan: DownloadPlan,
    staged: Sequence[StagedFile],
    verdicts: Mapping[str, str],
    lock_path: Path,
    existing: LockFile | None,
) -> None:
    """Record the placed files: the digest hashed while staging, with that file's verdict."""
    by_name = {f.name: f for f in plan.files}
    entries = []
    for item in staged:
        entries.append(
            LockEntry(
                path=lock_relative(item.final, lock_path),
                size=item.size,
                sha256=item.digests["sha256"],
                sha1=item.digests.get("sha1"),
                source=by_name[item.name].source,
                revision=plan.revision,
                scan=verdicts.get(item.name, NOT_SCANNED),
            )
        )
    write_lock(lock_path, (existing or LockFile()).updated(entries))

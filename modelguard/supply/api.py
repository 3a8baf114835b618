"""Provenance API: fetch, lock, verify and sign model artifacts.

Every verification outcome is a :class:`~modelguard.findings.Finding` (MG4xx) in
an ordinary :class:`~modelguard.findings.Report`, so the text, JSON and SARIF
reporters render provenance exactly like scan results, and ``Report.merged``
combines them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from modelguard.errors import FetchError, MissingExtra, UnreadableInput, UsageError
from modelguard.findings import ArtifactResult, Finding, InputError, Location, Report, Severity
from modelguard.policy import Policy, load_policy
from modelguard.rules import provenance as R
from modelguard.rules.base import Rule
from modelguard.supply import signing
from modelguard.supply.download import (
    PARTIAL_PREFIX,
    DownloadOptions,
    StagedFile,
    discard,
    place,
    quarantine,
    read_text_url,
    stage_copy,
    stage_url,
)
from modelguard.supply.hashing import hash_files
from modelguard.supply.lockfile import (
    LOCK_NAME,
    LockEntry,
    LockFile,
    lock_relative,
    read_lock,
    write_lock,
)
from modelguard.supply.sources import (
    MAX_README_BYTES,
    DownloadPlan,
    RemoteFile,
    check_url,
    hf_endpoint,
    hf_plan,
    is_hf,
    is_zoo_readme,
    parse_zoo_readme,
    read_local_readme,
    url_plan,
    zoo_plan,
)

PathLike = str | os.PathLike[str]
NOT_SCANNED = "not-scanned"


def _finding(rule: Rule, message: str, path: str, evidence: str | None = None) -> Finding:
    return rule.finding(message, Location(path), evidence=evidence)


def _display(path: Path) -> str:
    """POSIX path relative to the working folder when inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return absolute.as_posix()


def _root() -> str:
    """Reports name paths relative to the working folder, as ``modelguard scan`` does."""
    return Path(os.path.abspath(Path.cwd())).as_posix()


def _verdict(findings: Iterable[Finding]) -> str:
    worst = max((f.severity for f in findings), default=None)
    return "clean" if worst is None or worst == Severity.INFO else worst.label


def _check_hex(value: str, length: int, option: str) -> str:
    text = value.strip().lower()
    if len(text) != length or any(c not in "0123456789abcdef" for c in text):
        raise UsageError(f"{option} {value!r} is not {length} hex digits")
    return text


def _user_digests(sha256: str | None, sha1: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if sha256:
        out["sha256"] = _check_hex(sha256, 64, "--sha256")
    if sha1:
        out["sha1"] = _check_hex(sha1, 40, "--sha1")
    return out


# ---- fetch -----------------------------------------------------------------------------


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
    if is_hf(source):
        plan = hf_plan(source, token=token)
        if wanted:
            if len(plan.files) != 1:
                raise UsageError(f"{source}: --sha256/--sha1 need a single file, not a folder")
            plan = replace(plan, files=(_with_expected(plan.files[0], wanted, "--sha256/--sha1"),))
        return plan
    if source.startswith(("http://", "https://")):
        check_url(source, allow_http)
        if not is_zoo_readme(source):
            return url_plan(source, wanted)
        text = read_text_url(source, options, MAX_README_BYTES)
    else:
        text = read_local_readme(Path(source))
    plan = zoo_plan(parse_zoo_readme(text, source), source)
    check_url(plan.files[0].url or "", allow_http)
    if wanted:
        plan = replace(plan, files=(_with_expected(plan.files[0], wanted, "--sha256/--sha1"),))
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
) -> FetchResult:
    """Download, verify, scan and atomically place a model artifact.

    Args:
        source: ``hf://owner/repo[@revision][/path]``, an ``https://`` URL, or a
            Caffe-Model-Zoo readme (local path or URL) naming caffemodel_url and sha1.
        dest: destination folder (created if needed).
        lock: a lock file to pin digests from (when it has an entry for the
            destination path) and to record the fetched files into.
        scan: statically scan each file before it is placed.
        policy: scan policy; its ``fail_on`` decides quarantine (default: discovered).
        sha256, sha1: the digest the file must have (single-file sources).
        allow_http: accept plain ``http://`` URLs.
        token: Hugging Face token (default: HF_TOKEN / the saved login).
        cache_dir: Hugging Face cache (default: HF_HUB_CACHE or HF_HOME/hub).
        quarantine_dir: where flagged files go (default: ~/.cache/modelguard/quarantine).
        options: timeouts, retries, size cap and a byte-progress callback.

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
    if policy is None:
        policy = load_policy()
    dest_dir = Path(dest)
    lock_path = Path(lock) if lock is not None else None
    try:
        plan = plan_source(
            source,
            expected=_user_digests(sha256, sha1),
            allow_http=allow_http,
            token=token,
            options=options,
        )
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
        shown = _display(dest_dir / conflict.remote.name)
        finding = _finding(R.DIGEST_MISMATCH, str(conflict), shown, conflict.remote.source)
        report = Report(
            artifacts=(ArtifactResult(shown, "unknown", 0, findings=(finding,)),),
            root=_root(),
        )
        return FetchResult(report, source=source)

    staged = _stage_all(plan, dest_dir, token=token, cache_dir=cache_dir, options=options)
    try:
        return _verify_scan_place(
            plan, staged, dest_dir, scan, policy, lock_path, existing, quarantine_dir, cache_dir
        )
    finally:
        for item in staged:  # anything not placed or quarantined is removed
            discard(item)


def _pin_from_lock(remote: RemoteFile, dest: Path, lock_path: Path, lock: LockFile) -> RemoteFile:
    try:
        rel = lock_relative(dest / remote.name, lock_path)
    except UsageError:
        return remote
    entry = lock.by_path().get(rel)
    if entry is None or not entry.expected_digests():
        return remote
    return _with_expected(remote, entry.expected_digests(), f"{lock_path}")


def _algorithms(remote: RemoteFile) -> tuple[str, ...]:
    return ("sha256", "sha1") if "sha1" in remote.expected else ("sha256",)


def _stage_all(
    plan: DownloadPlan,
    dest: Path,
    *,
    token: str | None,
    cache_dir: PathLike | None,
    options: DownloadOptions,
) -> list[StagedFile]:
    staged: list[StagedFile] = []
    try:
        if plan.hf_repo is not None:
            for remote in plan.files:  # the Hub announces sizes: refuse before downloading
                if remote.size is not None and remote.size > options.max_bytes:
                    raise FetchError(
                        f"{remote.source}: {remote.size} bytes, over the size cap of "
                        f"{options.max_bytes} bytes"
                    )
            cached = _hf_download(plan, token, cache_dir, options)
            for remote in plan.files:
                staged.append(
                    stage_copy(
                        cached[remote.name],
                        remote.name,
                        dest / remote.name,
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
                        dest / remote.name,
                        algorithms=_algorithms(remote),
                        options=options,
                    )
                )
    except BaseException:
        for item in staged:
            discard(item)
        raise
    return staged


def _hf_cache_dir(cache_dir: PathLike | None) -> str | None:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _hf_download(
    plan: DownloadPlan, token: str | None, cache_dir: PathLike | None, options: DownloadOptions
) -> dict[str, Path]:
    """Download through huggingface_hub (its cache, auth, endpoint), pinned to the commit."""
    try:
        import httpx2
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError
    except ModuleNotFoundError:
        raise MissingExtra(
            "fetching from the Hugging Face Hub", "supply", "huggingface_hub"
        ) from None
    # huggingface_hub draws its own progress bars (HF_HUB_DISABLE_PROGRESS_BARS=1 hides them).
    repo = plan.hf_repo or ""
    cache = _hf_cache_dir(cache_dir)
    try:
        if len(plan.files) == 1:
            only = plan.files[0]
            path = hf_hub_download(
                repo,
                only.hf_filename or only.name,
                revision=plan.revision,
                cache_dir=cache,
                endpoint=hf_endpoint(),
                token=token,
                etag_timeout=options.timeout,
            )
            return {only.name: Path(path)}
        root = snapshot_download(
            repo,
            allow_patterns=[f.hf_filename or f.name for f in plan.files],
            revision=plan.revision,
            cache_dir=cache,
            endpoint=hf_endpoint(),
            token=token,
            etag_timeout=options.timeout,
        )
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
        raise FetchError(f"{plan.source}: download from the Hub failed: {exc}") from None
    return {f.name: Path(root) / (f.hf_filename or f.name) for f in plan.files}


def _evict_hf_cache(cache_file: Path) -> None:
    """Drop a cached Hub file that failed verification, so it is fetched afresh."""
    with contextlib.suppress(OSError):
        blob = cache_file.resolve()
        cache_file.unlink()
        if blob != cache_file and blob.parent.name == "blobs":
            blob.unlink()


def _digest_findings(remote: RemoteFile, item: StagedFile, shown: str) -> list[Finding]:
    if not remote.expected:
        return [
            _finding(
                R.UNPINNED_DOWNLOAD,
                f"{remote.source} publishes no digest; trusted on first use with sha256 "
                f"{item.digests['sha256']}",
                shown,
                f"sha256:{item.digests['sha256']}",
            )
        ]
    if remote.size is not None and item.size != remote.size:
        return [
            _finding(
                R.DIGEST_MISMATCH,
                f"{remote.source}: server returned {item.size} bytes, {remote.vouched_by} "
                f"says {remote.size}; file rejected",
                shown,
                f"size:{item.size}",
            )
        ]
    for algorithm, want in remote.expected.items():
        got = item.digests.get(algorithm, "")
        if got != want.lower():
            return [
                _finding(
                    R.DIGEST_MISMATCH,
                    f"{remote.source}: {algorithm} mismatch: expected {want} "
                    f"({remote.vouched_by}), got {got}; file rejected",
                    shown,
                    f"{algorithm}:{got}",
                )
            ]
    names = ", ".join(f"{a} {v}" for a, v in remote.expected.items())
    return [_finding(R.VERIFIED, f"{names} matches {remote.vouched_by}", shown)]


def _verify_scan_place(
    plan: DownloadPlan,
    staged: list[StagedFile],
    dest: Path,
    scan: bool,
    policy: Policy,
    lock_path: Path | None,
    existing: LockFile | None,
    quarantine_dir: PathLike | None,
    cache_dir: PathLike | None,
) -> FetchResult:
    by_name = {f.name: f for f in plan.files}
    findings: dict[str, list[Finding]] = {}
    shown = {item.name: _display(item.final) for item in staged}
    bad_digest: set[str] = set()
    for item in staged:
        remote = by_name[item.name]
        found = _digest_findings(remote, item, shown[item.name])
        findings[item.name] = found
        if any(f.rule_id == R.DIGEST_MISMATCH.id for f in found):
            bad_digest.add(item.name)
            if plan.hf_repo is not None:
                cache_root = _hf_cache_dir(cache_dir)
                if cache_root is not None:
                    _evict_from_snapshot(Path(cache_root), plan, remote)

    formats: dict[str, str] = {}
    scan_findings: dict[str, list[Finding]] = {}
    if scan:
        to_scan = [item for item in staged if item.name not in bad_digest]
        scanned = _scan_staged(to_scan, policy, shown)
        for item in to_scan:
            art = scanned.get(item.name)
            if art is not None:
                formats[item.name] = art.format
                scan_findings[item.name] = list(art.findings)

    flagged = {
        name
        for name, found in scan_findings.items()
        if policy.fail_on is not None and any(f.severity >= policy.fail_on for f in found)
    }
    also_provenance = {
        name
        for name, found in findings.items()
        if name not in bad_digest
        and policy.fail_on is not None
        and any(f.severity >= policy.fail_on for f in found)
    }
    flagged |= also_provenance
    artifacts = tuple(
        ArtifactResult(
            path=shown[item.name],
            format=formats.get(item.name, "unknown"),
            size=item.size,
            findings=tuple(findings[item.name] + scan_findings.get(item.name, [])),
        )
        for item in staged
    )
    report = Report(artifacts=artifacts, root=_root())

    if bad_digest or flagged:
        qdir = Path(quarantine_dir) if quarantine_dir is not None else default_quarantine()
        moved = tuple(quarantine(item, qdir) for item in staged if item.name in flagged)
        return FetchResult(report, (), moved, plan.source, plan.revision)

    placed = tuple(place(item) for item in staged)
    if lock_path is not None:
        entries = [
            LockEntry(
                path=lock_relative(item.final, lock_path),
                size=item.size,
                sha256=item.digests["sha256"],
                sha1=item.digests.get("sha1"),
                source=by_name[item.name].source,
                revision=plan.revision,
                scan=_verdict(scan_findings.get(item.name, [])) if scan else NOT_SCANNED,
            )
            for item in staged
        ]
        write_lock(lock_path, (existing or LockFile()).updated(entries))
    return FetchResult(report, placed, (), plan.source, plan.revision)


def _evict_from_snapshot(cache_root: Path, plan: DownloadPlan, remote: RemoteFile) -> None:
    folder = cache_root / ("models--" + (plan.hf_repo or "").replace("/", "--"))
    if plan.revision:
        _evict_hf_cache(folder / "snapshots" / plan.revision / (remote.hf_filename or remote.name))


def _scan_staged(
    staged: Sequence[StagedFile], policy: Policy, shown: Mapping[str, str]
) -> dict[str, ArtifactResult]:
    """Scan the temporary files, reporting them under their final names."""
    if not staged:
        return {}
    from modelguard.api import scan as api_scan

    root = Path(os.path.commonpath([str(item.temp.parent.resolve()) for item in staged]))
    report = api_scan([item.temp for item in staged], policy=policy, root=root, workers=1)
    temp_to_name = {item.temp.resolve().relative_to(root).as_posix(): item.name for item in staged}
    out: dict[str, ArtifactResult] = {}
    for art in report.artifacts:
        name = temp_to_name.get(art.path)
        if name is None:
            continue
        final = shown[name]
        out[name] = replace(
            art,
            path=final,
            findings=tuple(
                replace(f, location=replace(f.location, path=final)) for f in art.findings
            ),
            suppressed=tuple(
                replace(
                    s, finding=replace(s.finding, location=replace(s.finding.location, path=final))
                )
                for s in art.suppressed
            ),
        )
    for error in report.errors:
        name = temp_to_name.get(error.path)
        if name is not None:
            raise UnreadableInput(shown[name], f"cannot scan the downloaded file: {error.message}")
    return out


def default_quarantine() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "modelguard" / "quarantine"


# ---- lock ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Expanded:
    files: list[Path]
    links: list[Path]  # symbolic links and special files found inside folders
    errors: list[InputError]


def _expand(paths: Iterable[PathLike], skip: set[Path]) -> _Expanded:
    """Files named or found below folders (not following links), in a stable order."""
    out = _Expanded([], [], [])
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            out.errors.append(InputError(_display(path), "no such file or directory"))
        elif path.is_dir():
            for folder, dirnames, filenames in os.walk(path, followlinks=False):
                kept = []
                for d in sorted(dirnames):
                    if d in signing.GIT_PATHS:
                        continue
                    if Path(folder, d).is_symlink():
                        out.links.append(Path(folder, d))
                    else:
                        kept.append(d)
                dirnames[:] = kept
                for name in sorted(filenames):
                    candidate = Path(folder, name)
                    if _skipped(candidate, skip):
                        continue
                    if candidate.is_symlink() or not candidate.is_file():
                        out.links.append(candidate)
                    else:
                        out.files.append(candidate)
        elif not path.is_file():
            out.links.append(path)  # a FIFO or device: opening it could block forever
        elif not _skipped(path, skip):
            out.files.append(path)  # a file the user named: links to it are followed
    return out


def _skipped(path: Path, skip: set[Path]) -> bool:
    return (
        path.name.startswith(PARTIAL_PREFIX)
        or path.name in signing.GIT_PATHS
        or Path(os.path.abspath(path)) in skip
    )


def lock(
    paths: PathLike | Sequence[PathLike],
    *,
    lockfile: PathLike = LOCK_NAME,
    scan: bool = True,
    policy: Policy | None = None,
) -> Report:
    """Record size, sha256 and scan verdict of files (folders recursively) in a lock file.

    Existing entries for other paths are kept; entries for these files are
    replaced (keeping their recorded source). Returns the scan report of the
    locked files (provenance-only when ``scan`` is False).
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    lock_path = Path(lockfile)
    existing = read_lock(lock_path) if lock_path.exists() else LockFile()
    expanded = _expand(items, {Path(os.path.abspath(lock_path))})
    errors = expanded.errors + [
        InputError(_display(link), "symbolic link or special file: lock its target instead")
        for link in expanded.links
    ]
    if errors:
        return Report(errors=tuple(errors), root=_root())
    files = expanded.files
    old = existing.by_path()
    rels = [lock_relative(f, lock_path) for f in files]
    need_sha1 = any(old.get(r) is not None and old[r].sha1 for r in rels)
    digests = hash_files(files, ("sha256", "sha1") if need_sha1 else ("sha256",))
    report = Report()
    if scan and files:
        if policy is None:
            policy = load_policy()
        from modelguard.api import scan as api_scan

        report = api_scan(files, policy=policy, root=Path.cwd())
    by_display = {a.path: a for a in report.artifacts}
    entries = []
    artifacts = []
    for path, rel in zip(files, rels, strict=True):
        shown = _display(path)
        art = by_display.get(shown)
        entries.append(
            LockEntry(
                path=rel,
                size=path.stat().st_size,
                sha256=digests[path]["sha256"],
                sha1=digests[path].get("sha1") if old.get(rel) and old[rel].sha1 else None,
                scan=_verdict(art.findings) if art is not None else NOT_SCANNED,
            )
        )
        artifacts.append(
            art
            if art is not None
            else ArtifactResult(path=shown, format="unknown", size=path.stat().st_size)
        )
    write_lock(lock_path, existing.updated(entries))
    return Report(artifacts=tuple(artifacts), errors=report.errors, root=_root())


# ---- verify ----------------------------------------------------------------------------


def verify(
    path: PathLike,
    *,
    lockfile: PathLike | None = None,
    sha256: str | None = None,
    sha1: str | None = None,
    signature: PathLike | None = None,
    key: PathLike | None = None,
) -> Report:
    """Check files against a lock file, a digest, or an OpenSSF model-signing bundle.

    Modes (several may be combined; their findings are merged):

    * ``sha256``/``sha1``: ``path`` is one file that must have this digest.
    * ``key`` (+ ``signature``, default ``<folder>/model.sig`` or ``<file>.sig``):
      the bundle must be signed by ``key`` and list exactly the files present.
    * ``lockfile`` (the default mode, ``modelguard.lock``): like pip's
      ``--require-hashes``, every locked file below ``path`` must exist with its
      size and digest, and no unlocked file may be present.

    Raises:
        UsageError: contradictory options, missing lock file, unusable key.
        UnreadableInput: ``path`` does not exist.
    """
    target = Path(path)
    if not target.exists():
        raise UnreadableInput(_display(target), "no such file or directory")
    if signature is not None and key is None:
        raise UsageError(
            "--signature needs --key PUBLIC.pem (keyless certificate verification is not supported)"
        )
    report = Report(root=_root())
    digests = _user_digests(sha256, sha1)
    if digests:
        report = report.merged(_verify_digests(target, digests))
    if key is not None:
        bundle = Path(signature) if signature is not None else _default_bundle(target)
        found = signing.verify_signature(target, bundle, Path(key), _display(target))
        report = report.merged(_group(found, target))
    if lockfile is not None or (not digests and key is None):
        report = report.merged(_verify_lock(target, Path(lockfile or LOCK_NAME)))
    return report


def _default_bundle(target: Path) -> Path:
    if target.is_dir():
        return target / signing.DEFAULT_SIGNATURE_NAME
    return target.with_name(target.name + ".sig")


def _group(findings: Iterable[Finding], target: Path) -> Report:
    """One ArtifactResult per reported path, sizes from disk where the file exists."""
    grouped: dict[str, list[Finding]] = {}
    for f in findings:
        grouped.setdefault(f.location.path, []).append(f)
    artifacts = []
    for shown, found in grouped.items():
        candidate = Path(shown)
        size = candidate.stat().st_size if candidate.is_file() else 0
        artifacts.append(
            ArtifactResult(path=shown, format="unknown", size=size, findings=tuple(found))
        )
    return Report(artifacts=tuple(artifacts), root=_root())


def _verify_digests(target: Path, expected: Mapping[str, str]) -> Report:
    if not target.is_file():
        raise UsageError(f"{target}: --sha256/--sha1 check a single file, not a folder")
    shown = _display(target)
    actual = hash_files([target], tuple(expected))[target]
    found = []
    for algorithm, want in expected.items():
        got = actual[algorithm]
        if got == want:
            found.append(_finding(R.VERIFIED, f"{algorithm} {got} matches", shown))
        else:
            found.append(
                _finding(
                    R.DIGEST_MISMATCH,
                    f"{algorithm} mismatch: expected {want}, got {got}",
                    shown,
                    f"{algorithm}:{got}",
                )
            )
    size = target.stat().st_size
    return Report(
        artifacts=(ArtifactResult(shown, "unknown", size, findings=tuple(found)),), root=_root()
    )


def _verify_lock(target: Path, lock_path: Path) -> Report:
    if not lock_path.exists():
        raise UsageError(
            f"{lock_path}: lock file not found; create it with `modelguard lock PATH`, "
            "or pass --sha256/--sha1 or --key"
        )
    locked = read_lock(lock_path)
    base = lock_path.resolve().parent
    rel_target = lock_relative(target, lock_path)
    prefix = "" if rel_target == "." else rel_target + "/"
    entries = [e for e in locked.entries if e.path == rel_target or e.path.startswith(prefix)]
    if not entries and target.is_file():
        shown = _display(target)
        return _group(
            [_finding(R.FILE_UNEXPECTED, f"{shown} is not in {lock_path}", shown)], target
        )
    expanded = _expand([target], {Path(os.path.abspath(lock_path))})
    on_disk = {lock_relative(p, lock_path): p for p in expanded.files}
    need = {e.path for e in entries if e.path in on_disk}
    algos = ("sha256", "sha1") if any(e.sha1 and not e.sha256 for e in entries) else ("sha256",)
    sized = [
        on_disk[e.path]
        for e in entries
        if e.path in need and on_disk[e.path].stat().st_size == e.size
    ]
    digests = hash_files(sized, algos)
    found: list[Finding] = []
    for entry in entries:
        shown = _display(base / entry.path)
        path = on_disk.get(entry.path)
        if path is None:
            found.append(
                _finding(R.FILE_MISSING, f"{entry.path} is locked but missing", shown, entry.path)
            )
            continue
        size = path.stat().st_size
        if size != entry.size:
            found.append(
                _finding(
                    R.SIZE_MISMATCH,
                    f"{entry.path} is {size} bytes, locked at {entry.size}",
                    shown,
                    f"size:{size}",
                )
            )
            continue
        expected = entry.expected_digests()
        if not expected:
            found.append(_finding(R.NOT_LOCKED, f"{entry.path}: lock entry has no digest", shown))
            continue
        actual = digests[path]
        algorithm = "sha256" if "sha256" in expected else "sha1"
        if actual[algorithm] != expected[algorithm].lower():
            found.append(
                _finding(
                    R.DIGEST_MISMATCH,
                    f"{entry.path} was modified: {algorithm} {actual[algorithm]}, "
                    f"locked {expected[algorithm]}",
                    shown,
                    f"{algorithm}:{actual[algorithm]}",
                )
            )
        else:
            found.append(_finding(R.VERIFIED, f"{algorithm} matches {lock_path}", shown))
    locked_paths = {e.path for e in entries}
    for rel in sorted(set(on_disk) - locked_paths):
        found.append(
            _finding(R.FILE_UNEXPECTED, f"{rel} is not in {lock_path}", _display(on_disk[rel]), rel)
        )
    for link in expanded.links:
        found.append(
            _finding(
                R.FILE_UNEXPECTED,
                f"{_display(link)} is a symbolic link or special file; locked models hold "
                "regular files only",
                _display(link),
                _display(link),
            )
        )
    return _group(found, target)


# ---- sign ------------------------------------------------------------------------------


def sign(
    path: PathLike,
    key: PathLike,
    *,
    output: PathLike | None = None,
    password: bytes | None = None,
) -> Path:
    """Sign a model file or folder with an ECDSA private key (PEM).

    Writes an OpenSSF model-signing compatible Sigstore bundle (verifiable with
    ``model_signing verify key``) and returns its path: by default
    ``<folder>/model.sig`` for a folder or ``<file>.sig`` for a file.
    """
    return signing.sign_model(
        Path(path), Path(key), Path(output) if output is not None else None, password=password
    )

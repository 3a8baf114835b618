"""The scan loop: expand paths, scan each file (in parallel workers), apply policy.

This is the code path behind ``modelguard.scan``, the CLI, the pre-commit hook
and the GitHub Action alike.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from modelguard.files import Kind, Target, display_path, walk
from modelguard.findings import (
    ArtifactResult,
    Finding,
    InputError,
    Location,
    Report,
    Skipped,
)
from modelguard.policy import Policy
from modelguard.rules.scan import SCANNER_ERROR, UNSUPPORTED_FORMAT
from modelguard.scan.cache import FileIdentity, ScanCache
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import dispatch
from modelguard.scan.model_names import is_model_name

ProgressCallback = Callable[[int, int, str], None]

# Below this many files a process pool costs more than it saves.
_PARALLEL_MIN_FILES = 8
# Below this many bytes in all, starting workers costs more than it saves: small
# files scan in well under a millisecond each (measured: 1,000 small files, 0.6 s
# in one process, 1.3 s with two workers on two cores).
_PARALLEL_MIN_BYTES = 64 * 1024 * 1024


def collect_targets(
    paths: Iterable[str | os.PathLike[str]], root: Path, policy: Policy
) -> tuple[list[Target], list[InputError]]:
    """Expand files and folders into targets under the one walk of :mod:`modelguard.files`.

    Links to files are scanned (a loader would read their target), each real file
    once, under its own path when that lies inside ``root`` (where a reader of the
    report, GitHub included, finds its bytes), with the links kept beside it;
    links to folders are not followed; special files are read errors.
    """
    listing = walk(
        paths,
        root=root,
        exclude=policy.is_excluded if policy.exclude else None,
        default_excludes=not policy.no_default_excludes,
        gitignore=not policy.no_default_excludes,
    )
    by_real: dict[str, Target] = {}
    links: dict[str, list[str]] = {}
    errors: list[InputError] = []
    real_folders: dict[str, str] = {}
    for entry in listing.entries:
        if entry.kind in (Kind.FILE, Kind.PARTIAL, Kind.LINK_TO_FILE):
            target = entry.target
            # A named path is followed if it is a link, so a FILE entry may be one.
            is_link = os.path.islink(entry.path)
            if is_link:
                real = os.path.realpath(entry.path)
            else:
                # A file that is not a link is its real folder's child: one
                # realpath per folder, not one per file (thousands of lstats).
                folder, name = os.path.split(os.path.abspath(entry.path))
                if folder not in real_folders:
                    real_folders[folder] = os.path.realpath(folder)
                real = os.path.join(real_folders[folder], name)
            if is_link:
                links.setdefault(real, []).append(entry.display)
                shown = display_path(real, root)
                if not os.path.isabs(shown):
                    target = replace(target, display=shown)
            by_real.setdefault(real, target)
        elif entry.kind is Kind.MISSING:
            errors.append(InputError(entry.display, _MISSING[entry.note]))
        elif entry.kind is Kind.BROKEN_LINK:
            errors.append(InputError(entry.display, "broken symbolic link"))
        elif entry.kind is Kind.SPECIAL:
            errors.append(InputError(entry.display, "not a regular file"))
        elif entry.kind is Kind.UNREADABLE:
            errors.append(InputError(entry.display, f"cannot list folder: {entry.note}"))
    targets = [
        replace(t, links=tuple(x for x in links.get(real, ()) if x != t.display))
        for real, t in by_real.items()
    ]
    return targets, errors


_MISSING = {
    Kind.BROKEN_LINK.value: "broken symbolic link",
    Kind.MISSING.value: "no such file or directory",
}


def scan_file(
    target: Target, policy: Policy, cache: ScanCache | None = None
) -> ArtifactResult | InputError:
    """Scan one file. Unreadable input is an InputError; everything else is findings.

    With a ``cache``, an unchanged file's stored result is used instead of a scan,
    and a fresh result is stored (see :mod:`modelguard.scan.cache`).
    """
    try:
        # Non-blocking open: a FIFO met in a folder would otherwise wait forever
        # for a writer. It is rejected below as not a regular file.
        fd = os.open(target.fs_path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return InputError(target.display, exc.strerror or str(exc))
    handle = os.fdopen(fd, "rb")
    with handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return InputError(target.display, "not a regular file")
        identity = None
        if cache is not None:
            identity = FileIdentity.of(os.path.realpath(target.fs_path), info)
            hit = cache.lookup(identity, policy.settings, target.display)
            if hit is not None:
                return _apply_policy(
                    target.display, hit.format, info.st_size, list(hit.findings), policy
                )
        inp = Input(
            stream=handle, size=info.st_size, name=target.display, fs_path=Path(target.fs_path)
        )
        scanned = _scan_input(inp, policy)
        if isinstance(scanned, InputError):
            return scanned
        fmt, findings = scanned
        # Remember the result only if the file did not change while it was read.
        if (
            cache is not None
            and identity is not None
            and FileIdentity.of(identity.real_path, os.fstat(handle.fileno())) == identity
        ):
            cache.store(identity, policy.settings, fmt, findings)
    return _apply_policy(target.display, fmt, info.st_size, findings, policy)


def _scan_input(inp: Input, policy: Policy) -> tuple[str, list[Finding]] | InputError:
    """Dispatch ``inp`` to its scanners; returns (format, raw findings) or a read error."""
    ctx = ScanContext(location=Location(inp.name), settings=policy.settings)
    try:
        fmt = dispatch(inp, ctx)
    except OSError as exc:
        return InputError(inp.name, f"read error: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - fail closed: a scanner bug becomes a HIGH finding
        ctx.report(
            SCANNER_ERROR,
            f"scanner error ({type(exc).__name__}: {exc}); file not fully inspected",
            evidence=type(exc).__name__,
        )
        fmt = "unknown"
    return ctx.format_label or fmt, ctx.findings


def scan_input(inp: Input, policy: Policy) -> ArtifactResult | InputError:
    """Scan bytes that are not a local file (e.g. a remote file read by HTTP ranges).

    ``inp.name`` is the display name; read errors (``OSError``) become an InputError.
    """
    scanned = _scan_input(inp, policy)
    if isinstance(scanned, InputError):
        return scanned
    fmt, findings = scanned
    return _apply_policy(inp.name, fmt, inp.size, findings, policy)


def _apply_policy(
    display: str, fmt: str, size: int, findings: list[Finding], policy: Policy
) -> ArtifactResult:
    kept, suppressed = policy.partition(findings)
    kept.sort(key=lambda f: (-f.severity, f.location.members, f.location.offset or 0, f.rule_id))
    return ArtifactResult(
        path=display, format=fmt, size=size, findings=tuple(kept), suppressed=tuple(suppressed)
    )


def skip_reason(result: ArtifactResult) -> str | None:
    """Why ``result`` is no result at all: a file that is not model-like, by content or name.

    Only a file in which no reading matched (format ``unknown``, nothing but the
    unrecognised-format note) and whose name is not a model's is skipped; a
    ``weights.pt`` no reader recognises stays a finding, since it could not be
    inspected.
    """
    notes = [*result.findings, *(s.finding for s in result.suppressed)]
    if result.format != "unknown" or any(f.rule_id != UNSUPPORTED_FORMAT.id for f in notes):
        return None
    if is_model_name(result.path):
        return None
    if result.size == 0:
        return "empty file"
    return "not a model file: no model format in its bytes, and not a model file name"


def without_skipped(report: Report) -> Report:
    """``report`` with every not-model-like artifact moved to ``report.skipped``."""
    kept: list[ArtifactResult] = []
    skipped = list(report.skipped)
    for artifact in report.artifacts:
        reason = skip_reason(artifact)
        if reason is None:
            kept.append(artifact)
        else:
            skipped.append(Skipped(artifact.path, reason))
    return replace(report, artifacts=tuple(kept), skipped=tuple(skipped))


def _cached_result(target: Target, policy: Policy, cache: ScanCache) -> ArtifactResult | None:
    """The stored result for an unchanged regular file, without opening it for a scan."""
    try:
        info = os.stat(target.fs_path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    identity = FileIdentity.of(os.path.realpath(target.fs_path), info)
    hit = cache.lookup(identity, policy.settings, target.display)
    if hit is None:
        return None
    return _apply_policy(target.display, hit.format, info.st_size, list(hit.findings), policy)


def _scan_many(
    targets: Sequence[Target], policy: Policy, workers: int, cache: ScanCache | None = None
) -> Iterator[ArtifactResult | InputError]:
    # Cache hits are answered here, so an unchanged tree never pays for a worker pool.
    known: dict[int, ArtifactResult] = {}
    if cache is not None:
        for index, target in enumerate(targets):
            hit = _cached_result(target, policy, cache)
            if hit is not None:
                known[index] = hit
    misses = [t for i, t in enumerate(targets) if i not in known]
    fresh = iter(_scan_uncached(misses, policy, workers, cache))
    for index in range(len(targets)):
        yield known[index] if index in known else next(fresh)


def _scan_uncached(
    targets: Sequence[Target], policy: Policy, workers: int, cache: ScanCache | None
) -> Iterator[ArtifactResult | InputError]:
    if (
        workers <= 1
        or len(targets) < _PARALLEL_MIN_FILES
        or _total_size(targets) < _PARALLEL_MIN_BYTES
    ):
        for target in targets:
            yield scan_file(target, policy, cache)
        return
    from concurrent.futures import ProcessPoolExecutor  # loaded only for big folders

    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunk = max(1, len(targets) // (workers * 8))
        yield from pool.map(
            scan_file, targets, [policy] * len(targets), [cache] * len(targets), chunksize=chunk
        )


def _total_size(targets: Sequence[Target]) -> int:
    total = 0
    for target in targets:
        try:
            total += os.stat(target.fs_path).st_size
        except OSError:
            continue  # scan_file reports it
        if total >= _PARALLEL_MIN_BYTES:
            break
    return total


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def run_scan(
    paths: Sequence[str | os.PathLike[str]],
    *,
    policy: Policy | None = None,
    root: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cache: ScanCache | None = None,
) -> Report:
    """Scan files and folders; see :func:`modelguard.scan` for the public contract."""
    root_path = Path(os.path.abspath(root or Path.cwd()))
    policy = (policy or Policy()).for_root(root_path)
    targets, errors = collect_targets(paths, root_path, policy)
    artifacts: list[ArtifactResult] = []
    skipped: list[Skipped] = []
    total = len(targets)
    results = _scan_many(targets, policy, default_workers() if workers is None else workers, cache)
    for done, (target, result) in enumerate(zip(targets, results, strict=True), start=1):
        if isinstance(result, InputError):
            errors.append(result)
        elif (reason := skip_reason(result)) is not None:
            skipped.append(Skipped(result.path, reason))
        else:
            artifacts.append(replace(result, links=target.links) if target.links else result)
        if progress is not None:
            progress(done, total, target.display)
    return Report(
        artifacts=tuple(artifacts),
        errors=tuple(errors),
        root=root_path.as_posix(),
        skipped=tuple(skipped),
    )

"""The driver of a registry scan: list, resolve, look up, scan, store, report.

1. **List** every source here (an owner's repositories, a bucket's objects).
2. **Resolve** Hub repositories to their files (a metadata request each, on
   the executor), unless the store already holds the file list of the commit
   the listing named; plain URLs get a HEAD for their ETag.
3. **Look up** each artifact's identity in the results store: a hit is
   answered without reading a byte of the model.
4. **Scan** the rest on the executor, batch by batch, as results stream back
   the driver stores them (committed every few dozen) and reports progress.
5. **Report**: every artifact, stored or fresh, goes through the same
   decode-and-apply-policy step, in the order of its name, so the report does
   not depend on the executor, on timing, or on what the store held.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from modelguard.errors import FetchError, UsageError
from modelguard.findings import ArtifactResult, InputError, Report
from modelguard.policy import Policy
from modelguard.registry import hub, objectstore
from modelguard.registry.artifacts import (
    Artifact,
    Pending,
    RawScan,
    RepoRef,
    Resolved,
    ScanOutcome,
    UrlRef,
)
from modelguard.registry.executors import Executor, make_executor
from modelguard.registry.filters import Filters
from modelguard.registry.sources import url_group
from modelguard.registry.store import ResultStore, decode_findings, encode_findings
from modelguard.registry.work import WorkerConfig, resolve_batch, scan_batch, scan_only
from modelguard.remote.scan import RemoteOptions, check_source_url
from modelguard.remote.throttle import RetryPolicy
from modelguard.scan.cache import ruleset_digest
from modelguard.scan.engine import _apply_policy
from modelguard.supply import hub as supply_hub
from modelguard.supply.hub import HF_SCHEME
from modelguard.supply.sources import display_url

T = TypeVar("T")
BATCH_SIZE = 8
INLINE_BELOW = 8  # fewer artifacts than this are scanned in this process


@dataclass(frozen=True)
class RegistryOptions:
    executor: str | None = None  # None/"pool", "ray", "ray://HOST:PORT"
    workers: int | None = None
    results_db: Path | None = None  # None: remember nothing
    filters: Sequence[str] = ()  # name globs and tag:NAME (see registry.filters)
    allow_http: bool = False
    hf_token: str | None = None
    rate_limit: float | None = None  # requests per second per host, for the whole run
    threads: int = 4  # concurrent scans per worker (the work waits on round trips)
    batch_size: int = BATCH_SIZE
    timeout: float = 60.0
    storage_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    phase: str  # "resolving" or "scanning"
    done: int
    total: int
    display: str
    group: str  # organisation or prefix
    bytes_read: int  # so far, whole run
    from_store: bool
    elapsed: float


ProgressCallback = Callable[[Progress], None]


@dataclass
class RegistryStats:
    artifacts: int = 0
    from_store: int = 0
    scanned: int = 0
    duplicates: int = 0  # same content as another artifact of the run: scanned once
    failed: int = 0
    bytes_read: int = 0
    requests: int = 0
    scanned_size: int = 0  # total size of the artifacts scanned (not from the store)
    elapsed: float = 0.0
    groups: dict[str, str] = field(default_factory=dict)  # display -> org / prefix
    stored: set[str] = field(default_factory=set)  # displays answered from the store


@dataclass(frozen=True)
class RegistryRun:
    report: Report
    stats: RegistryStats


def scan_registry(
    sources: Sequence[str],
    policy: Policy,
    options: RegistryOptions | None = None,
    progress: ProgressCallback | None = None,
) -> RegistryRun:
    """Scan remote sources at registry scale; see :mod:`modelguard.registry.run`.

    Raises:
        UsageError: a malformed source, filter or executor, http:// without
            ``allow_http``, an unusable results database, or workers that run
            another modelguard.
        MissingExtra: a needed optional dependency (huggingface_hub, s3fs,
            gcsfs, ray) is not installed.
    """
    options = options or RegistryOptions()
    filters = Filters.parse(options.filters)
    store = ResultStore.open(options.results_db, policy) if options.results_db else None
    try:
        executor = make_executor(options.executor, options.workers)
        try:
            return _Run(sources, policy, options, filters, executor, store, progress).run()
        finally:
            executor.close()
    finally:
        if store is not None:
            store.close()


def _batches(items: Sequence[T], size: int, parallelism: int) -> Iterator[Sequence[T]]:
    # Small runs get smaller batches, so that every worker has some.
    fair = max(1, math.ceil(len(items) / (2 * parallelism)))
    step = max(1, min(size, fair))
    for start in range(0, len(items), step):
        yield items[start : start + step]


class _Run:
    def __init__(
        self,
        sources: Sequence[str],
        policy: Policy,
        options: RegistryOptions,
        filters: Filters,
        executor: Executor,
        store: ResultStore | None,
        progress: ProgressCallback | None,
    ) -> None:
        self.sources = sources
        self.policy = policy
        self.options = options
        self.filters = filters
        self.executor = executor
        self.store = store
        self.progress = progress
        self.errors: list[InputError] = []
        self.stats = RegistryStats()
        self.started = time.monotonic()
        self.endpoint = supply_hub.hf_endpoint() or supply_hub.DEFAULT_ENDPOINT
        rate = options.rate_limit / executor.parallelism if options.rate_limit else None
        self.config = WorkerConfig(
            policy=scan_only(policy),
            remote=RemoteOptions(
                allow_http=options.allow_http,
                timeout=options.timeout,
                hf_token=self._token(),
                retry=RetryPolicy(rate=rate),
            ),
            endpoint=self.endpoint,
            storage_options=options.storage_options,
            threads=options.threads,
        )

    def _token(self) -> str | None:
        if self.options.hf_token or not any(s.startswith(HF_SCHEME) for s in self.sources):
            return self.options.hf_token
        return supply_hub.hub_token(None)

    def run(self) -> RegistryRun:
        artifacts, pending = self._list()
        artifacts += self._resolve(pending)
        unique: dict[str, Artifact] = {}
        for artifact in artifacts:
            unique.setdefault(artifact.display, artifact)
        raws = self._scan(list(unique.values()))
        results = [
            self._result(unique[display], raw)
            for display, raw in sorted(raws.items(), key=lambda item: item[0])
        ]
        self.stats.artifacts = len(unique)
        self.stats.groups = {a.display: a.group for a in unique.values()}
        self.stats.elapsed = time.monotonic() - self.started
        errors = tuple(sorted(self.errors, key=lambda e: (e.path, e.message)))
        return RegistryRun(Report(artifacts=tuple(results), errors=errors), self.stats)

    # -- 1. list ---------------------------------------------------------------------
    def _list(self) -> tuple[list[Artifact], list[Pending]]:
        artifacts: list[Artifact] = []
        pending: list[Pending] = []
        stores = [s for s in self.sources if objectstore.is_object_store(s)]
        if stores and self.filters.tags:
            raise UsageError(f"tag filters apply to hf:// sources only, not {stores[0]}")
        for source in self.sources:
            try:
                if hub.is_owner_source(source):
                    token = self.config.remote.hf_token
                    repos = hub.list_owner(source, self.filters, self.endpoint, token)
                    self._nothing_listed(source, repos, "model repository")
                    pending += repos
                elif source.startswith(HF_SCHEME):
                    pending.append(hub.repo_ref(source))
                elif objectstore.is_object_store(source):
                    options = self.options.storage_options
                    protocol = objectstore.protocol_of(source)
                    found = objectstore.list_objects(source, self.filters, options.get(protocol))
                    self._nothing_listed(source, found, "object")
                    artifacts += found
                elif source.startswith(("https://", "http://")):
                    check_source_url(source, self.options.allow_http)
                    shown = display_url(source)
                    pending.append(UrlRef(source, shown, url_group(source)))
                else:
                    raise UsageError(f"{source}: not a remote source")
            except FetchError as exc:
                self.errors.append(InputError(source, str(exc).removeprefix(f"{source}: ")))
        return artifacts, pending

    def _nothing_listed(self, source: str, listed: Sequence[object], what: str) -> None:
        # A gate that passes on nothing would pass a typo: an empty listing is an error.
        if not listed:
            passing = " passes the filters" if self.filters.names or self.filters.tags else ""
            self.errors.append(InputError(source, f"no {what}{passing}"))

    # -- 2. resolve ------------------------------------------------------------------
    def _resolve(self, pending: list[Pending]) -> list[Artifact]:
        artifacts: list[Artifact] = []
        todo: list[Pending] = []
        for item in pending:
            known = self._known_files(item)
            if isinstance(item, RepoRef) and known is not None:
                artifacts += self._files(item, known)
            else:
                todo.append(item)
        executor = self._executor_for(len(todo))
        batches = _batches(todo, self.options.batch_size, executor.parallelism)
        done = 0
        for batch in executor.map_batches(resolve_batch, self.config, batches):
            for position, item in enumerate(batch.items):
                done += 1
                self._tick("resolving", done, len(todo), _name(item), "", False)
                if batch.results is None:
                    self.errors.append(InputError(_name(item), f"listing failed: {batch.error}"))
                    continue
                artifacts += self._accept(item, batch.results[position])
        return artifacts

    def _known_files(self, item: Pending) -> tuple[Artifact, ...] | None:
        if self.store is None or not isinstance(item, RepoRef) or item.commit is None:
            return None
        return self.store.snapshot(self.endpoint, item.repo, item.commit)

    def _accept(self, item: Pending, resolved: Resolved) -> list[Artifact]:
        if resolved.error is not None:
            self.errors.append(InputError(resolved.source, resolved.error))
            return []
        if isinstance(item, RepoRef) and resolved.commit is not None:
            if self.store is not None:
                self.store.put_snapshot(
                    self.endpoint, item.repo, resolved.commit, resolved.artifacts
                )
            return self._files(item, resolved.artifacts)
        return list(resolved.artifacts)

    def _files(self, item: RepoRef, files: tuple[Artifact, ...]) -> list[Artifact]:
        chosen = hub.below(files, item)
        if not chosen:
            what = f"{item.path!r} in " if item.path else ""
            self.errors.append(InputError(f"hf://{item.repo}", f"no file {what}the repository"))
        return list(chosen)

    # -- 3. look up, 4. scan ---------------------------------------------------------
    def _scan(self, artifacts: list[Artifact]) -> dict[str, RawScan]:
        raws: dict[str, RawScan] = {}
        misses: list[Artifact] = []
        copies: dict[str, list[Artifact]] = {}  # identity -> later artifacts with that content
        total = len(artifacts)
        for artifact in artifacts:
            if artifact.problem is not None:
                total -= 1
                self.errors.append(InputError(artifact.display, artifact.problem))
                continue
            hit = self.store.lookup(artifact) if self.store is not None else None
            if hit is None:
                if artifact.identity is not None and artifact.identity in copies:
                    copies[artifact.identity].append(artifact)
                    continue
                if artifact.identity is not None:
                    copies[artifact.identity] = []
                misses.append(artifact)
                continue
            raws[artifact.display] = hit
            self.stats.from_store += 1
            self.stats.stored.add(artifact.display)
            self._tick("scanning", len(raws), total, artifact.display, artifact.group, True)
        retry_alone: list[Artifact] = []
        groups = {a.display: a.group for a in artifacts}
        for outcome_or_failure in self._run_scans(misses, self.options.batch_size):
            if isinstance(outcome_or_failure, ScanOutcome):
                self._take(outcome_or_failure, raws, total, groups)
            else:
                retry_alone.append(outcome_or_failure)
        # A failed batch may hold one artifact that kills its worker: try each alone.
        for outcome_or_failure in self._run_scans(retry_alone, 1):
            if isinstance(outcome_or_failure, ScanOutcome):
                self._take(outcome_or_failure, raws, total, groups)
            else:
                self.stats.failed += 1
                self.errors.append(
                    InputError(outcome_or_failure.display, "scan failed: the worker kept failing")
                )
        self._share(misses, copies, raws, total)
        return raws

    def _share(
        self,
        scanned: list[Artifact],
        copies: dict[str, list[Artifact]],
        raws: dict[str, RawScan],
        total: int,
    ) -> None:
        """Same content, one scan: copies take the result of the first one scanned."""
        for artifact in scanned:
            raw = raws.get(artifact.display)
            for copy in copies.get(artifact.identity or "", []):
                if raw is None:
                    self.errors.append(InputError(copy.display, "unreadable (as its copy was)"))
                    continue
                raws[copy.display] = raw
                self.stats.duplicates += 1
                self._tick("scanning", len(raws), total, copy.display, copy.group, False)

    def _run_scans(self, artifacts: list[Artifact], size: int) -> Iterator[ScanOutcome | Artifact]:
        executor = self._executor_for(len(artifacts))
        batches = _batches(artifacts, size, executor.parallelism)
        for batch in executor.map_batches(scan_batch, self.config, batches):
            if batch.results is None:
                yield from batch.items
            else:
                yield from batch.results

    def _take(
        self, outcome: ScanOutcome, raws: dict[str, RawScan], total: int, groups: dict[str, str]
    ) -> None:
        if outcome.engine != ruleset_digest():
            raise UsageError(
                f"a worker runs another modelguard (rule set {outcome.engine[:12]}, "
                f"this one {ruleset_digest()[:12]}): install the same version everywhere"
            )
        self.stats.bytes_read += outcome.bytes_read
        self.stats.requests += outcome.requests
        if outcome.raw is None:
            self.stats.failed += 1
            self.errors.append(InputError(outcome.display, outcome.error or "unreadable"))
        else:
            raws[outcome.display] = outcome.raw
            self.stats.scanned += 1
            self.stats.scanned_size += outcome.raw.size
            if self.store is not None and outcome.identity is not None:
                self.store.put(outcome.identity, outcome.display, outcome.raw)
        done = len(raws) + self.stats.failed
        self._tick("scanning", done, total, outcome.display, groups[outcome.display], False)

    def _executor_for(self, count: int) -> Executor:
        if count < INLINE_BELOW and self.executor.name == "pool":
            from modelguard.registry.executors.pool import PoolExecutor

            return PoolExecutor(workers=1)
        return self.executor

    # -- 5. report -------------------------------------------------------------------
    def _result(self, artifact: Artifact, raw: RawScan) -> ArtifactResult:
        # Fresh findings take the stored form too: one path to the report.
        findings = decode_findings(encode_findings(raw.findings), artifact.display)
        return _apply_policy(artifact.display, raw.format, raw.size, list(findings), self.policy)

    def _tick(
        self, phase: str, done: int, total: int, display: str, group: str, stored: bool
    ) -> None:
        if self.progress is not None:
            elapsed = time.monotonic() - self.started
            read = self.stats.bytes_read
            self.progress(Progress(phase, done, total, display, group, read, stored, elapsed))


def _name(item: Pending) -> str:
    return f"hf://{item.repo}" if isinstance(item, RepoRef) else item.display

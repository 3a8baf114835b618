"""The Python API behind every entry point. The CLI is a thin layer over this."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from modelguard.findings import Report
from modelguard.policy import Policy, ignored_policy_report, load_policy
from modelguard.scan.cache import ScanCache
from modelguard.scan.engine import ProgressCallback, run_scan, without_skipped

if TYPE_CHECKING:
    from modelguard.registry import ProgressCallback as RemoteProgressCallback


def scan(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    policy: Policy | None = None,
    config: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cache: bool | ScanCache = False,
    allow_http: bool = False,
    executor: str | None = None,
    results_db: str | os.PathLike[str] | None = None,
    filters: Sequence[str] = (),
    rate_limit: float | None = None,
    remote_progress: RemoteProgressCallback | None = None,
    no_default_excludes: bool = False,
) -> Report:
    """Statically scan model files and folders without ever loading them.

    Args:
        paths: a file or folder, or several. Folders are walked recursively.
            ``hf://owner/repo[@revision][/path]`` and ``https://…`` sources are
            scanned remotely: HTTP range requests fetch only what the scanners
            read (a checkpoint's zip directory and pickles), with a full
            download (to a temporary file, deleted after) where the server
            does not support ranges. ``hf://OWNER`` scans every model
            repository of a user or organisation; ``s3://bucket/prefix`` and
            ``gs://bucket/prefix`` every object below a prefix (fsspec; the
            ``s3``/``gcs`` extras). See :mod:`modelguard.registry`.
        policy: the policy to apply; when None it is read from ``config`` or
            discovered from ``[tool.modelguard]`` in pyproject.toml.
        config: a policy file (pyproject.toml or a TOML file with the same keys).
        root: paths in the report are relative to this folder (default: cwd).
        workers: parallel worker processes for folders (default: CPU count, max 8).
        progress: called as ``progress(done, total, path)`` after each file.
        cache: reuse results for files unchanged since an earlier scan. ``True``
            uses the user cache folder (``$MODELGUARD_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/modelguard``, else ``~/.cache/modelguard``); a
            :class:`~modelguard.scan.cache.ScanCache` names another folder. The
            CLI caches unless ``--no-cache`` is given; the API defaults to off.
            Remote results are kept by content identity in a SQLite store in
            the same folder (see ``results_db``).
        allow_http: accept plain ``http://`` sources (default: https only).
        executor: where remote scans run: ``None``/``"pool"`` (local worker
            processes), ``"ray"`` (a local Ray cluster, or ``$RAY_ADDRESS``) or
            ``"ray://HOST:PORT"``; Ray needs the ``ray`` extra.
        results_db: the SQLite results store for remote sources (default: in
            the cache folder when ``cache`` is on, else none). Unchanged
            artifacts are answered from it without reading their bytes.
        filters: for ``hf://OWNER`` and object stores: name globs (one must
            match) and ``tag:NAME`` (Hub tags, all required).
        rate_limit: requests per second per host for remote sources, all
            workers together (default: unpaced; 429/5xx are always backed off).
        remote_progress: called with a :class:`modelguard.registry.Progress`
            for each remote artifact resolved and scanned.
        no_default_excludes: also walk the folders a model scan skips by default
            (``.git``, ``.venv``, ``node_modules``, ``__pycache__``, ... and what
            ``.gitignore`` names in a git work tree; see ``modelguard.files``).

    Returns:
        A :class:`~modelguard.findings.Report`; ``report.exit_code(policy.fail_on)``
        gives the CLI's exit code. Unreadable inputs are in ``report.errors``;
        files that are not model-like by content or name (``README.md``,
        ``train.py``) are no result, only listed in ``report.skipped``.

    Raises:
        modelguard.errors.ConfigError: the policy file is invalid.
        modelguard.errors.UsageError: a malformed remote source, or http:// without
            ``allow_http``.
        modelguard.errors.FetchError: a Hub repository could not be listed.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if policy is None:
        # The scanned trees never choose their own policy (see modelguard.policy).
        policy = load_policy(Path(config) if config is not None else None, checked=paths)
    if no_default_excludes:
        policy = replace(policy, no_default_excludes=True)
    scan_cache: ScanCache | None = None
    if isinstance(cache, ScanCache):
        scan_cache = cache
    elif cache:
        scan_cache = ScanCache.default()
    from modelguard.remote import is_remote

    remote = [str(p) for p in paths if is_remote(p)]
    local = [p for p in paths if not is_remote(p)]
    report = run_scan(
        local, policy=policy, root=root, workers=workers, progress=progress, cache=scan_cache
    )
    if remote:
        from modelguard.registry import RegistryOptions, scan_registry
        from modelguard.registry.store import DEFAULT_NAME

        store = Path(results_db) if results_db is not None else None
        if store is None and scan_cache is not None:
            store = scan_cache.directory / DEFAULT_NAME
        options = RegistryOptions(
            executor=executor,
            workers=workers,
            results_db=store,
            filters=tuple(filters),
            allow_http=allow_http,
            rate_limit=rate_limit,
        )
        run = scan_registry(remote, policy, options, remote_progress)
        report = report.merged(without_skipped(run.report))
    return report.merged(ignored_policy_report(policy, root=Path(report.root)))

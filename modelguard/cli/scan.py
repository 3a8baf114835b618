"""``modelguard scan`` and ``modelguard rules``."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from modelguard.cli.options import ReportChoices, env_name, file_progress, report_options
from modelguard.cli.output import call_api
from modelguard.cli.registry import print_summary, registry_options, remote_progress
from modelguard.findings import Report


def read_path_list(paths: tuple[str, ...]) -> list[str]:
    """Expand ``-`` into newline-separated paths read from stdin."""
    expanded: list[str] = []
    for path in paths:
        if path == "-":
            expanded.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            expanded.append(path)
    return expanded


@click.command()
@click.argument("paths", nargs=-1)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Report paths relative to this folder [default: current folder]. For SARIF "
    "uploaded to GitHub code scanning, use the repository root.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    envvar=env_name("workers"),
    show_envvar=True,
    help="Parallel worker processes.",
)
@click.option(
    "--cache/--no-cache",
    default=True,
    show_default=True,
    envvar=env_name("cache"),
    show_envvar=True,
    help="Reuse results for files unchanged since the last scan (user cache folder, "
    "or $MODELGUARD_CACHE_DIR).",
)
@click.option(
    "--allow-http", is_flag=True, help="Accept plain http:// sources (default: https only)."
)
@click.option(
    "--no-default-excludes",
    is_flag=True,
    help="Also walk .git, .venv/venv, node_modules, __pycache__, tool caches and what "
    ".gitignore names (skipped by default inside folders).",
)
@registry_options
@report_options
def scan(
    paths: tuple[str, ...],
    root: Path | None,
    workers: int | None,
    cache: bool,
    allow_http: bool,
    source_lists: tuple[str, ...],
    filters: tuple[str, ...],
    executor: str | None,
    results_db: Path | None,
    rate_limit: float | None,
    no_default_excludes: bool,
    report: ReportChoices,
) -> None:
    """Scan model files and folders without loading them.

    PATHS are files or folders; '-' reads a list of paths from stdin (an empty
    list is nothing to scan: exit 0). hf://owner/repo[@revision][/path] and
    https:// URLs are scanned remotely, fetching only the bytes the scanners
    need (HTTP range requests); hf://OWNER scans every model repository of a
    user or organisation, s3://bucket/prefix and gs://bucket/prefix every
    object below a prefix. Exit status: 0 clean, 1 findings at or above
    --fail-on, 2 usage error or unreadable input.
    """
    from modelguard.api import scan as api_scan
    from modelguard.registry import is_registry_source, read_source_list

    targets = read_path_list(paths)
    for source_list in source_lists:
        targets += call_api(functools.partial(read_source_list, source_list))
    if not paths and not source_lists:
        raise click.UsageError("Missing argument 'PATHS...' (or --from FILE).")
    policy = report.policy(checked=targets)
    if not targets:
        # `git ls-files '*.pt' | modelguard scan -` in a repository without models.
        click.echo("modelguard: nothing to scan (no paths on stdin)", err=True)
        report.emit(Report(root=Path.cwd().as_posix()), policy.fail_on)
        sys.exit(0)
    shown = report.show_progress()
    with (
        file_progress(shown, "scanning") as callback,
        remote_progress(shown) as (remote_callback, tally),
    ):
        result = call_api(
            lambda: api_scan(
                targets,
                policy=policy,
                root=root,
                workers=workers,
                progress=callback,
                cache=cache,
                allow_http=allow_http,
                executor=executor,
                results_db=results_db,
                filters=filters,
                rate_limit=rate_limit,
                remote_progress=remote_callback,
                no_default_excludes=no_default_excludes,
            )
        )
    report.emit(result, policy.fail_on)
    if source_lists or any(is_registry_source(t) for t in targets):
        print_summary(result, tally, policy.fail_on)
    sys.exit(result.exit_code(policy.fail_on))


@click.command()
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Listing format.",
)
def rules(fmt: str) -> None:
    """List every rule: id, severity, what it means and how to fix it."""
    import json

    from modelguard.rules import all_rules

    catalogue = all_rules()
    if fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "name": r.name,
                        "severity": r.severity.label,
                        "summary": r.summary,
                        "description": r.description,
                        "fix": r.fix,
                        "tags": list(r.tags),
                        "help_uri": r.help_uri,
                    }
                    for r in catalogue
                ],
                indent=2,
            )
        )
        return
    for r in catalogue:
        click.echo(f"{r.id}  {r.severity.label:<8} {r.name}")
        click.echo(f"    {r.summary}")
        click.echo(f"    why: {r.description}")
        click.echo(f"    fix: {r.fix}")

"""``modelguard`` command group. Commands parse arguments, call the API, render,
and map the Report to an exit code; nothing else happens here."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from modelguard._version import __version__
from modelguard.cli.output import EXIT_ERROR, call_api, emit_report, fail, progress_bar
from modelguard.findings import Severity
from modelguard.policy import NEVER, Policy, load_policy, parse_fail_on
from modelguard.report.interface import RenderOptions

FAIL_ON_CHOICES = [s.label for s in Severity] + [NEVER]
SCAN_FORMATS = ["text", "json", "sarif", "cyclonedx"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelguard")
def cli() -> None:
    """Supply-chain scanner for machine-learning model files."""


def _read_path_list(paths: tuple[str, ...]) -> list[str]:
    """Expand ``-`` into newline-separated paths read from stdin."""
    expanded: list[str] = []
    for path in paths:
        if path == "-":
            expanded.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            expanded.append(path)
    return expanded


def resolve_policy(
    config: Path | None, fail_on: str | None, *, checked: Sequence[str | Path] = ()
) -> Policy:
    """Policy from config/pyproject, with --fail-on taking precedence.

    ``checked``: the trees being checked; a pyproject.toml inside them is not used.
    """
    policy = call_api(lambda: load_policy(config, checked=checked))
    if fail_on is not None:
        from dataclasses import replace

        policy = replace(policy, fail_on=parse_fail_on(fail_on), fail_on_source=None)
    return policy


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(SCAN_FORMATS),
    default="text",
    show_default=True,
    help="Report format.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report here (atomically) instead of stdout.",
)
@click.option(
    "--fail-on",
    type=click.Choice(FAIL_ON_CHOICES, case_sensitive=False),
    help="Exit 1 when a finding is at or above this severity [default: high, or config].",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file (pyproject.toml or TOML with the [tool.modelguard] keys).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Report paths relative to this folder [default: current folder]. For SARIF "
    "uploaded to GitHub code scanning, use the repository root.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Parallel worker processes.")
@click.option("--color/--no-color", default=None, help="Colour text output [default: auto].")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: auto].")
@click.option("-v", "--verbose", is_flag=True, help="Text: also show info and suppressed findings.")
@click.option(
    "--cache/--no-cache",
    default=True,
    show_default=True,
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
def scan(
    paths: tuple[str, ...],
    fmt: str,
    output: Path | None,
    fail_on: str | None,
    config: Path | None,
    root: Path | None,
    workers: int | None,
    color: bool | None,
    progress: bool | None,
    verbose: bool,
    cache: bool,
    allow_http: bool,
    no_default_excludes: bool,
) -> None:
    """Scan model files and folders without loading them.

    PATHS are files or folders; '-' reads a list of paths from stdin.
    hf://owner/repo[@revision][/path] and https:// URLs are scanned remotely,
    fetching only the bytes the scanners need (HTTP range requests).
    Exit status: 0 clean, 1 findings at or above --fail-on, 2 usage error or
    unreadable input.
    """
    from modelguard.api import scan as api_scan

    targets = _read_path_list(paths)
    if not targets:
        fail("no paths to scan")
    policy = resolve_policy(config, fail_on, checked=targets)
    show_progress = sys.stderr.isatty() if progress is None else progress
    with progress_bar(show_progress, "scanning") as callback:
        report = call_api(
            lambda: api_scan(
                targets,
                policy=policy,
                root=root,
                workers=workers,
                progress=callback,
                cache=cache,
                allow_http=allow_http,
                no_default_excludes=no_default_excludes,
            )
        )
    use_color = (output is None and sys.stdout.isatty()) if color is None else color
    options = RenderOptions(
        color=use_color and fmt == "text", fail_on=policy.fail_on, verbose=verbose
    )
    emit_report(report, fmt, output, options)
    sys.exit(report.exit_code(policy.fail_on))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
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


# Command groups of the other subsystems live in their own modules; each module
# defines click commands and imports its heavy libraries only inside them.
COMMAND_MODULES = ("modelguard.cli.supply", "modelguard.cli.backdoor")


def _register_commands() -> None:
    import importlib

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_register_commands()


def main() -> None:
    try:
        cli.main(prog_name="modelguard")
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()

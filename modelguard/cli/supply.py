"""``modelguard fetch | lock | verify | sign``: parse, call modelguard.supply, render, exit."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from modelguard.cli.main import FAIL_ON_CHOICES, resolve_policy
from modelguard.cli.output import EXIT_FINDINGS, call_api, emit_report
from modelguard.findings import Report
from modelguard.policy import Policy
from modelguard.report.interface import RenderOptions

REPORT_FORMATS = ["text", "json", "sarif"]


def _report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--format/--output/--fail-on/--config/--verbose, as `modelguard scan` has them."""
    options = [
        click.option(
            "--format",
            "fmt",
            type=click.Choice(REPORT_FORMATS),
            default="text",
            show_default=True,
            help="Report format.",
        ),
        click.option(
            "-o",
            "--output",
            "report_output",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the report here (atomically) instead of stdout.",
        ),
        click.option(
            "--fail-on",
            type=click.Choice(FAIL_ON_CHOICES, case_sensitive=False),
            help="Exit 1 when a finding is at or above this severity [default: high, or config].",
        ),
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Policy file (pyproject.toml or TOML with the [tool.modelguard] keys).",
        ),
        click.option("-v", "--verbose", is_flag=True, help="Also show info findings."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _render(report: Report, fmt: str, output: Path | None, policy: Policy, verbose: bool) -> int:
    """Render the report and return its exit code.

    The threshold is the policy's for this report: a fail-on read from a file never
    lets a critical verification failure pass (``Policy.fail_on_for``).
    """
    fail_on = policy.fail_on_for(report)
    use_color = output is None and fmt == "text" and sys.stdout.isatty()
    emit_report(
        report, fmt, output, RenderOptions(color=use_color, fail_on=fail_on, verbose=verbose)
    )
    return report.exit_code(fail_on)


@contextlib.contextmanager
def _byte_progress(enabled: bool) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """One click progress bar per file, drawn on stderr."""
    if not enabled:
        yield None
        return
    bars: dict[str, Any] = {}
    done: dict[str, int] = {}

    def update(name: str, so_far: int, total: int | None) -> None:
        bar = bars.get(name)
        if bar is None and total is None:
            return  # no announced size: nothing meaningful to draw
        if bar is None:
            bar = click.progressbar(length=total, label=name, file=sys.stderr, show_percent=True)
            bar.__enter__()
            bars[name] = bar
            done[name] = 0
        bar.update(so_far - done[name])
        done[name] = so_far

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)


@click.command()
@click.argument("source")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Destination folder.",
)
@click.option(
    "--lock",
    "lock_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pin digests from, and record the fetched files into, this lock file.",
)
@click.option("--scan/--no-scan", default=True, help="Scan each file before placing it.")
@click.option("--sha256", help="Expected sha256 of the (single) file.")
@click.option("--sha1", help="Expected sha1 of the (single) file.")
@click.option("--allow-http", is_flag=True, help="Accept plain http:// URLs and redirects to them.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace files in --dest that modelguard did not place (never through a link).",
)
@click.option(
    "--allow-dotfiles",
    is_flag=True,
    help="Also place the source's dotfiles, policy files (pyproject.toml, modelguard.lock) "
    "and hook files (conftest.py, *.pth); never anything inside .git.",
)
@click.option(
    "--quarantine",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for files the scan flags [default: the user cache's quarantine folder].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Network timeout in seconds.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Retries after a transient network failure (with back-off).",
)
@click.option(
    "--max-size", type=click.IntRange(min=1), help="Refuse downloads larger than this many bytes."
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar [default: on a terminal]."
)
@_report_options
def fetch(
    source: str,
    dest: Path,
    lock_file: Path | None,
    scan: bool,
    sha256: str | None,
    sha1: str | None,
    allow_http: bool,
    force: bool,
    allow_dotfiles: bool,
    quarantine: Path | None,
    timeout: float,
    retries: int,
    max_size: int | None,
    progress: bool | None,
    fmt: str,
    report_output: Path | None,
    fail_on: str | None,
    config: Path | None,
    verbose: bool,
) -> None:
    """Download SOURCE, verify its digest, scan it, and place it atomically.

    SOURCE is hf://owner/repo[@revision][/path], an https:// URL, or a
    Caffe-Model-Zoo readme (a local file or its URL). Nothing reaches --dest
    unless it matches the expected digest and passes the scan, and nothing in
    --dest is replaced that modelguard did not place. A pyproject.toml inside
    --dest is never used as policy.
    Exit status: 0 placed, 1 rejected or findings at/above --fail-on, 2 error.
    """
    from modelguard.supply.download import DEFAULT_MAX_BYTES, DownloadOptions
    from modelguard.supply.fetch import fetch as api_fetch

    policy = resolve_policy(config, fail_on, checked=[dest])
    show = sys.stderr.isatty() if progress is None else progress
    with _byte_progress(show) as callback:
        options = DownloadOptions(
            timeout=timeout,
            retries=retries,
            max_bytes=max_size or DEFAULT_MAX_BYTES,
            progress=callback,
        )
        result = call_api(
            lambda: api_fetch(
                source,
                dest,
                lock=lock_file,
                scan=scan,
                policy=policy,
                sha256=sha256,
                sha1=sha1,
                allow_http=allow_http,
                quarantine_dir=quarantine,
                options=options,
                force=force,
                allow_dotfiles=allow_dotfiles,
            )
        )
    code = _render(result.report, fmt, report_output, policy, verbose)
    pinned = f" at revision {result.revision}" if result.revision else ""
    for path in result.placed:
        click.echo(f"modelguard: fetched {path} from {result.source}{pinned}", err=True)
    if not result.placed:
        click.echo(
            f"modelguard: nothing was placed in {dest}: see the findings for {result.source}",
            err=True,
        )
    for path in result.quarantined:
        click.echo(f"modelguard: quarantined {path} (scan findings; do not load it)", err=True)
    if lock_file is not None and result.placed:
        click.echo(f"modelguard: recorded in {lock_file}", err=True)
    sys.exit(code if code or result.placed else EXIT_FINDINGS)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--lock",
    "lock_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("modelguard.lock"),
    show_default=True,
    help="Lock file to write (entries for other paths are kept).",
)
@click.option("--scan/--no-scan", default=True, help="Record each file's scan verdict.")
@_report_options
def lock(
    paths: tuple[Path, ...],
    lock_file: Path,
    scan: bool,
    fmt: str,
    report_output: Path | None,
    fail_on: str | None,
    config: Path | None,
    verbose: bool,
) -> None:
    """Pin files (folders recursively): size, sha256 and scan verdict into modelguard.lock.

    Inside folders, git's files and signature bundles (model.sig, FILE.sig) are
    left out, so re-signing never breaks the lock.
    """
    from modelguard.supply.lock import lock as api_lock

    policy = resolve_policy(config, fail_on, checked=list(paths))
    report = call_api(lambda: api_lock(list(paths), lockfile=lock_file, scan=scan, policy=policy))
    code = _render(report, fmt, report_output, policy, verbose)
    if not report.errors:
        click.echo(f"modelguard: locked {len(report.artifacts)} file(s) in {lock_file}", err=True)
    sys.exit(code)


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--lock",
    "lock_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check against this lock file [default: modelguard.lock when no other check is named].",
)
@click.option("--sha256", help="The single file PATH must have this sha256.")
@click.option("--sha1", help="The single file PATH must have this sha1.")
@click.option(
    "--signature",
    type=click.Path(dir_okay=False, path_type=Path),
    help="OpenSSF model-signing bundle [default with --key: PATH/model.sig or PATH.sig].",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Signer's PEM public key (ECDSA P-256/384/521).",
)
@_report_options
def verify(
    path: Path,
    lock_file: Path | None,
    sha256: str | None,
    sha1: str | None,
    signature: Path | None,
    key: Path | None,
    fmt: str,
    report_output: Path | None,
    fail_on: str | None,
    config: Path | None,
    verbose: bool,
) -> None:
    """Verify PATH against a lock file, a digest, or a signature bundle.

    Reports missing, unexpected, resized and modified files (like pip's
    --require-hashes), leftover partial downloads, and unsigned, bad-signature,
    wrong-key and malformed-bundle cases. A pyproject.toml inside PATH is never
    used as policy, and a fail-on from a file never passes a critical mismatch.
    Exit status: 0 verified, 1 findings at/above --fail-on, 2 error.
    """
    from modelguard.supply.verify import verify as api_verify

    policy = resolve_policy(config, fail_on, checked=[path])
    report = call_api(
        lambda: api_verify(
            path,
            lockfile=lock_file,
            sha256=sha256,
            sha1=sha1,
            signature=signature,
            key=key,
            policy=policy,
        )
    )
    sys.exit(_render(report, fmt, report_output, policy, verbose))


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key (ECDSA P-256/384/521), as for `model_signing sign key`.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Bundle to write [default: PATH/model.sig for a folder, PATH.sig for a file].",
)
@click.option(
    "--password-env",
    metavar="VAR",
    help="Read the private key's password from this environment variable.",
)
def sign(path: Path, key: Path, output: Path | None, password_env: str | None) -> None:
    """Sign a model file or folder (OpenSSF model-signing compatible bundle)."""
    import os

    from modelguard.cli.output import fail
    from modelguard.supply.signing import sign as api_sign

    password: bytes | None = None
    if password_env is not None:
        value = os.environ.get(password_env)
        if value is None:
            fail(f"--password-env: environment variable {password_env} is not set")
        password = value.encode()
    bundle = call_api(lambda: api_sign(path, key, output=output, password=password))
    click.echo(f"modelguard: signed {path}: {bundle}")


COMMANDS = [fetch, lock, verify, sign]

"""``modelguard fetch | lock | verify | sign``: parse, call modelguard.supply, render, exit.

The report's threshold is the policy's for that report (``Policy.fail_on_for``): a
fail-on read from a file never lets a critical verification failure pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelguard.cli.options import (
    ReportChoices,
    TerminalChoices,
    byte_progress,
    output_options,
    report_options,
)
from modelguard.cli.output import EXIT_FINDINGS, call_api
from modelguard.findings import Report
from modelguard.policy import Policy


def _emit(report: ReportChoices, result: Report, policy: Policy, lock: Path | None) -> int:
    """Render ``result`` under the policy's threshold for it; its exit code.

    ``lock`` is the lock file the command used, for the BOM's pins.
    """
    fail_on = policy.fail_on_for(result)
    report.emit(result, fail_on, lock=lock)
    return result.exit_code(fail_on)


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
@report_options
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
    report: ReportChoices,
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

    policy = report.policy(checked=[dest])
    with byte_progress(report.show_progress()) as callback:
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
    code = _emit(report, result.report, policy, lock_file)
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
@report_options
def lock(
    paths: tuple[Path, ...],
    lock_file: Path,
    scan: bool,
    report: ReportChoices,
) -> None:
    """Pin files (folders recursively): size, sha256 and scan verdict into modelguard.lock.

    Inside folders, git's files and signature bundles (model.sig, FILE.sig) are
    left out, so re-signing never breaks the lock.
    """
    from modelguard.supply.lock import lock as api_lock

    policy = report.policy(checked=list(paths))
    result = call_api(lambda: api_lock(list(paths), lockfile=lock_file, scan=scan, policy=policy))
    code = _emit(report, result, policy, lock_file)
    if not result.errors:
        click.echo(f"modelguard: locked {len(result.artifacts)} file(s) in {lock_file}", err=True)
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
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Report paths relative to this folder [default: current folder], as scan's --root.",
)
@report_options
def verify(
    path: Path,
    lock_file: Path | None,
    sha256: str | None,
    sha1: str | None,
    signature: Path | None,
    key: Path | None,
    root: Path | None,
    report: ReportChoices,
) -> None:
    """Verify PATH against a lock file, a digest, or a signature bundle.

    Reports missing, unexpected, resized and modified files (like pip's
    --require-hashes), leftover partial downloads, and unsigned, bad-signature,
    wrong-key and malformed-bundle cases. A pyproject.toml inside PATH is never
    used as policy, and a fail-on from a file never passes a critical mismatch.
    Exit status: 0 verified, 1 findings at/above --fail-on, 2 error.
    """
    from modelguard.supply.verify import verify as api_verify

    policy = report.policy(checked=[path])
    result = call_api(
        lambda: api_verify(
            path,
            lockfile=lock_file,
            sha256=sha256,
            sha1=sha1,
            signature=signature,
            key=key,
            policy=policy,
            root=root,
        )
    )
    sys.exit(_emit(report, result, policy, lock_file))


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key (ECDSA P-256/384/521), as for `model_signing sign key`.",
)
# sign writes a bundle, not a report: -o names the bundle, and it takes only the
# terminal options of the shared set.
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Bundle to write [default: PATH/model.sig for a folder, PATH.sig for a file].",
)
@click.option(
    "--password-env",
    metavar="VAR",
    help="Read the private key's password from this environment variable.",
)
@output_options
def sign(
    path: Path, key: Path, output: Path | None, password_env: str | None, terminal: TerminalChoices
) -> None:
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

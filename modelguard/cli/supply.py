"""``modelguard fetch | lock | verify | sign``: parse, call modelguard.supply.api, render, exit."""

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
@click.option("--allow-http", is_flag=True, help="Accept plain http:// URLs.")
@click.option(
    "--quarantine",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for files the scan flags [default: ~/.cache/modelguard/quarantine].",
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
    quarantine: Path | None,
    timeout: float,
    retries: int,
    max_size: int | None,
    report: ReportChoices,
) -> None:
    """Download SOURCE, verify its digest, scan it, and place it atomically.

    SOURCE is hf://owner/repo[@revision][/path], an https:// URL, or a
    Caffe-Model-Zoo readme (a local file or its URL). Nothing reaches --dest
    unless it matches the expected digest and passes the scan.
    Exit status: 0 placed, 1 rejected or findings at/above --fail-on, 2 error.
    """
    from modelguard.supply.api import fetch as api_fetch
    from modelguard.supply.download import DEFAULT_MAX_BYTES, DownloadOptions

    policy = report.policy()
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
            )
        )
    report.emit(result.report, policy.fail_on)
    pinned = f" at revision {result.revision}" if result.revision else ""
    for path in result.placed:
        click.echo(f"modelguard: fetched {path} from {result.source}{pinned}", err=True)
    if not result.placed:
        click.echo(
            f"modelguard: nothing was placed in {dest}: {result.source} failed verification",
            err=True,
        )
    for path in result.quarantined:
        click.echo(f"modelguard: quarantined {path} (scan findings; do not load it)", err=True)
    if lock_file is not None and result.placed:
        click.echo(f"modelguard: recorded in {lock_file}", err=True)
    code = result.report.exit_code(policy.fail_on)
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
    """Pin files (folders recursively): size, sha256 and scan verdict into modelguard.lock."""
    from modelguard.supply.api import lock as api_lock

    policy = report.policy()
    result = call_api(lambda: api_lock(list(paths), lockfile=lock_file, scan=scan, policy=policy))
    report.emit(result, policy.fail_on)
    if not result.errors:
        click.echo(f"modelguard: locked {len(result.artifacts)} file(s) in {lock_file}", err=True)
    sys.exit(result.exit_code(policy.fail_on))


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
@report_options
def verify(
    path: Path,
    lock_file: Path | None,
    sha256: str | None,
    sha1: str | None,
    signature: Path | None,
    key: Path | None,
    report: ReportChoices,
) -> None:
    """Verify PATH against a lock file, a digest, or a signature bundle.

    Reports missing, unexpected, resized and modified files (like pip's
    --require-hashes), and unsigned, bad-signature, wrong-key and malformed-bundle
    cases. Exit status: 0 verified, 1 findings at/above --fail-on, 2 error.
    """
    from modelguard.supply.api import verify as api_verify

    policy = report.policy()
    result = call_api(
        lambda: api_verify(
            path, lockfile=lock_file, sha256=sha256, sha1=sha1, signature=signature, key=key
        )
    )
    report.emit(result, policy.fail_on)
    sys.exit(result.exit_code(policy.fail_on))


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
    from modelguard.supply.api import sign as api_sign

    password: bytes | None = None
    if password_env is not None:
        value = os.environ.get(password_env)
        if value is None:
            fail(f"--password-env: environment variable {password_env} is not set")
        password = value.encode()
    bundle = call_api(lambda: api_sign(path, key, output=output, password=password))
    click.echo(f"modelguard: signed {path}: {bundle}")

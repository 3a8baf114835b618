"""Shared CLI plumbing: atomic output files, error messages, exit codes."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import click

from modelguard.errors import ModelGuardError
from modelguard.findings import Report
from modelguard.report.interface import RenderOptions, render

EXIT_FINDINGS = 1
EXIT_ERROR = 2

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """Print ``modelguard: error: message`` on stderr and exit 2."""
    click.echo(f"modelguard: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


# Library messages cite a parameter as `name`; the CLI shows the flag that sets it.
PARAMETER_FLAGS = {
    "allow_http": "--allow-http",
    "allow_dotfiles": "--allow-dotfiles",
    "force": "--force",
    "sha256": "--sha256",
    "sha1": "--sha1",
    "key": "--key",
    "signature": "--signature",
}
_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


def flag_message(message: str) -> str:
    """``message`` with each `parameter` it cites replaced by its command-line flag."""
    return _PARAMETER.sub(lambda m: PARAMETER_FLAGS.get(m[1], m[1]), message)


def call_api(func: Callable[[], T]) -> T:
    """Run an API call; typed modelguard errors become exit-2 messages, not tracebacks."""
    try:
        return func()
    except ModelGuardError as exc:
        fail(flag_message(str(exc)))


def _output_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new one gets what open() would give it.

    mkstemp creates its file 0600; without this the report would keep that mode.
    """
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename: never half-written."""
    folder = path.parent if str(path.parent) else Path()
    if not folder.is_dir():
        fail(f"{path}: output folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        fail(f"{path}: cannot write output: {exc.strerror or exc}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, _output_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        fail(f"{path}: cannot write output: {exc.strerror or exc}")


def emit_report(report: Report, fmt: str, output: Path | None, options: RenderOptions) -> None:
    """Render and print (or atomically write) the report; input errors go to stderr."""
    for error in report.errors:
        click.echo(f"modelguard: error: {error.path}: {error.message}", err=True)
    text = call_api(lambda: render(report, fmt, options))
    if output is None or str(output) == "-":
        # color=: click strips ANSI codes when stdout is not a terminal, which would
        # defeat an explicit --color (e.g. piping into ``less -R``).
        click.echo(text, nl=not text.endswith("\n"), color=options.color)
    else:
        write_atomically(output, text)

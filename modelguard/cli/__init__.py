"""Command-line interface: the ``modelguard`` click group.

Commands parse arguments, call the Python API, render, and map the Report to
an exit code; nothing else happens here. They are added statically; each
command imports its heavy libraries only inside its body.
"""

from __future__ import annotations

import sys

import click

from modelguard._version import __version__
from modelguard.cli.backdoor import backdoor
from modelguard.cli.output import EXIT_ERROR
from modelguard.cli.scan import rules, scan
from modelguard.cli.supply import fetch, lock, sign, verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelguard")
def cli() -> None:
    """Supply-chain scanner for machine-learning model files."""


for _command in (scan, rules, fetch, lock, verify, sign, backdoor):
    cli.add_command(_command)


def main() -> None:
    try:
        cli.main(prog_name="modelguard")
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)


__all__ = ["cli", "main"]

"""The scan command's registry options, progress bar and summary (see modelguard.registry)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelguard.findings import Report, Severity

if TYPE_CHECKING:  # the registry engine loads only for registry scans
    from modelguard.registry.run import Progress
    from modelguard.registry.summary import RunTally

F = TypeVar("F", bound=Callable[..., Any])


def registry_options(func: F) -> F:
    """``--from``, ``--filter``, ``--executor``, ``--results-db``, ``--rate-limit``."""
    options = [
        click.option(
            "--from",
            "source_lists",
            multiple=True,
            metavar="FILE",
            help="Read sources from FILE, one per line ('-': stdin). Repeatable.",
        ),
        click.option(
            "--filter",
            "filters",
            multiple=True,
            metavar="PATTERN",
            help="hf://OWNER and s3://, gs:// sources: a name glob (one must match) or "
            "tag:NAME (a Hub tag, all required). Repeatable.",
        ),
        click.option(
            "--executor",
            metavar="pool|ray|ray://HOST:PORT",
            help="Where remote scans run [default: pool, local processes]. 'ray' starts a "
            "local Ray cluster or joins $RAY_ADDRESS (needs modelguard[ray]).",
        ),
        click.option(
            "--results-db",
            type=click.Path(dir_okay=False, path_type=Path),
            help="SQLite store of remote results by content identity; unchanged artifacts "
            "are not read again [default: in the cache folder, unless --no-cache].",
        ),
        click.option(
            "--rate-limit",
            type=click.FloatRange(min=0, min_open=True),
            metavar="RPS",
            help="At most RPS requests per second to each host, all workers together.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextlib.contextmanager
def remote_progress(enabled: bool) -> Iterator[tuple[Callable[[Progress], None], RunTally]]:
    """A progress callback for remote artifacts (a bar on stderr when enabled) and its tally."""
    from modelguard.registry.summary import RunTally

    tally = RunTally()
    bars: dict[str, Any] = {}  # phase -> click's (private) ProgressBar

    def update(event: Progress) -> None:
        tally.update(event)
        if not enabled:
            return
        bar = bars.get(event.phase)
        if bar is None:
            for other in bars.values():
                other.render_finish()
            bar = click.progressbar(
                length=event.total,
                label=event.phase,
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda _: tally.status() if event.phase == "scanning" else None,
            )
            bar.__enter__()
            bars[event.phase] = bar
        bar.update(1, event.display)

    try:
        yield update, tally
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)


def print_summary(report: Report, tally: RunTally, fail_on: Severity | None) -> None:
    from modelguard.registry.summary import summary_table

    click.echo(summary_table(report, tally, fail_on), err=True)

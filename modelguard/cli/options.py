"""The options every command shares, declared once, and what they resolve to.

``report_options`` adds ``-f/--format``, ``-o/--output``, ``--fail-on``,
``--config`` and the ``output_options`` (``--color/--no-color``, ``-v/--verbose``,
``--progress/--no-progress``) to a command and hands the command one
:class:`ReportChoices` as its ``report`` argument. Each option can also be set
from a ``MODELGUARD_*`` environment variable; precedence is flag > environment >
config file > default (``--fail-on`` is the only one a config file also sets).
Colour follows ``NO_COLOR`` and ``FORCE_COLOR`` when neither the flag nor
``MODELGUARD_COLOR`` says otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import click

from modelguard.cli.output import call_api, emit_report
from modelguard.findings import Report, Severity
from modelguard.policy import NEVER, Policy, load_policy, parse_fail_on
from modelguard.report.interface import RENDERERS, RenderOptions

ENV_PREFIX = "MODELGUARD_"
FAIL_ON_CHOICES: tuple[str, ...] = (*(s.label for s in Severity), NEVER)
REPORT_FORMATS: tuple[str, ...] = tuple(RENDERERS)

# huggingface_hub and tqdm read these when they draw a bar; setting them in our
# own process silences bars drawn by libraries we call, not only our own.
_QUIET_PROGRESS_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def env_name(option: str) -> str:
    """``fail-on`` -> ``MODELGUARD_FAIL_ON``."""
    return ENV_PREFIX + option.upper().replace("-", "_")


def _set(name: str) -> bool:
    """no-color.org / force-color.org: set and not empty, whatever the value."""
    return bool(os.environ.get(name))


def color_enabled(flag: bool | None, stream: TextIO) -> bool:
    """``--color``/``--no-color`` (or MODELGUARD_COLOR), else NO_COLOR, FORCE_COLOR, a tty."""
    if flag is not None:
        return flag
    if _set("NO_COLOR"):
        return False
    if _set("FORCE_COLOR"):
        return True
    return stream.isatty()


def progress_enabled(flag: bool | None) -> bool:
    """``--progress``/``--no-progress`` (or MODELGUARD_PROGRESS), else whether stderr is a tty."""
    return sys.stderr.isatty() if flag is None else flag


def silence_library_progress() -> None:
    """Stop huggingface_hub (and any tqdm) from drawing bars in this process."""
    os.environ.update(_QUIET_PROGRESS_ENV)
    hub = sys.modules.get("huggingface_hub")
    if hub is not None:  # already imported: it read the variable at import time
        hub.utils.disable_progress_bars()


def resolve_policy(
    config: Path | None, fail_on: str | None, *, checked: Sequence[str | Path] = ()
) -> Policy:
    """Policy from ``config`` (or discovered pyproject.toml), with ``fail_on`` overriding it.

    ``checked``: the trees the command checks; a pyproject.toml inside them is not used.
    """
    policy = call_api(lambda: load_policy(config, checked=checked))
    if fail_on is not None:
        policy = replace(policy, fail_on=parse_fail_on(fail_on), fail_on_source=None)
    return policy


@dataclass(frozen=True)
class TerminalChoices:
    """How the command talks to the terminal: colour, verbosity, progress bars."""

    color: bool | None
    verbose: bool
    progress: bool | None

    def show_progress(self) -> bool:
        shown = progress_enabled(self.progress)
        if not shown:
            silence_library_progress()
        return shown


@dataclass(frozen=True)
class ReportChoices(TerminalChoices):
    """The report options as the user gave them (None: not given)."""

    fmt: str
    output: Path | None
    fail_on: str | None
    config: Path | None

    def to_stdout(self) -> bool:
        return self.output is None or str(self.output) == "-"

    def policy(self, checked: Sequence[str | Path] = ()) -> Policy:
        return resolve_policy(self.config, self.fail_on, checked=checked)

    def check_format(self) -> None:
        """Fail now, before any work, when the format's extra is not installed."""
        call_api(RENDERERS[self.fmt].check_available)

    def render_options(
        self, report: Report, fail_on: Severity | None, lock: Path | None = None
    ) -> RenderOptions:
        color = self.fmt == "text" and color_enabled(
            self.color if self.to_stdout() else bool(self.color), sys.stdout
        )
        inventory = None
        if self.fmt == "cyclonedx":
            from modelguard.supply.inventory import gather

            inventory = gather(report, lock=lock)
        return RenderOptions(
            color=color, fail_on=fail_on, verbose=self.verbose, inventory=inventory
        )

    def emit(self, report: Report, fail_on: Severity | None, *, lock: Path | None = None) -> None:
        """Render ``report`` as asked and print it or write it atomically.

        ``lock`` is the lock file the command used, for the BOM's pins.
        """
        emit_report(report, self.fmt, self.output, self.render_options(report, fail_on, lock))


def _output_option_decorators() -> list[Callable[[Any], Any]]:
    return [
        click.option(
            "--color/--no-color",
            default=None,
            envvar=env_name("color"),
            show_envvar=True,
            help="Colour text output [default: on a terminal, unless NO_COLOR is set; "
            "FORCE_COLOR forces it].",
        ),
        click.option(
            "-v",
            "--verbose",
            is_flag=True,
            default=False,
            envvar=env_name("verbose"),
            show_envvar=True,
            help="Text: also show info findings, suppressed findings and skipped files.",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            envvar=env_name("progress"),
            show_envvar=True,
            help="Progress bars on stderr, huggingface_hub's included [default: on a terminal].",
        ),
    ]


def _report_option_decorators(formats: tuple[str, ...]) -> list[Callable[[Any], Any]]:
    return [
        click.option(
            "-f",
            "--format",
            "fmt",
            type=click.Choice(formats),
            default="text",
            show_default=True,
            envvar=env_name("format"),
            show_envvar=True,
            help="Report format.",
        ),
        # No environment variable: one that made every command overwrite the same
        # file would be a trap.
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
            envvar=env_name("fail-on"),
            show_envvar=True,
            help="Exit 1 when a finding is at or above this severity [default: config, else high].",
        ),
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar=env_name("config"),
            show_envvar=True,
            help="Policy file (pyproject.toml or TOML with the [tool.modelguard] keys) "
            "[default: pyproject.toml from the working folder upwards].",
        ),
        *_output_option_decorators(),
    ]


def _apply(decorators: list[Callable[[Any], Any]], func: Callable[..., Any]) -> Any:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


_TERMINAL_PARAMS = ("color", "verbose", "progress")
# click parameter name -> ReportChoices field
_REPORT_PARAMS = {"fmt": "fmt", "report_output": "output", "fail_on": "fail_on", "config": "config"}


def _pop(kwargs: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {field: kwargs.pop(param) for param, field in names.items()}


def output_options(func: Callable[..., Any]) -> Any:
    """Add the terminal options; the command receives ``terminal: TerminalChoices``."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        choices = TerminalChoices(**_pop(kwargs, {n: n for n in _TERMINAL_PARAMS}))
        return func(*args, terminal=choices, **kwargs)

    return _apply(_output_option_decorators(), command)


def report_options(
    func: Callable[..., Any] | None = None, *, formats: tuple[str, ...] = REPORT_FORMATS
) -> Any:
    """Add every shared report option; the command receives ``report: ReportChoices``."""

    def decorate(inner: Callable[..., Any]) -> Any:
        @functools.wraps(inner)
        def command(*args: Any, **kwargs: Any) -> Any:
            names = {**{n: n for n in _TERMINAL_PARAMS}, **_REPORT_PARAMS}
            choices = ReportChoices(**_pop(kwargs, names))
            choices.check_format()
            return inner(*args, report=choices, **kwargs)

        return _apply(_report_option_decorators(formats), command)

    return decorate(func) if func is not None else decorate


# -- progress bars ----------------------------------------------------------------------


@contextlib.contextmanager
def file_progress(enabled: bool, label: str) -> Iterator[Callable[[int, int, str], None] | None]:
    """A ``(done, total, path)`` callback drawing one bar on stderr, or None when disabled.

    The bar is created on the first callback, when the number of files is known.
    """
    if not enabled:
        yield None
        return
    bars: list[Any] = []  # click's ProgressBar type is private

    def update(done: int, total: int, path: str) -> None:
        if not bars:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
            bars.append(bar)
        bars[0].update(1)

    try:
        yield update
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)


@contextlib.contextmanager
def byte_progress(enabled: bool) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """A ``(name, so_far, total)`` callback drawing one bar per file on stderr, or None."""
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

"""``modelguard backdoor``: detect a backdoor without trigger data, name its target,
repair it, and report every number on held-out data.

Parses options, calls :func:`modelguard.backdoor.analysis.analyze_backdoor`,
draws the plot, renders the Report (plus the analysis table) and exits with the
Report's exit code. torch and onnxruntime are imported only when the command runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from modelguard.cli.options import ReportChoices, report_options
from modelguard.cli.output import call_api, fail


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data", help="Clean validation data: .npz (x, y), a folder per class, or MODULE:FUNC."
)
@click.option(
    "--factory", help="Architecture for a state_dict: MODULE:FUNCTION or FILE.py:FUNCTION."
)
@click.option("--layer", help="Layer to analyse [default: last conv, else last hidden layer].")
@click.option("--list-layers", is_flag=True, help="List the candidate layers and exit.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto uses CUDA when available.",
)
@click.option(
    "--trigger-data", help="Triggered inputs (.npz, y = true labels): check a known trigger."
)
@click.option("--target", type=int, help="The known trigger's target label (with --trigger-data).")
@click.option(
    "--test-data", help="Held-out clean data to report on [default: a held-out part of --data]."
)
@click.option(
    "--repair",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the repaired model here, in the input's format.",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "unlearn", "fine-prune", "fine-tune"]),
    default="auto",
    show_default=True,
    help="Repair: auto unlearns the triggers detection recovered (nothing when none).",
)
@click.option(
    "--fine-prune",
    "fine_prune",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Same as --repair OUT --method fine-prune.",
)
@click.option(
    "--compare",
    multiple=True,
    type=click.Choice(["unlearn", "fine-prune", "fine-tune"]),
    help="Also measure this repair method (repeatable; nothing is written for it).",
)
@click.option(
    "--max-acc-drop",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.025,
    show_default=True,
    help="Repair's accuracy guard: largest clean-accuracy drop (fraction) before backing off.",
)
@click.option(
    "--prune-budget",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.04,
    show_default=True,
    help="Fine-pruning: prune until clean accuracy drops by this fraction.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Repair fine-tuning epochs.",
)
@click.option(
    "--lr",
    "learning_rate",
    type=click.FloatRange(min=0, min_open=True),
    default=0.003,
    show_default=True,
    help="Repair fine-tuning learning rate (SGD, momentum 0.9).",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(["cosine", "constant"]),
    default="cosine",
    show_default=True,
    help="Repair fine-tuning learning-rate schedule.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Batch size for activation collection and evaluation.",
)
@click.option(
    "--profile-only",
    is_flag=True,
    help="Only the dormancy profile and held-out accuracy: no detection, no repair.",
)
@click.option(
    "--trust-pickle", is_flag=True, help="Allow a pickled full module if its static scan is clean."
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the recovered trigger (mask, pattern, stamped input) and per-class norms as PNG.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Split and tuning seed.")
@report_options
def backdoor(
    model: Path,
    data: str | None,
    factory: str | None,
    layer: str | None,
    list_layers: bool,
    device: str,
    trigger_data: str | None,
    target: int | None,
    test_data: str | None,
    repair: Path | None,
    method: str,
    fine_prune: Path | None,
    compare: tuple[str, ...],
    max_acc_drop: float,
    prune_budget: float,
    epochs: int,
    learning_rate: float,
    lr_schedule: str,
    batch_size: int,
    profile_only: bool,
    trust_pickle: bool,
    plot: Path | None,
    seed: int,
    report: ReportChoices,
) -> None:
    """Look for a backdoor in MODEL without trigger data, and repair it.

    Reverse-engineers, for every class, the smallest trigger that sends clean
    inputs there (Neural Cleanse), searches the largest margin each class
    reaches (MM-BD) and the smallest way out of every class (all-to-all), and
    combines them into one score. With --repair it unlearns the recovered
    triggers (or fine-prunes / fine-tunes with --method) and reports fine-tuning
    alone beside it. Every accuracy and attack success rate is measured on
    held-out inputs. Exit status: 0 nothing at or above --fail-on, 1 findings
    at or above it, 2 usage error or unreadable input.
    """
    from modelguard.backdoor import analysis as api

    threshold = report.policy().fail_on
    if list_layers:
        layers = call_api(
            lambda: api.list_layers(model, factory=factory, trust_pickle=trust_pickle)
        )
        default = call_api(lambda: api.default_layer(layers)) if layers else None
        for info in layers:
            mark = "  (default)" if default is not None and info.name == default.name else ""
            click.echo(f"{info.name}\t{info.kind}\t{info.channels} channels{mark}")
        return
    if data is None:
        fail("--data is required (clean validation data), unless --list-layers")
    if fine_prune is not None:
        if repair is not None:
            fail("--fine-prune OUT is --repair OUT --method fine-prune: give one of them")
        repair, method = fine_prune, "fine-prune"
    settings = api.AnalysisSettings(
        factory=factory,
        layer=layer,
        device=device,
        trigger_data=trigger_data,
        target=target,
        test_data=test_data,
        detect=not profile_only,
        repair=repair,
        method=method,
        compare=compare,
        epochs=epochs,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
        max_acc_drop=max_acc_drop,
        prune_budget=prune_budget,
        batch_size=batch_size,
        trust_pickle=trust_pickle,
        fail_on=threshold,
        seed=seed,
        full_curve=plot is not None,
    )
    with reverse_progress(report.show_progress()) as progress:
        analysis = call_api(lambda: api.analyze_backdoor(model, data, settings, progress=progress))
    if plot is not None:
        from modelguard.backdoor.plot import plot_analysis

        call_api(lambda: plot_analysis(analysis, plot))
    # The table goes with a text report; machine-readable output stays parseable.
    table_to_stderr = report.fmt != "text" and report.to_stdout()
    click.echo(analysis.table(), err=table_to_stderr)
    # The analysis is shown in full (info findings too), as it always was.
    replace(report, verbose=True).emit(analysis.report, threshold)
    sys.exit(analysis.report.exit_code(threshold))


@contextlib.contextmanager
def reverse_progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A bar on stderr for trigger reverse engineering (terminals only)."""
    if not enabled:
        yield None
        return
    bars: list[Any] = []  # click's ProgressBar type is private
    done = [0]

    def update(step: int, total: int) -> None:
        if not bars:
            bar = click.progressbar(
                length=total, label="reverse-engineering triggers", file=sys.stderr
            )
            bar.__enter__()
            bars.append(bar)
        bars[0].update(step - done[0])
        done[0] = step

    try:
        yield update
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)


COMMANDS = [backdoor]

"""``modelguard backdoor``: dormant neurons, pruning and fine-pruning.

Parses options, calls :func:`modelguard.backdoor.api.analyze_backdoor`, renders
the Report (plus the defence table) and exits with the Report's exit code.
torch and onnxruntime are imported only inside the API, when the command runs.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

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
@click.option("--trigger-data", help="Triggered inputs (.npz, y = true labels) to measure ASR.")
@click.option("--target", type=int, help="The attack's target label (with --trigger-data).")
@click.option("--test-data", help="Clean data to report accuracy on [default: --data].")
@click.option(
    "--fine-prune",
    "fine_prune",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the fine-pruned model here, in the input's format.",
)
@click.option(
    "--max-acc-drop",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.04,
    show_default=True,
    help="Pruning budget: clean-accuracy drop as a fraction (0.04 = 4 points).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Fine-tuning epochs (0: no fine-tuning).",
)
@click.option(
    "--lr",
    "learning_rate",
    type=click.FloatRange(min=0, min_open=True),
    default=0.01,
    show_default=True,
    help="Fine-tuning learning rate (SGD, momentum 0.9).",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(["cosine", "constant"]),
    default="cosine",
    show_default=True,
    help="Fine-tuning learning-rate schedule.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Batch size for activation collection and evaluation.",
)
@click.option(
    "--profile-only", is_flag=True, help="Only the dormancy profile: no pruning or tuning."
)
@click.option(
    "--trust-pickle", is_flag=True, help="Allow a pickled full module if its static scan is clean."
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the pruning curve (accuracy, ASR vs fraction pruned) as PNG.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Fine-tuning seed.")
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
    fine_prune: Path | None,
    max_acc_drop: float,
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
    """Look for backdoors in MODEL: dormant channels, pruning, fine-pruning.

    Profiles the mean clean activation of the last convolutional layer's
    channels, prunes them in increasing order of activation until clean accuracy
    drops by --max-acc-drop, and fine-tunes on clean data (Liu, Dolan-Gavitt &
    Garg, RAID 2018). With --trigger-data and --target it measures the attack
    success rate before and after each defence. Exit status: 0 clean, 1
    findings at or above --fail-on, 2 usage error or unreadable input.
    """
    from modelguard.backdoor import api

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
    analysis = call_api(
        lambda: api.analyze_backdoor(
            model,
            data,
            factory=factory,
            layer=layer,
            device=device,
            trigger_data=trigger_data,
            target=target,
            test_data=test_data,
            fine_prune=fine_prune,
            max_acc_drop=max_acc_drop,
            epochs=epochs,
            learning_rate=learning_rate,
            lr_schedule=lr_schedule,
            batch_size=batch_size,
            defences=not profile_only,
            trust_pickle=trust_pickle,
            fail_on=threshold,
            plot=plot,
            seed=seed,
        )
    )
    # The table goes with a text report; machine-readable output stays parseable.
    table_to_stderr = report.fmt != "text" and report.to_stdout()
    click.echo(analysis.table(), err=table_to_stderr)
    # The analysis is shown in full (info findings too), as it always was.
    replace(report, verbose=True).emit(analysis.report, threshold)
    sys.exit(analysis.report.exit_code(threshold))

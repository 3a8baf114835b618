"""``analyze_backdoor``: dormant neurons, pruning and fine-pruning as Findings.

Reproduces the defence of Liu, Dolan-Gavitt & Garg, "Fine-Pruning: Defending
Against Backdooring Attacks on Deep Neural Networks" (RAID 2018): profile the
mean clean activation of the last convolutional layer's channels, prune them in
increasing order of activation until clean accuracy has dropped by the budget,
then fine-tune on clean data. Results land in the same :class:`Report` as every
other check, plus a :class:`BackdoorAnalysis` with the numbers behind them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelguard.backdoor.activations import ChannelProfile, collect_profile
from modelguard.backdoor.data import Dataset, load_data
from modelguard.backdoor.loaders import load_model
from modelguard.backdoor.model import LR_SCHEDULES, AnalysedModel, FineTuneSettings, LayerInfo
from modelguard.backdoor.prune import (
    PruningResult,
    Trigger,
    accuracy,
    attack_success,
    fine_tune,
    pruning_curve,
)
from modelguard.backdoor.score import DORMANCY_THRESHOLD, dormancy_score
from modelguard.errors import BackdoorAnalysisError, UsageError
from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.rules import backdoor as R

TRIGGER_EFFECTIVE_ASR = 0.5  # above this, the given trigger works as a backdoor
RESIDUAL_ASR = 0.2  # a repair that leaves more than this has not disabled the backdoor

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DefenceRow:
    """Clean accuracy and attack success after one defence (None: not measured)."""

    defence: str  # "none", "fine-tuning", "pruning", "fine-pruning"
    accuracy: float | None
    attack_success: float | None
    note: str = ""


@dataclass(frozen=True)
class BackdoorAnalysis:
    report: Report
    model: str
    format: str
    layer: str
    device: str
    profile: ChannelProfile
    score: float
    pruning: PruningResult | None
    rows: tuple[DefenceRow, ...]
    repaired: str | None = None
    layers: tuple[LayerInfo, ...] = field(default=())

    def row(self, defence: str) -> DefenceRow:
        return next(r for r in self.rows if r.defence == defence)

    def table(self) -> str:
        """The paper's Table-1 row for this model: clean accuracy / attack success."""

        def pct(value: float | None) -> str:
            return "   n/a" if value is None else f"{100 * value:6.2f}"

        lines = [
            f"backdoor analysis of {self.model} ({self.format}, layer {self.layer}, "
            f"{self.profile.channels} channels, {self.device})",
            f"  dormancy score {self.score:.3f}; "
            f"{int(self.profile.dormant().sum())} dormant channels; "
            f"activations: {self.profile.samples} samples in {self.profile.seconds:.3f}s "
            f"({self.profile.samples_per_second:.0f}/s)",
        ]
        if self.pruning is not None:
            lines.append(
                f"  pruned {self.pruning.chosen}/{self.pruning.channels} channels "
                f"({100 * self.pruning.chosen / self.pruning.channels:.1f}%) within the budget"
            )
        lines.append(f"  {'defence':<14}{'clean acc %':>12}{'ASR %':>9}  note")
        for r in self.rows:
            lines.append(
                f"  {r.defence:<14}{pct(r.accuracy):>12}{pct(r.attack_success):>9}  {r.note}"
            )
        return "\n".join(lines)


def default_layer(layers: list[LayerInfo]) -> LayerInfo:
    """The last convolutional layer, else the last hidden (not output) linear layer."""
    convs = [info for info in layers if info.kind == "conv"]
    if convs:
        return convs[-1]
    linears = [info for info in layers if info.kind == "linear"]
    if len(linears) >= 2:
        return linears[-2]
    raise BackdoorAnalysisError(
        "the model has no convolutional or hidden linear layer to analyse; name one with --layer"
    )


def list_layers(
    model: PathLike,
    *,
    factory: str | None = None,
    trust_pickle: bool = False,
    device: str = "cpu",
) -> list[LayerInfo]:
    """Candidate layers in execution order; the default one is :func:`default_layer`."""
    return load_model(
        Path(model), device=device, factory=factory, trust_pickle=trust_pickle
    ).layers()


def analyze_backdoor(
    model: PathLike,
    data: PathLike,
    *,
    factory: str | None = None,
    layer: str | None = None,
    device: str = "auto",
    trigger_data: PathLike | None = None,
    target: int | None = None,
    test_data: PathLike | None = None,
    fine_prune: PathLike | None = None,
    max_acc_drop: float = 0.04,
    epochs: int = 10,
    learning_rate: float = 0.01,
    lr_schedule: str = "cosine",
    batch_size: int = 256,
    fine_tune_batch_size: int = 32,
    defences: bool = True,
    trust_pickle: bool = False,
    fail_on: Severity | None = Severity.HIGH,
    plot: PathLike | None = None,
    seed: int = 0,
) -> BackdoorAnalysis:
    """Profile dormant channels, and prune / fine-tune / fine-prune the model.

    Args:
        model: TorchScript archive, torch.export program (.pt2), state_dict
            (.safetensors, or .pt read with ``weights_only=True``) with ``factory``,
            or ONNX.
        data: the defender's clean data (.npz with ``x``/``y``, a folder of
            class folders, or ``module:function``); used for the activation
            profile, pruning and fine-tuning.
        factory: ``module:function`` (or ``file.py:function``) building the
            architecture of a state_dict, from your own code.
        layer: layer to analyse (default: last convolution, else last hidden layer).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        trigger_data, target: triggered inputs (true labels in ``y``) and the
            attack's target label; with them the attack success rate is measured.
        test_data: clean data for reporting accuracy (default: ``data``).
        fine_prune: write the fine-pruned model here (input's format).
        max_acc_drop: pruning budget, a fraction (0.04 = 4 percentage points).
        epochs, learning_rate, fine_tune_batch_size: fine-tuning (SGD, momentum 0.9).
        lr_schedule: ``cosine`` (anneal to zero over the run) or ``constant``.
        defences: run pruning, fine-tuning and fine-pruning (else profile only).
        trust_pickle: allow a pickled full module when its static scan is clean.
        fail_on: threshold for that static scan.
        plot: write the pruning curve as a PNG (needs matplotlib).

    Raises:
        UsageError, BackdoorAnalysisError, MissingExtra.
    """
    if not 0 <= max_acc_drop < 1:
        raise UsageError(f"--max-acc-drop {max_acc_drop}: expected a fraction in [0, 1)")
    if (trigger_data is None) != (target is None):
        raise UsageError("--trigger-data and --target go together")
    if epochs < 0 or batch_size < 1 or fine_tune_batch_size < 1:
        raise UsageError("epochs must be >= 0 and batch sizes >= 1")
    if lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"learning-rate schedule {lr_schedule!r}: expected one of {LR_SCHEDULES}")
    model_path = Path(model)
    loaded = load_model(
        model_path, device=device, factory=factory, trust_pickle=trust_pickle, fail_on=fail_on
    )
    layers = loaded.layers()
    chosen_layer = _pick_layer(layers, layer)
    clean = load_data(data)
    evaluation = load_data(test_data) if test_data is not None else clean
    trigger = (
        Trigger(load_data(trigger_data), target)
        if trigger_data is not None and target is not None
        else None
    )
    _seed(seed)

    profile = _profile(loaded, chosen_layer.name, clean, batch_size)
    score = dormancy_score(profile, loaded.filter_norms(chosen_layer.name))

    base_asr = None if trigger is None else attack_success(loaded, trigger, batch_size)
    rows = [DefenceRow("none", accuracy(loaded, evaluation, batch_size), base_asr)]
    pruning: PruningResult | None = None
    repaired: str | None = None
    repaired_format: str | None = None
    if defences:
        settings = FineTuneSettings(epochs, learning_rate, fine_tune_batch_size, seed, lr_schedule)
        pruning = pruning_curve(
            loaded,
            chosen_layer.name,
            profile.pruning_order(),
            clean,
            trigger,
            max_acc_drop,
            batch_size,
            full_curve=plot is not None,
        )
        original = loaded.snapshot()
        mask = pruning.mask()
        can_train = loaded.can_fine_tune and epochs > 0
        why_not = (
            ""
            if can_train
            else ("epochs=0" if loaded.can_fine_tune else "not available for ONNX (no training)")
        )
        # fine-tuning only
        if can_train:
            _seed(seed)
            fine_tune(loaded, clean, chosen_layer.name, np.zeros_like(mask), settings)
            rows.append(_measure(loaded, "fine-tuning", evaluation, trigger, batch_size))
            loaded.restore(original)
        else:
            rows.append(DefenceRow("fine-tuning", None, None, why_not))
        # pruning only
        loaded.prune(chosen_layer.name, mask)
        rows.append(
            _measure(
                loaded,
                "pruning",
                evaluation,
                trigger,
                batch_size,
                f"{pruning.chosen}/{pruning.channels} channels",
            )
        )
        # fine-pruning
        if can_train:
            _seed(seed)
            fine_tune(loaded, clean, chosen_layer.name, mask, settings)
            rows.append(_measure(loaded, "fine-pruning", evaluation, trigger, batch_size))
        else:
            rows.append(DefenceRow("fine-pruning", None, None, why_not))
        if fine_prune is not None:
            repaired = str(fine_prune)
            repaired_format = _save(loaded, Path(fine_prune))
        loaded.restore(original)
    elif fine_prune is not None:
        raise UsageError("--fine-prune needs the defences to run")

    analysis_rows = tuple(rows)
    findings = _findings(
        model_path,
        chosen_layer,
        profile,
        score,
        pruning,
        analysis_rows,
        repaired,
        repaired_format,
        trigger,
    )
    report = Report(
        artifacts=(
            ArtifactResult(
                path=str(model),
                format=loaded.format,
                size=model_path.stat().st_size,
                findings=tuple(findings),
            ),
        )
    )
    analysis = BackdoorAnalysis(
        report=report,
        model=str(model),
        format=loaded.format,
        layer=chosen_layer.name,
        device=loaded.device,
        profile=profile,
        score=score,
        pruning=pruning,
        rows=analysis_rows,
        repaired=repaired,
        layers=tuple(layers),
    )
    if plot is not None:
        from modelguard.backdoor.plot import plot_pruning_curve

        plot_pruning_curve(analysis, Path(plot))
    return analysis


def _pick_layer(layers: list[LayerInfo], name: str | None) -> LayerInfo:
    if name is None:
        return default_layer(layers)
    for info in layers:
        if info.name == name:
            return info
    choices = ", ".join(info.name for info in layers) or "none"
    raise UsageError(f"--layer {name!r}: no such layer (candidates: {choices})")


def _seed(seed: int) -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)


def _profile(model: AnalysedModel, layer: str, data: Dataset, batch_size: int) -> ChannelProfile:
    try:
        return collect_profile(model, layer, data, batch_size)
    except RuntimeError as exc:  # torch reports a shape mismatch as RuntimeError
        raise BackdoorAnalysisError(
            f"{data.source}: inputs of shape {data.x.shape[1:]} (dtype {data.x.dtype}) do not "
            f"fit the model: {str(exc).splitlines()[0]}"
        ) from exc


def _measure(
    model: AnalysedModel,
    defence: str,
    evaluation: Dataset,
    trigger: Trigger | None,
    batch_size: int,
    note: str = "",
) -> DefenceRow:
    asr = None if trigger is None else attack_success(model, trigger, batch_size)
    return DefenceRow(defence, accuracy(model, evaluation, batch_size), asr, note)


def _save(model: AnalysedModel, path: Path) -> str:
    """Write the repaired model beside ``path`` and rename it into place: a failed
    write never leaves a half-written model (or clobbers an existing one)."""
    if not path.parent.is_dir():
        raise UsageError(f"--fine-prune {path}: folder {path.parent} does not exist")
    # The suffix is kept: the writer picks safetensors or torch.save by it.
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    partial = Path(name)
    try:
        written = model.save(partial)
        os.replace(partial, path)
    except OSError as exc:
        raise BackdoorAnalysisError(f"{path}: cannot write the repaired model: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return written


def _findings(
    path: Path,
    layer: LayerInfo,
    profile: ChannelProfile,
    score: float,
    pruning: PruningResult | None,
    rows: tuple[DefenceRow, ...],
    repaired: str | None,
    repaired_format: str | None,
    trigger: Trigger | None,
) -> list[Finding]:
    where = Location(str(path))
    by_name = {r.defence: r for r in rows}

    def fmt(row: DefenceRow) -> str:
        acc = "n/a" if row.accuracy is None else f"{100 * row.accuracy:.1f}%"
        asr = "" if row.attack_success is None else f", ASR {100 * row.attack_success:.1f}%"
        return f"{row.defence}: acc {acc}{asr}"

    findings: list[Finding] = []
    dormant = int(profile.dormant().sum())
    pruned_text = (
        "" if pruning is None else f"; {pruning.chosen}/{pruning.channels} channels prunable"
    )
    findings.append(
        R.ANALYSIS_SUMMARY.finding(
            f"layer {layer.name}: dormancy score {score:.3f}, {dormant}/{layer.channels} "
            f"dormant channels{pruned_text}; " + "; ".join(fmt(r) for r in rows),
            where,
            evidence=f"layer={layer.name}",
        )
    )
    if score >= DORMANCY_THRESHOLD:
        findings.append(
            R.DORMANT_CHANNELS.finding(
                f"layer {layer.name}: dormancy score {score:.3f} (threshold "
                f"{DORMANCY_THRESHOLD}): channels clean data leaves quiet carry strong filters",
                where,
                evidence=f"layer={layer.name}",
            )
        )
    base = by_name["none"]
    if (
        trigger is not None
        and base.attack_success is not None
        and base.attack_success >= TRIGGER_EFFECTIVE_ASR
    ):
        findings.append(
            R.TRIGGER_EFFECTIVE.finding(
                f"{100 * base.attack_success:.1f}% of triggered inputs are labelled "
                f"{trigger.target} (trigger data {trigger.data.source})",
                where,
                evidence=f"target={trigger.target}",
            )
        )
        repaired_row = by_name.get("fine-pruning")
        if repaired_row is not None and repaired_row.attack_success is None:
            repaired_row = by_name.get("pruning")
        if (
            repaired_row is not None
            and repaired_row.attack_success is not None
            and repaired_row.attack_success >= RESIDUAL_ASR
        ):
            findings.append(
                R.BACKDOOR_SURVIVES.finding(
                    f"after {repaired_row.defence} the attack still succeeds on "
                    f"{100 * repaired_row.attack_success:.1f}% of triggered inputs",
                    where,
                    evidence=f"target={trigger.target}",
                )
            )
    if repaired is not None:
        last = by_name.get("fine-pruning")
        done = "fine-pruned" if last is not None and last.accuracy is not None else "pruned"
        findings.append(
            R.REPAIRED_MODEL_WRITTEN.finding(
                f"{done} model written to {repaired} ({repaired_format})",
                where,
                evidence=f"out={repaired}",
            )
        )
    return findings

"""``analyze_backdoor``: detect a backdoor without trigger data, name its target,
repair it, and measure everything on held-out data. Orchestration only:

- the data split: :mod:`split`; detection: :mod:`detection` (Neural Cleanse,
  the maximum-margin and untargeted statistics); repairs: :mod:`defences`;
- findings: :mod:`findings_of`; the returned numbers: :mod:`result`.

The dormancy profile of Liu et al. (``activations``, ``score``) is still
computed and reported as information; it is not a detector.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelguard.backdoor.activations import ChannelProfile, collect_profile
from modelguard.backdoor.data import Dataset, load_data
from modelguard.backdoor.defences import (
    METHODS,
    RepairOutcome,
    RepairSettings,
    fine_prune,
    fine_tune_only,
    rereverser,
    unlearn,
)
from modelguard.backdoor.detection import Detection, DetectionSettings, detect, rechecker
from modelguard.backdoor.findings_of import build_findings
from modelguard.backdoor.loaders import load_model
from modelguard.backdoor.model import (
    LR_SCHEDULES,
    AnalysedModel,
    FineTuneSettings,
    FloatArray,
    LayerInfo,
)
from modelguard.backdoor.prune import PruningResult, Trigger, accuracy, attack_success
from modelguard.backdoor.result import BackdoorAnalysis, DefenceRow
from modelguard.backdoor.reverse import Progress, RecoveredTrigger
from modelguard.backdoor.score import dormancy_score
from modelguard.backdoor.split import DataSplit, split_data
from modelguard.errors import BackdoorAnalysisError, UsageError
from modelguard.findings import ArtifactResult, Report, Severity

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class AnalysisSettings:
    """Everything that changes what an analysis does (frozen, so it can be shared)."""

    factory: str | None = None  # MODULE:FUNCTION building a state_dict's architecture
    layer: str | None = None  # analysed layer (default: last conv, else last hidden)
    device: str = "auto"  # auto (CUDA when present), cpu, cuda
    trigger_data: PathLike | None = None  # optional check of a known trigger ...
    target: int | None = None  # ... and its target label
    test_data: PathLike | None = None  # held-out clean data (else a part of ``data``)
    detect: bool = True  # reverse-engineer triggers (else profile and repairs only)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    repair: PathLike | None = None  # write the repaired model here (input's format)
    method: str = "auto"  # auto, unlearn, fine-prune, fine-tune
    compare: tuple[str, ...] = ()  # further methods to measure (not written)
    control: bool = True  # measure fine-tuning alone beside a repair
    epochs: int = 10
    learning_rate: float = 0.003
    lr_schedule: str = "cosine"
    fine_tune_batch_size: int = 32
    max_acc_drop: float = 0.025  # the repair's accuracy guard (fraction)
    prune_budget: float = 0.04  # fine-pruning's pruning budget (Liu et al.)
    held_out_fraction: float = 0.3
    guard_fraction: float = 0.2  # of the part that is not held out
    batch_size: int = 256  # evaluation and activation batches
    trust_pickle: bool = False
    fail_on: Severity | None = Severity.HIGH  # the static scan's bar for trust_pickle
    seed: int = 0
    full_curve: bool = False  # continue fine-pruning's curve to 100% (for a plot)


def settings_from(
    options: dict[str, Any], base: AnalysisSettings | None = None
) -> AnalysisSettings:
    """``base`` (default: the defaults) with keyword options, the pre-detection names
    accepted: ``fine_prune=OUT`` is ``repair=OUT, method="fine-prune"``;
    ``defences=False`` means profile only."""
    options = dict(options)
    fine_pruned = options.pop("fine_prune", None)
    if fine_pruned is not None:
        options.setdefault("repair", fine_pruned)
        options.setdefault("method", "fine-prune")
    if options.pop("defences", True) is False:
        options.setdefault("detect", False)
    known = {f.name for f in fields(AnalysisSettings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"analyze_backdoor: unknown option(s) {', '.join(unknown)}")
    return replace(base, **options) if base is not None else AnalysisSettings(**options)


def _validate(settings: AnalysisSettings) -> None:
    if not 0 <= settings.max_acc_drop < 1:
        raise UsageError(f"max_acc_drop {settings.max_acc_drop}: expected a fraction in [0, 1)")
    if not 0 <= settings.prune_budget < 1:
        raise UsageError(f"prune_budget {settings.prune_budget}: expected a fraction in [0, 1)")
    if not 0 < settings.held_out_fraction < 1 or not 0 < settings.guard_fraction < 1:
        raise UsageError("held_out_fraction and guard_fraction: expected fractions in (0, 1)")
    if (settings.trigger_data is None) != (settings.target is None):
        raise UsageError("trigger_data and target go together")
    if settings.epochs < 0 or settings.batch_size < 1 or settings.fine_tune_batch_size < 1:
        raise UsageError("epochs must be >= 0 and batch sizes >= 1")
    if settings.lr_schedule not in LR_SCHEDULES:
        raise UsageError(
            f"lr_schedule {settings.lr_schedule!r}: expected one of {', '.join(LR_SCHEDULES)}"
        )
    for method in (settings.method, *settings.compare):
        if method not in METHODS:
            raise UsageError(f"method {method!r}: expected one of {', '.join(METHODS)}")


def default_layer(layers: list[LayerInfo]) -> LayerInfo:
    """The last convolutional layer, else the last hidden (not output) linear layer."""
    convs = [info for info in layers if info.kind == "conv"]
    if convs:
        return convs[-1]
    linears = [info for info in layers if info.kind == "linear"]
    if len(linears) >= 2:
        return linears[-2]
    raise BackdoorAnalysisError(
        "the model has no convolutional or hidden linear layer to analyse; name one as layer"
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
    settings: AnalysisSettings | None = None,
    *,
    progress: Progress | None = None,
    **options: Any,
) -> BackdoorAnalysis:
    """Detect, name and (with ``repair``) remove a backdoor; measure on held-out data.

    Args:
        model: TorchScript archive, torch.export program (.pt2), state_dict
            (.safetensors, or .pt read with ``weights_only=True``) with ``factory``,
            or ONNX.
        data: the defender's clean data (.npz with ``x``/``y``, a folder of class
            folders, or ``module:function``), split into tuning, guard and
            held-out parts.
        settings: an :class:`AnalysisSettings`; or give its fields as keyword
            ``options`` (``fine_prune=OUT`` and ``defences=False`` still work).
        progress: called with (step, total) during trigger reverse engineering.

    Raises:
        UsageError, BackdoorAnalysisError, MissingExtra.
    """
    settings = settings_from(options, settings)
    _validate(settings)
    started = time.perf_counter()
    cpu_started = time.process_time()
    model_path = Path(model)
    if settings.repair is not None and not Path(settings.repair).parent.is_dir():
        raise UsageError(
            f"repair output {settings.repair}: folder {Path(settings.repair).parent} does not exist"
        )
    loaded = load_model(
        model_path,
        device=settings.device,
        factory=settings.factory,
        trust_pickle=settings.trust_pickle,
        fail_on=settings.fail_on,
    )
    layers = loaded.layers()
    chosen_layer = _pick_layer(layers, settings.layer)
    clean = load_data(data)
    test = load_data(settings.test_data) if settings.test_data is not None else None
    trigger = (
        Trigger(load_data(settings.trigger_data), settings.target)
        if settings.trigger_data is not None and settings.target is not None
        else None
    )
    parts = split_data(
        clean,
        held_out_fraction=settings.held_out_fraction,
        guard_fraction=settings.guard_fraction,
        seed=settings.seed,
        test=test,
    )
    _seed(settings.seed)
    profile = _profile(loaded, chosen_layer.name, parts.tune, settings.batch_size)
    classes = _classes(loaded, parts.tune)
    dormancy = dormancy_score(profile, loaded.filter_norms(chosen_layer.name))

    detection: Detection | None = None
    held_out_flip: tuple[float, ...] = ()
    if settings.detect:
        detection = _detect(loaded, parts.tune, classes, settings, progress)
        held_out_flip = tuple(
            _flip_rate(loaded, t, parts.held_out, settings.batch_size) for t in detection.triggers
        )
    suspects = _suspect_triggers(detection)
    rows = [_measure(loaded, "none", parts, trigger, suspects, settings.batch_size)]

    method = _resolve_method(settings, detection)
    to_run = _methods_to_run(settings, method)
    repaired: str | None = None
    repaired_format: str | None = None
    pruning: PruningResult | None = None
    if to_run:
        original = loaded.snapshot()
        for name in to_run:
            _seed(settings.seed)
            outcome = _run_repair(
                name,
                loaded,
                chosen_layer.name,
                profile,
                parts,
                detection,
                settings,
                full_curve=settings.full_curve,
            )
            if outcome.pruning is not None:
                pruning = outcome.pruning
            rows.append(
                _measure(
                    loaded,
                    name,
                    parts,
                    trigger,
                    suspects,
                    settings.batch_size,
                    outcome.note,
                    outcome,
                )
            )
            # a repair the guard refused left the model as it came: nothing to write
            if name == method and settings.repair is not None and not outcome.refused:
                repaired = str(settings.repair)
                repaired_format = _save(loaded, Path(settings.repair))
            loaded.restore(original)

    findings = build_findings(
        path=model_path,
        layer=chosen_layer,
        profile=profile,
        dormancy=dormancy,
        detection=detection,
        rows=tuple(rows),
        method=method,
        requested=settings.method,
        repair_asked=settings.repair is not None,
        repaired=repaired,
        repaired_format=repaired_format,
        trigger=trigger,
        held_out_count=len(parts.held_out),
        can_train=loaded.can_fine_tune,
    )
    analysis = BackdoorAnalysis(
        report=Report(),
        model=str(model),
        format=loaded.format,
        layer=chosen_layer.name,
        device=loaded.device,
        profile=profile,
        score=dormancy,
        pruning=pruning,
        rows=tuple(rows),
        repaired=repaired,
        repair_method=method,
        layers=tuple(layers),
        detection=detection,
        held_out_flip=held_out_flip,
        held_out_count=len(parts.held_out),
        held_out_source=parts.held_out.source,
        trigger_count=0 if trigger is None else len(trigger.data),
        held_out_example=_example(parts.held_out, detection),
        tuning_count=len(parts.tune),
        guard_count=len(parts.guard),
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
    )
    report = Report(
        artifacts=(
            ArtifactResult(
                path=str(model),
                format=loaded.format,
                size=model_path.stat().st_size,
                findings=tuple(findings),
                backdoor=analysis.json_block(),
            ),
        )
    )
    return replace(analysis, report=report)


def _pick_layer(layers: list[LayerInfo], name: str | None) -> LayerInfo:
    if name is None:
        return default_layer(layers)
    for info in layers:
        if info.name == name:
            return info
    choices = ", ".join(info.name for info in layers) or "none"
    raise UsageError(f"layer {name!r}: no such layer (candidates: {choices})")


def _seed(seed: int) -> None:
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


def _classes(model: AnalysedModel, data: Dataset) -> int:
    logits, _ = model.run(data.x[:1], None)
    return int(logits.shape[1])


def _detect(
    model: AnalysedModel,
    tune: Dataset,
    classes: int,
    settings: AnalysisSettings,
    progress: Progress | None,
) -> Detection:
    forward = model.differentiable()
    detection_settings = _seeded(settings)
    try:
        return detect(forward, tune.x, tune.y, classes, detection_settings, model.device, progress)
    except ValueError as exc:
        raise BackdoorAnalysisError(f"{tune.source}: {exc}") from exc


def _seeded(settings: AnalysisSettings) -> DetectionSettings:
    """The detection settings with the analysis's seed (detection and its re-run)."""
    return replace(
        settings.detection,
        reverse=replace(settings.detection.reverse, seed=settings.seed),
        margins=replace(settings.detection.margins, seed=settings.seed),
    )


def _example(held_out: Dataset, detection: Detection | None) -> FloatArray:
    """A held-out input from another class than the most suspicious one (for the plot)."""
    index = 0
    if detection is not None and detection.classes:
        suspect = max(detection.classes, key=lambda c: c.score).label
        others = np.flatnonzero(held_out.y != suspect)
        index = int(others[0]) if len(others) else 0
    return np.asarray(held_out.x[index], dtype=np.float32)


def _flip_rate(
    model: AnalysedModel, trigger: RecoveredTrigger, data: Dataset, batch_size: int
) -> float:
    """Share of held-out inputs the recovered trigger moves (to its target, or off its source)."""
    if trigger.targeted:
        keep = data.y != trigger.label
    else:
        keep = np.ones(len(data.y), bool) if trigger.universal else data.y == trigger.label
    if not np.any(keep):
        return 0.0
    hits = 0
    stamped = Dataset(trigger.stamp(data.x[keep]), data.y[keep], data.source)
    for bx, by in stamped.batches(batch_size):
        pred = model.run(bx, None)[0].argmax(axis=1)
        hits += int((pred == trigger.label).sum() if trigger.targeted else (pred != by).sum())
    return hits / int(keep.sum())


def _suspect_triggers(detection: Detection | None) -> list[RecoveredTrigger]:
    if detection is None or not detection.detected:
        return []
    return [t for t in detection.triggers if t.label in detection.targets]


def _measure(
    model: AnalysedModel,
    defence: str,
    parts: DataSplit,
    trigger: Trigger | None,
    suspects: list[RecoveredTrigger],
    batch_size: int,
    note: str = "",
    outcome: RepairOutcome | None = None,
) -> DefenceRow:
    asr = None if trigger is None else attack_success(model, trigger, batch_size)
    flip = (
        max(_flip_rate(model, t, parts.held_out, batch_size) for t in suspects)
        if suspects
        else None
    )
    return DefenceRow(
        defence, accuracy(model, parts.held_out, batch_size), asr, flip, note, outcome
    )


def _resolve_method(settings: AnalysisSettings, detection: Detection | None) -> str | None:
    """The repair to apply: ``auto`` unlearns what detection found, else nothing."""
    if settings.method != "auto":
        return settings.method
    if detection is not None and detection.detected:
        return "unlearn"
    return None


def _methods_to_run(settings: AnalysisSettings, method: str | None) -> list[str]:
    wanted: list[str] = []
    if settings.repair is not None and method is not None:
        wanted.append(method)
    for extra in settings.compare:
        resolved = "unlearn" if extra == "auto" else extra
        if resolved not in wanted:
            wanted.append(resolved)
    if wanted and settings.control and "fine-tune" not in wanted:
        wanted.append("fine-tune")
    return wanted


def _run_repair(
    name: str,
    model: AnalysedModel,
    layer: str,
    profile: ChannelProfile,
    parts: DataSplit,
    detection: Detection | None,
    settings: AnalysisSettings,
    *,
    full_curve: bool,
) -> RepairOutcome:
    tuning = FineTuneSettings(
        settings.epochs,
        settings.learning_rate,
        settings.fine_tune_batch_size,
        settings.seed,
        settings.lr_schedule,
    )
    repair = RepairSettings(
        tuning, max_acc_drop=settings.max_acc_drop, prune_budget=settings.prune_budget
    )
    if not model.can_fine_tune and name != "fine-prune":
        raise BackdoorAnalysisError(
            f"repair method {name!r} needs training, which this model's format cannot do"
        )
    if name == "fine-prune":
        if not model.can_fine_tune:
            repair = replace(repair, tuning=replace(tuning, epochs=0))
        return fine_prune(
            model,
            layer,
            profile,
            parts.tune,
            parts.guard,
            repair,
            settings.batch_size,
            full_curve=full_curve,
        )
    if name == "fine-tune":
        return fine_tune_only(model, parts.tune, parts.guard, repair, settings.batch_size)
    triggers = _unlearn_triggers(detection)
    assert detection is not None  # _unlearn_triggers refused otherwise
    again = rereverser(
        parts.tune, replace(settings.detection.reverse, seed=settings.seed), model.device
    )
    recheck = rechecker(
        parts.tune.x, parts.tune.y, len(detection.classes), _seeded(settings), model.device
    )
    return unlearn(
        model,
        parts.tune,
        parts.guard,
        triggers,
        repair,
        settings.batch_size,
        rereverse=again,
        recheck=recheck,
    )


def _unlearn_triggers(detection: Detection | None) -> list[RecoveredTrigger]:
    """The suspects' triggers; with nothing detected (an explicit ``unlearn``) every class's."""
    if detection is None:
        raise UsageError("method 'unlearn' needs detection (detect=True): it stamps its triggers")
    if detection.detected:
        return detection.repair_triggers()
    return list(detection.triggers) + list(detection.untargeted_triggers)


def _save(model: AnalysedModel, path: Path) -> str:
    """Write the repaired model beside ``path`` and rename it into place: a failed
    write never leaves a half-written model (or clobbers an existing one)."""
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

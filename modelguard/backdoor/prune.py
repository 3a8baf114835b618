"""Pruning curve and fine-pruning (Liu, Dolan-Gavitt & Garg, RAID 2018, Sec. 4).

Channels of the analysed layer are pruned (zeroed) one by one in increasing
order of mean clean activation; after each step clean accuracy (and, with
trigger data, the attack success rate) is measured on the defender's clean
data. Pruning stops at the last step whose accuracy drop stays within the
budget (default 4 percentage points, the paper's threshold). Fine-pruning then
fine-tunes the pruned model on the same clean data, keeping pruned channels at
zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from modelguard.backdoor.data import Dataset
from modelguard.backdoor.model import AnalysedModel, BoolArray, FineTuneSettings

MAX_CURVE_POINTS = 256  # prune several channels per step in very wide layers


@dataclass(frozen=True)
class CurvePoint:
    pruned: int  # channels pruned so far
    fraction: float
    accuracy: float  # on the defender's clean data
    attack_success: float | None  # on trigger data, when given


@dataclass(frozen=True)
class PruningResult:
    points: tuple[CurvePoint, ...]
    order: tuple[int, ...]  # channel indices by increasing mean activation
    chosen: int  # channels pruned within the budget
    channels: int

    def mask(self) -> BoolArray:
        pruned = np.zeros(self.channels, dtype=bool)
        pruned[list(self.order[: self.chosen])] = True
        return pruned


@dataclass(frozen=True)
class Trigger:
    data: Dataset
    target: int


def accuracy(model: AnalysedModel, data: Dataset, batch_size: int) -> float:
    correct = 0
    for bx, by in data.batches(batch_size):
        logits, _ = model.run(bx, None)
        correct += int((logits.argmax(axis=1) == by).sum())
    return correct / len(data)


def attack_success(model: AnalysedModel, trigger: Trigger, batch_size: int) -> float:
    """Share of triggered inputs whose true label is not the target that are labelled target."""
    hits = 0
    counted = 0
    for bx, by in trigger.data.batches(batch_size):
        keep = by != trigger.target
        if not np.any(keep):
            continue
        logits, _ = model.run(bx[keep], None)
        hits += int((logits.argmax(axis=1) == trigger.target).sum())
        counted += int(keep.sum())
    return hits / counted if counted else 0.0


def pruning_curve(
    model: AnalysedModel,
    layer: str,
    order: np.ndarray,
    clean: Dataset,
    trigger: Trigger | None,
    max_acc_drop: float,
    batch_size: int,
    full_curve: bool = False,
) -> PruningResult:
    """Prune in ``order`` until clean accuracy drops by more than ``max_acc_drop``.

    With ``full_curve`` the curve continues to 100% pruned (for plots); the
    chosen count is still the last one within the budget. The model is left
    unpruned (restored) on return.
    """
    channels = len(order)
    step = max(1, math.ceil(channels / MAX_CURVE_POINTS))
    original = model.snapshot()
    baseline = accuracy(model, clean, batch_size)
    points = [
        CurvePoint(
            0,
            0.0,
            baseline,
            None if trigger is None else attack_success(model, trigger, batch_size),
        )
    ]
    chosen = 0
    within_budget = True
    try:
        for count in range(step, channels + step, step):
            count = min(count, channels)
            mask = np.zeros(channels, dtype=bool)
            mask[order[:count]] = True
            model.prune(layer, mask)
            acc = accuracy(model, clean, batch_size)
            asr = None if trigger is None else attack_success(model, trigger, batch_size)
            points.append(CurvePoint(count, count / channels, acc, asr))
            if within_budget and baseline - acc <= max_acc_drop + 1e-12:
                chosen = count
            else:
                within_budget = False
                if not full_curve:
                    break
    finally:
        model.restore(original)
    return PruningResult(tuple(points), tuple(int(i) for i in order), chosen, channels)


def fine_tune(
    model: AnalysedModel,
    clean: Dataset,
    layer: str,
    pruned: BoolArray,
    settings: FineTuneSettings,
) -> None:
    """Fine-tune on clean data with ``pruned`` channels zeroed and held at zero."""
    if np.any(pruned):
        model.prune(layer, pruned)
    model.fine_tune(clean.x, clean.y, layer, pruned, settings)

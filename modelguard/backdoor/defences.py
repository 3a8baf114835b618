"""The repairs: unlearning, fine-pruning, and fine-tuning alone (the control).

- **unlearn** (Neural Cleanse §VI-C): fine-tune on the tuning split with a
  share of the training set stamped with each recovered trigger and labelled
  with its TRUE class, so the shortcut the trigger opened stops paying off. The
  clean rows are also distilled towards the original model's own predictions
  (KL), which keeps what the model does on clean inputs while the stamped rows
  move it: without that anchor, unlearning a reversed trigger that overlaps
  digit strokes cost up to 5 points of clean accuracy on the fixture family. An
  accuracy guard checks the guard split after the run; when clean accuracy fell
  by more than the budget it backs off (a gentler learning rate) and tries again.
- **fine-prune** (Liu, Dolan-Gavitt & Garg, RAID 2018): prune the analysed
  layer's channels in increasing order of clean activation within the accuracy
  budget (measured on the guard split), then fine-tune on the tuning split.
- **fine-tune**: the same fine-tuning without pruning or stamping; reported
  beside every repair so its effect is not mistaken for the repair's.

Every function leaves the model repaired in place; the caller snapshots and
restores around the runs it only measures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from modelguard.backdoor.activations import ChannelProfile
from modelguard.backdoor.data import Dataset
from modelguard.backdoor.model import AnalysedModel, FineTuneSettings
from modelguard.backdoor.prune import PruningResult, accuracy, pruning_curve
from modelguard.backdoor.reverse import RecoveredTrigger

METHODS = ("auto", "unlearn", "fine-prune", "fine-tune")


@dataclass(frozen=True)
class RepairSettings:
    tuning: FineTuneSettings
    stamp_share: float = 0.2  # of the tuning set, per trigger (capped in total)
    max_stamped: float = 1.0  # all triggers together, as a share of the tuning set
    max_acc_drop: float = 0.025  # the guard's budget (fraction)
    back_offs: int = 2  # retries, each at half the learning rate
    prune_budget: float = 0.04  # fine-pruning's budget (Liu et al.)


@dataclass(frozen=True)
class RepairOutcome:
    method: str
    attempts: int
    guard_before: float
    guard_after: float
    within_budget: bool
    learning_rate: float
    triggers: int = 0
    pruning: PruningResult | None = None

    @property
    def note(self) -> str:
        text = f"guard acc {100 * self.guard_before:.1f}% -> {100 * self.guard_after:.1f}%"
        if self.attempts > 1:
            text += f", backed off {self.attempts - 1}x to lr {self.learning_rate:g}"
        if not self.within_budget:
            text += ", over the accuracy budget"
        if self.pruning is not None:
            text += f", {self.pruning.chosen}/{self.pruning.channels} channels pruned"
        return text


def stamped_training_set(
    tune: Dataset, triggers: list[RecoveredTrigger], settings: RepairSettings, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The tuning set plus, per trigger, stamped copies of a share of it (true labels)."""
    if not triggers:
        return tune.x, tune.y
    rng = np.random.default_rng(seed)
    share = min(settings.stamp_share, settings.max_stamped / len(triggers))
    count = max(1, round(share * len(tune)))
    xs = [tune.x]
    ys = [tune.y]
    for trigger in triggers:
        pool = np.arange(len(tune))
        if not trigger.targeted:
            # an untargeted trigger moves its source class: unlearn it there
            own = np.flatnonzero(tune.y == trigger.label)
            pool = own if len(own) else pool
        pick = rng.choice(pool, count, replace=len(pool) < count)
        xs.append(trigger.stamp(tune.x[pick]))
        ys.append(tune.y[pick])
    return np.concatenate(xs), np.concatenate(ys)


def _guarded(
    model: AnalysedModel,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    guard: Dataset,
    settings: RepairSettings,
    batch_size: int,
    layer: str | None = None,
    pruned: np.ndarray | None = None,
    triggers: int = 0,
    baseline: float | None = None,
    teacher: np.ndarray | None = None,
) -> RepairOutcome:
    """Fine-tune on (x, y); back off while the guard split says the cost is too high."""
    original = model.snapshot()
    before = accuracy(model, guard, batch_size) if baseline is None else baseline
    tuning = settings.tuning
    best: tuple[float, object, float] | None = None
    attempts = 0
    for attempt in range(settings.back_offs + 1):
        attempts = attempt + 1
        if attempt:
            model.restore(original)
            tuning = replace(tuning, learning_rate=tuning.learning_rate / 2)
        model.fine_tune(x, y, layer, pruned, tuning, teacher)
        after = accuracy(model, guard, batch_size)
        if best is None or after > best[0]:
            best = (after, model.snapshot(), tuning.learning_rate)
        if before - after <= settings.max_acc_drop + 1e-12:
            return RepairOutcome(
                method, attempts, before, after, True, tuning.learning_rate, triggers
            )
    assert best is not None
    model.restore(best[1])
    return RepairOutcome(
        method,
        attempts,
        before,
        best[0],
        before - best[0] <= settings.max_acc_drop,
        best[2],
        triggers,
    )


def unlearn(
    model: AnalysedModel,
    tune: Dataset,
    guard: Dataset,
    triggers: list[RecoveredTrigger],
    settings: RepairSettings,
    batch_size: int,
) -> RepairOutcome:
    x, y = stamped_training_set(tune, triggers, settings, settings.tuning.seed)
    teacher = np.full((len(y), _classes(model, tune)), np.nan, dtype=np.float32)
    teacher[: len(tune)] = np.concatenate(
        [model.run(bx, None)[0] for bx, _ in tune.batches(batch_size)]
    )
    return _guarded(
        model, "unlearn", x, y, guard, settings, batch_size, triggers=len(triggers), teacher=teacher
    )


def _classes(model: AnalysedModel, data: Dataset) -> int:
    return int(model.run(data.x[:1], None)[0].shape[1])


def fine_tune_only(
    model: AnalysedModel, tune: Dataset, guard: Dataset, settings: RepairSettings, batch_size: int
) -> RepairOutcome:
    return _guarded(model, "fine-tune", tune.x, tune.y, guard, settings, batch_size)


def fine_prune(
    model: AnalysedModel,
    layer: str,
    profile: ChannelProfile,
    tune: Dataset,
    guard: Dataset,
    settings: RepairSettings,
    batch_size: int,
    *,
    full_curve: bool = False,
) -> RepairOutcome:
    """Prune within the budget on the guard split, then fine-tune (pruned channels held at 0)."""
    before = accuracy(model, guard, batch_size)
    pruning = pruning_curve(
        model,
        layer,
        profile.pruning_order(),
        guard,
        None,
        settings.prune_budget,
        batch_size,
        full_curve=full_curve,
    )
    mask = pruning.mask()
    model.prune(layer, mask)
    outcome = _guarded(
        model,
        "fine-prune",
        tune.x,
        tune.y,
        guard,
        settings,
        batch_size,
        layer,
        mask,
        baseline=before,
    )
    return replace(outcome, pruning=pruning)

"""Trigger reverse engineering (Wang et al., "Neural Cleanse", IEEE S&P 2019).

For every class ``t`` find the smallest mask ``m`` (H x W, in [0, 1]) and
pattern ``p`` (C x H x W, in the data's range) such that stamping
``x' = (1 - m) * x + m * p`` sends clean inputs to ``t``:
``min CE(f(x'), t) + lambda_t * |m|_1``. A backdoor's target needs a much
smaller mask than the other labels: its trigger is a shortcut.

As published: masks and patterns through tanh (so they stay in range), Adam
(lr 0.1, betas 0.5/0.9), ``lambda`` starting at 1e-3 and adjusted per class
after every epoch (x1.5 after ``patience`` epochs at >= 99% flip rate, /1.5^1.5
after ``patience`` epochs below), the best mask is the smallest one seen at
>= 99%, and a class stops early once its best norm has not improved for
``5 * patience`` epochs after lambda went both up and down. An "epoch" here is
``steps_per_epoch`` mini-batches (NC: one pass over its data).

Departures, for speed: all tasks run in ONE batch (each mini-batch stacks every
class's stamped inputs), finished tasks leave the batch, and a step budget caps
the whole run. The same engine runs *untargeted* tasks (per source class
``s``: the smallest mask sending images of ``s`` to any other label), which
:mod:`modelguard.backdoor.untargeted` turns into the all-to-all statistic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from modelguard.backdoor.model import FloatArray, IntArray

Forward = Callable[[Tensor], Tensor]
Progress = Callable[[int, int], None]

SUCCESS = 0.99  # NC's attack_succ_threshold
INIT_COST = 1e-3
COST_UP = 1.5
COST_DOWN = 1.5**1.5


@dataclass(frozen=True)
class ReverseSettings:
    batch_size: int = 16  # images per task per step
    steps_per_epoch: int = 4
    patience: int = 5  # epochs (NC)
    max_steps: int = 200  # the whole run's budget
    learning_rate: float = 0.1
    seed: int = 0
    success: float = SUCCESS  # the flip rate a mask must reach to count


UNIVERSAL = -1  # the label of an untargeted task over every class


@dataclass(frozen=True)
class Task:
    """``targeted``: send inputs to ``label``; else move inputs OF ``label`` anywhere else
    (``label`` :data:`UNIVERSAL`: move inputs of every class off their own label)."""

    label: int
    targeted: bool

    @property
    def universal(self) -> bool:
        return not self.targeted and self.label == UNIVERSAL

    def pool(self, y: IntArray) -> IntArray:
        """The inputs this task stamps."""
        if self.targeted:
            return np.flatnonzero(y != self.label)
        if self.universal:
            return np.arange(len(y))
        return np.flatnonzero(y == self.label)


@dataclass(frozen=True)
class RecoveredTrigger:
    label: int  # the target (targeted) or the source class (untargeted)
    targeted: bool
    mask: FloatArray  # (H, W)
    pattern: FloatArray  # (C, H, W)
    norm: float  # L1 norm of the mask
    flip_rate: float  # on the optimisation data, at the best mask
    reached: bool  # flip rate >= the run's success (NC: 99%) at some point
    steps: int

    @property
    def universal(self) -> bool:
        return not self.targeted and self.label == UNIVERSAL

    def stamp(self, x: FloatArray) -> FloatArray:
        return np.asarray((1 - self.mask) * x + self.mask * self.pattern, dtype=np.float32)


@dataclass(frozen=True)
class ReverseRun:
    triggers: tuple[RecoveredTrigger, ...]
    steps: int
    samples: int  # stamped inputs passed forward and backward
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time (all threads)


class _Schedule:
    """NC's per-class lambda schedule and early stop, vectorised over tasks."""

    def __init__(self, tasks: int, patience: int, success: float = SUCCESS) -> None:
        self.patience = patience
        self.success = success
        self.cost = np.full(tasks, INIT_COST)
        self.up_count = np.zeros(tasks, int)
        self.down_count = np.zeros(tasks, int)
        self.went_up = np.zeros(tasks, bool)
        self.went_down = np.zeros(tasks, bool)
        self.best = np.full(tasks, np.inf)
        self.stale = np.zeros(tasks, int)
        self.stop_best = np.full(tasks, np.inf)
        self.done = np.zeros(tasks, bool)

    def epoch(self, flip: np.ndarray, norm: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Update after an epoch; returns which tasks improved their best mask."""
        improved = active & (flip >= self.success) & (norm < self.best)
        self.best[improved] = norm[improved]
        finite = active & np.isfinite(self.best)
        self.stale[finite & (self.best >= self.stop_best)] += 1
        self.stale[finite & (self.best < self.stop_best)] = 0
        self.stop_best = np.minimum(self.stop_best, self.best)
        stop = active & self.went_up & self.went_down & (self.stale >= 5 * self.patience)
        self.done |= stop
        hit = active & (flip >= self.success)
        self.up_count[hit] += 1
        self.down_count[hit] = 0
        self.up_count[active & ~hit] = 0
        self.down_count[active & ~hit] += 1
        up = active & (self.up_count >= self.patience)
        down = active & ~up & (self.down_count >= self.patience)
        self.cost[up] *= COST_UP
        self.went_up |= up
        self.up_count[up] = 0
        self.cost[down] /= COST_DOWN
        self.went_down |= down
        self.down_count[down] = 0
        return improved


def reverse_engineer(
    forward: Forward,
    x: FloatArray,
    y: IntArray,
    tasks: list[Task],
    settings: ReverseSettings,
    device: str,
    progress: Progress | None = None,
) -> ReverseRun:
    """Run every task in one batch; ``x`` and ``y`` are the defender's tuning data."""
    start = time.perf_counter()
    cpu_start = time.process_time()
    gen = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    xt = torch.from_numpy(x).to(device)
    lo = float(x.min())
    hi = float(x.max())
    k = len(tasks)
    shape = x.shape[1:]
    channels, height, width = shape[0], shape[-2], shape[-1]
    # NC initialises mask and pattern at random; tanh-space parameters.
    init_gen = torch.Generator().manual_seed(settings.seed)
    # NC starts from uniform random masks and patterns (kept off 0 and 1 for atanh)
    mask_init = 0.001 + 0.998 * torch.rand((k, 1, height, width), generator=init_gen)
    pattern_init = 0.001 + 0.998 * torch.rand((k, channels, height, width), generator=init_gen)
    mask_param = _atanh(mask_init).to(device).requires_grad_(True)
    pattern_param = _atanh(pattern_init).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam(
        [mask_param, pattern_param], lr=settings.learning_rate, betas=(0.5, 0.9)
    )
    schedule = _Schedule(k, settings.patience, settings.success)
    labels = np.asarray([t.label for t in tasks])
    targeted = np.asarray([t.targeted for t in tasks])
    pools = [t.pool(y) for t in tasks]
    universal_t = torch.from_numpy(np.asarray([t.universal for t in tasks])).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    for t, pool in zip(tasks, pools, strict=True):
        if len(pool) == 0:
            raise ValueError(
                f"no tuning inputs for {'target' if t.targeted else 'source'} {t.label}"
            )
    best_mask = np.zeros((k, height, width), np.float32)
    best_pattern = np.zeros((k, channels, height, width), np.float32)
    best_flip = np.zeros(k)
    last_flip = np.zeros(k)
    label_t = torch.from_numpy(labels).to(device)
    targeted_t = torch.from_numpy(targeted).to(device)
    steps = 0
    samples = 0
    epoch_hits = np.zeros(k)
    epoch_seen = np.zeros(k)
    while steps < settings.max_steps and not schedule.done.all():
        active = np.flatnonzero(~schedule.done)
        picks = np.stack(
            [
                gen.choice(
                    pools[i], settings.batch_size, replace=len(pools[i]) < settings.batch_size
                )
                for i in active
            ]
        )
        batch = xt[torch.from_numpy(picks.reshape(-1)).to(device)].view(
            len(active), settings.batch_size, *shape
        )
        idx = torch.from_numpy(active).to(device)
        pick_t = torch.from_numpy(picks).to(device)
        mask = _unit(mask_param[idx])  # (a, 1, H, W)
        pattern = lo + (hi - lo) * _unit(pattern_param[idx])
        stamped = (1 - mask[:, None]) * batch + (mask * pattern)[:, None]
        logits = forward(stamped.reshape(-1, *shape)).view(len(active), settings.batch_size, -1)
        # a universal task moves every input off its own label
        task_labels = torch.where(
            universal_t[idx][:, None], yt[pick_t], label_t[idx][:, None].expand(-1, pick_t.shape[1])
        )
        log_p = torch.log_softmax(logits, dim=-1)
        own = log_p.gather(-1, task_labels[..., None]).squeeze(-1)
        # targeted: -log p(label); untargeted: -log(1 - p(label))
        away = torch.log1p(-own.exp().clamp(max=1 - 1e-6))
        is_targeted = targeted_t[idx][:, None]
        loss_ce = torch.where(is_targeted, -own, -away).mean(dim=1)
        norms = mask.flatten(1).sum(dim=1)
        cost = torch.from_numpy(schedule.cost[active]).to(device, torch.float32)
        loss = (loss_ce + cost * norms).sum()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        with torch.no_grad():
            pred = logits.argmax(-1)
            hit = torch.where(is_targeted, pred == task_labels, pred != task_labels)
            epoch_hits[active] += hit.float().sum(dim=1).cpu().numpy()
            epoch_seen[active] += settings.batch_size
        steps += 1
        samples += len(active) * settings.batch_size
        if steps % settings.steps_per_epoch == 0:
            flip = np.divide(epoch_hits, np.maximum(epoch_seen, 1))
            with torch.no_grad():
                all_mask = _unit(mask_param)
                all_norms = all_mask.flatten(1).sum(dim=1).cpu().numpy()
            on = ~schedule.done
            improved = schedule.epoch(flip, all_norms, on)
            if improved.any():
                with torch.no_grad():
                    which = torch.from_numpy(np.flatnonzero(improved)).to(device)
                    best_mask[improved] = all_mask[which, 0].cpu().numpy()
                    best_pattern[improved] = (
                        (lo + (hi - lo) * _unit(pattern_param[which])).cpu().numpy()
                    )
                best_flip[improved] = flip[improved]
            last_flip[on] = flip[on]
            epoch_hits[:] = 0
            epoch_seen[:] = 0
            if progress is not None:
                progress(steps, settings.max_steps)
    with torch.no_grad():
        final_mask = _unit(mask_param)[:, 0].cpu().numpy()
        final_pattern = (lo + (hi - lo) * _unit(pattern_param)).cpu().numpy()
    found: list[RecoveredTrigger] = []
    for i, task in enumerate(tasks):
        reached = bool(np.isfinite(schedule.best[i]))
        mask_i = best_mask[i] if reached else final_mask[i]
        pattern_i = best_pattern[i] if reached else final_pattern[i]
        found.append(
            RecoveredTrigger(
                label=task.label,
                targeted=task.targeted,
                mask=mask_i.astype(np.float32),
                pattern=pattern_i.astype(np.float32),
                norm=float(mask_i.sum()),
                flip_rate=float(best_flip[i] if reached else last_flip[i]),
                reached=reached,
                steps=steps,
            )
        )
    return ReverseRun(
        tuple(found), steps, samples, time.perf_counter() - start, time.process_time() - cpu_start
    )


def _unit(param: Tensor) -> Tensor:
    """NC's tanh parametrisation onto [0, 1]."""
    return torch.tanh(param) / (2 - 1e-7) + 0.5


def _atanh(value: Tensor) -> Tensor:
    """The tanh-space parameter of ``value`` in [0, 1] (the inverse of :func:`_unit`)."""
    return torch.atanh((value - 0.5) * (2 - 1e-7))

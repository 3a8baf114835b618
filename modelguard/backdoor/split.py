"""Honest evaluation: the defender's clean data split, per class, into parts with one
job each, deterministically (a seeded permutation within every class).

- ``tune``: what the detector reverse-engineers triggers on and what the
  repairs train on;
- ``guard``: what the repair's accuracy guard checks (never trained on);
- ``held_out``: what every reported accuracy and attack success rate is measured
  on (never trained on, never used to choose anything).

When the caller supplies separate test data, that is the held-out part and the
defender's data is split only into ``tune`` and ``guard``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelguard.backdoor.data import Dataset
from modelguard.errors import BackdoorAnalysisError


@dataclass(frozen=True)
class DataSplit:
    tune: Dataset
    guard: Dataset
    held_out: Dataset
    held_out_is_external: bool  # True: the caller's test data, not a part of --data


def _take(data: Dataset, index: np.ndarray, part: str) -> Dataset:
    index = np.sort(index)
    return Dataset(data.x[index], data.y[index], f"{data.source} ({part})")


def stratified_parts(data: Dataset, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices of ``len(fractions) + 1`` parts; part i gets ``fractions[i]`` of every
    class (rounded), the last part the rest."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(data.y):
        members = np.flatnonzero(data.y == label)
        members = members[rng.permutation(len(members))]
        start = 0
        for i, fraction in enumerate(fractions):
            count = round(fraction * len(members))
            parts[i].extend(members[start : start + count].tolist())
            start += count
        parts[-1].extend(members[start:].tolist())
    return [np.asarray(p, dtype=np.int64) for p in parts]


def split_data(
    data: Dataset,
    *,
    held_out_fraction: float,
    guard_fraction: float,
    seed: int,
    test: Dataset | None = None,
) -> DataSplit:
    """Split ``data``; ``guard_fraction`` is a share of what is not held out."""
    if test is not None:
        guard, tune = stratified_parts(data, (guard_fraction,), seed)
        held = test
        external = True
        parts = {"tune": tune, "guard": guard}
    else:
        held_idx, guard, tune = stratified_parts(
            data, (held_out_fraction, guard_fraction * (1 - held_out_fraction)), seed
        )
        parts = {"tune": tune, "guard": guard, "held-out": held_idx}
        held = _take(data, held_idx, "held-out")
        external = False
    for name, index in parts.items():
        if len(index) == 0:
            raise BackdoorAnalysisError(
                f"{data.source}: {len(data)} inputs are too few to split into tuning, guard "
                f"and held-out parts (the {name} part is empty); give more clean data"
            )
    return DataSplit(
        tune=_take(data, parts["tune"], "tuning"),
        guard=_take(data, parts["guard"], "guard"),
        held_out=held,
        held_out_is_external=external,
    )

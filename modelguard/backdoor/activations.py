"""Per-channel activation statistics of one layer over clean data.

A channel's activation is the positive part of the layer's output (what the
ReLU that follows it passes on), averaged over inputs and spatial positions:
the quantity Liu et al. rank channels by. Batched, inference mode, on the
model's device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from modelguard.backdoor.data import Dataset
from modelguard.backdoor.model import AnalysedModel, FloatArray
from modelguard.errors import BackdoorAnalysisError

DORMANT_FRACTION = 0.01  # a channel is dormant below 1% of the layer's mean activation


@dataclass(frozen=True)
class ChannelProfile:
    layer: str
    mean: FloatArray  # per channel, over the whole data set
    active_share: FloatArray  # share of inputs on which the channel fires at all
    samples: int
    seconds: float
    accuracy: float

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")

    def dormant(self) -> np.ndarray:
        """Boolean mask of channels clean data (almost) never activates."""
        scale = float(self.mean.mean()) if self.mean.size else 0.0
        return np.asarray(self.mean <= DORMANT_FRACTION * scale)

    def pruning_order(self) -> np.ndarray:
        """Channel indices by increasing mean activation (stable, so ties keep index order)."""
        return np.argsort(self.mean, kind="stable")


def channel_means(act: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-channel sum over the batch of spatial-mean activation, and of 'fired at all'."""
    positive = np.maximum(act, 0.0)
    if positive.ndim > 2:
        per_input = positive.reshape(positive.shape[0], positive.shape[1], -1)
        spatial_mean = per_input.mean(axis=2)
        fired = (per_input > 0).any(axis=2)
    else:
        spatial_mean = positive
        fired = positive > 0
    return spatial_mean.sum(axis=0), fired.sum(axis=0).astype(np.float32)


def collect_profile(
    model: AnalysedModel, layer: str, data: Dataset, batch_size: int
) -> ChannelProfile:
    """Mean activation per channel of ``layer`` over ``data`` (and clean accuracy)."""
    totals: FloatArray | None = None
    fired: FloatArray | None = None
    correct = 0
    start = time.perf_counter()
    for bx, by in data.batches(batch_size):
        logits, act = model.run(bx, layer)
        assert act is not None
        check_labels(logits, by, data.source)
        if act.ndim < 2:
            raise BackdoorAnalysisError(f"layer {layer!r} output has shape {act.shape}")
        sums, hits = channel_means(act)
        totals = sums if totals is None else totals + sums
        fired = hits if fired is None else fired + hits
        correct += int((logits.argmax(axis=1) == by).sum())
    seconds = time.perf_counter() - start
    assert totals is not None and fired is not None
    n = len(data)
    return ChannelProfile(
        layer=layer,
        mean=(totals / n).astype(np.float32),
        active_share=(fired / n).astype(np.float32),
        samples=n,
        seconds=seconds,
        accuracy=correct / n,
    )


def check_labels(logits: FloatArray, y: np.ndarray, source: str) -> None:
    if logits.ndim != 2:
        raise BackdoorAnalysisError(
            f"the model's output has shape {logits.shape}; expected (batch, classes) logits"
        )
    if y.size and int(y.max()) >= logits.shape[1]:
        raise BackdoorAnalysisError(
            f"{source}: label {int(y.max())} but the model has only {logits.shape[1]} classes"
        )

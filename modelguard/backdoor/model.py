"""The interface every loaded model offers the analysis, whatever its format.

Analysis code (activations, pruning, fine-tuning) only knows this protocol;
``torch_model.py`` and ``onnx_model.py`` implement it. Pruning a channel means
zeroing its filter and bias in the analysed layer, so the layer outputs exactly
zero there (and, after the ReLU that follows it in the networks the paper
studies, the neuron is silent) in every format alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class LayerInfo:
    """A layer the analysis can profile: its name, kind and output channels."""

    name: str
    kind: str  # "conv" or "linear"
    channels: int


LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class FineTuneSettings:
    epochs: int
    learning_rate: float
    batch_size: int
    seed: int
    # "cosine" anneals the rate to zero over the run, so the model ends at a
    # settled point rather than wherever the last constant-rate step left it.
    schedule: str = "cosine"
    # every image row moves by a random pixel (or stays) each time it is drawn: 280
    # tuning images are few enough that 10 epochs memorise them, and a stamped
    # row's trigger moves with it, so the repair unlearns its neighbourhood too
    # (holdout6, seen: clean-accuracy cost 2.2 -> 1.5 pp mean, worst 9.2 -> 4.9)
    shift_augment: bool = True


class AnalysedModel(Protocol):
    """A model opened for analysis; ``format`` names what it was loaded from."""

    format: str
    device: str

    def layers(self) -> list[LayerInfo]:
        """Candidate layers in execution order (convolutions and linear layers)."""
        ...

    def run(self, x: FloatArray, layer: str | None) -> tuple[FloatArray, FloatArray | None]:
        """Logits for a batch and, when ``layer`` is given, that layer's raw output."""
        ...

    def filter_norms(self, layer: str) -> FloatArray:
        """L2 norm of each output channel's weights in ``layer`` (its filter)."""
        ...

    def prune(self, layer: str, pruned: BoolArray) -> None:
        """Zero the weights and bias of the ``pruned`` channels (others untouched)."""
        ...

    def snapshot(self) -> object:
        """An opaque copy of all weights, for :meth:`restore`."""
        ...

    def restore(self, state: object) -> None: ...

    def blend(self, start: object, end: object, share: float) -> None:
        """Set the weights ``share`` of the way from snapshot ``start`` to ``end``
        (both from :meth:`snapshot` of this model)."""
        ...

    @property
    def can_fine_tune(self) -> bool: ...

    def differentiable(self) -> Any:
        """A torch callable, inputs to logits on :attr:`device`, that gradients flow
        through (weights frozen, evaluation mode): what trigger reverse engineering
        and the margin search optimise inputs against."""
        ...

    def fine_tune(
        self,
        x: FloatArray,
        y: IntArray,
        layer: str | None,
        pruned: BoolArray | None,
        settings: FineTuneSettings,
        teacher: FloatArray | None = None,
    ) -> None:
        """Train on ``(x, y)``, keeping the ``pruned`` channels of ``layer`` at zero;
        rows of ``teacher`` that are not NaN are distilled towards those logits."""
        ...

    def save(self, path: Path) -> str:
        """Write the model in its input format; return the format written."""
        ...

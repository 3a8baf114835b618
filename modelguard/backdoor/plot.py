"""The analysis as a PNG: the recovered trigger of the most suspicious class (mask,
pattern, a stamped held-out example), every class's mask norm and margin index,
and, when fine-pruning ran, its pruning curve (as in Liu et al.'s figures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from modelguard.backdoor.result import BackdoorAnalysis
from modelguard.errors import BackdoorAnalysisError, MissingExtra


def _image(ax: Any, array: np.ndarray, title: str) -> None:
    shown = array[0] if array.shape[0] == 1 else np.moveaxis(array[:3], 0, -1)
    low, high = float(shown.min()), float(shown.max())
    ax.imshow((shown - low) / (high - low + 1e-12), cmap="gray" if shown.ndim == 2 else None)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_analysis(analysis: BackdoorAnalysis, path: Path) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtra("plotting", "plot", "matplotlib")
    detection = analysis.detection
    if detection is None and analysis.pruning is None:
        raise BackdoorAnalysisError("a plot needs detection or fine-pruning to have run")
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    panels = (4 if detection is not None else 0) + (1 if analysis.pruning is not None else 0)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4), squeeze=False)
    row = list(axes[0])
    if detection is not None:
        suspect = max(detection.classes, key=lambda c: c.score)
        trigger = detection.triggers[suspect.label]
        _image(row[0], trigger.mask[None], f"mask, class {suspect.label} (L1 {trigger.norm:.1f})")
        _image(row[1], trigger.pattern, "pattern")
        if analysis.held_out_example is not None:
            stamped = trigger.stamp(analysis.held_out_example[None])[0]
            _image(row[2], stamped, "stamped held-out input")
        labels = [c.label for c in detection.classes]
        colours = ["C3" if c.suspected else "C0" for c in detection.classes]
        row[3].bar(labels, [c.norm for c in detection.classes], color=colours)
        row[3].set_xticks(labels)
        row[3].set_xlabel("class (red: suspected)")
        row[3].set_ylabel("reversed mask L1 norm")
        row[3].set_title(f"score {detection.score:.2f} (threshold {detection.threshold:g})")
    if analysis.pruning is not None:
        ax = row[-1]
        points = analysis.pruning.points
        fractions = [p.fraction for p in points]
        ax.plot(fractions, [100 * p.accuracy for p in points], label="guard accuracy")
        chosen = analysis.pruning.chosen / analysis.pruning.channels
        ax.axvline(chosen, color="grey", linestyle="--", label="stop (budget)")
        ax.set_xlabel(f"fraction of {analysis.layer} pruned")
        ax.set_ylabel("%")
        ax.set_ylim(-2, 102)
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Backdoor analysis: {Path(analysis.model).name}", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise BackdoorAnalysisError(f"{path}: cannot write the plot: {exc}") from exc
    finally:
        plt.close(fig)

"""The pruning curve as a PNG, like the figures of Liu et al.: clean accuracy and
(with trigger data) attack success rate against the fraction of channels pruned."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from modelguard.errors import BackdoorAnalysisError, MissingExtra

if TYPE_CHECKING:  # pragma: no cover
    from modelguard.backdoor.api import BackdoorAnalysis


def plot_pruning_curve(analysis: BackdoorAnalysis, path: Path) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtra("--plot", "plot", "matplotlib")
    if analysis.pruning is None:
        raise BackdoorAnalysisError("--plot needs the pruning curve (not --profile-only)")
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    points = analysis.pruning.points
    fractions = [p.fraction for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(fractions, [100 * p.accuracy for p in points], label="clean accuracy", color="C0")
    if points[0].attack_success is not None:
        ax.plot(
            fractions,
            [100 * (p.attack_success or 0.0) for p in points],
            label="attack success rate",
            color="C3",
        )
    chosen = analysis.pruning.chosen / analysis.pruning.channels
    ax.axvline(chosen, color="grey", linestyle="--", label="stop (accuracy budget)")
    ax.set_xlabel(f"fraction of channels pruned ({analysis.layer})")
    ax.set_ylabel("rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"Pruning curve: {Path(analysis.model).name}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise BackdoorAnalysisError(f"{path}: cannot write the plot: {exc}") from exc
    finally:
        plt.close(fig)

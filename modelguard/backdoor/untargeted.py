"""The untargeted statistic: does every class have a shortcut OUT of it?

Neural Cleanse asks, per target, for the smallest trigger that sends *every*
input there. An all-to-all backdoor (triggered n -> n+1) gives no target such a
trigger: each target is reached from one source only, so no mask norm stands
out. What it does give is a small trigger out of *every* source class. So per
source class ``s`` the reverse engineering also finds the smallest mask that
sends images of ``s`` to any other label (:class:`reverse.Task` with
``targeted=False``), and the statistic compares those masks with the targeted
ones:

    shortcut = log(median targeted mask norm / mean of the k smallest untargeted)

with ``k`` a third of the classes: an all-to-all trigger that works from most
sources gives many of them a small exit, not all (the trigger's success is not
100% everywhere). Leaving a class is always easier than reaching a given one,
so clean models score above zero too; a backdoor that works from many sources
(all-to-all, and all-to-one as well) makes those untargeted masks collapse to
the trigger and the score rise. Unlike the anomaly indices this compares a model
with a reference level, which is calibrated (``detection.SHORTCUT_THRESHOLD``).

An all-to-one backdoor raises the score too; it is taken as all-to-all only
when no class stands out (``detection.combine``).
"""

from __future__ import annotations

import math

import numpy as np

from modelguard.backdoor.reverse import RecoveredTrigger


def _exits(untargeted: list[RecoveredTrigger]) -> float:
    norms = np.sort([max(tr.norm, 1e-6) for tr in untargeted])
    k = max(1, len(norms) // 3)
    return float(norms[:k].mean())


def shortcut_score(targeted: list[RecoveredTrigger], untargeted: list[RecoveredTrigger]) -> float:
    """log(median targeted L1 / mean of the smallest third of untargeted L1s)."""
    if not targeted or not untargeted:
        return 0.0
    t = float(np.median([max(tr.norm, 1e-6) for tr in targeted]))
    return math.log(t / _exits(untargeted))

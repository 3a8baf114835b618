"""The untargeted statistic: does every class have a shortcut OUT of it?

Neural Cleanse asks, per target, for the smallest trigger that sends *every*
input there. An all-to-all backdoor (triggered n -> n+1) gives no target such a
trigger: each target is reached from one source only, so no mask norm stands
out. What it does give is a small trigger out of *every* source class. So per
source class ``s`` the reverse engineering also finds the smallest mask that
sends images of ``s`` to any other label (:class:`reverse.Task` with
``targeted=False``), and the statistic compares those masks with the targeted
ones:

    shortcut = log(median targeted mask norm / median untargeted mask norm)

Leaving a class is always easier than reaching a given one, so clean models
score above zero too; a backdoor that works from every source (all-to-all, and
all-to-one as well) makes the untargeted masks collapse to the trigger and the
score rise. Unlike the anomaly indices this compares a model with a reference
level, which is calibrated (see ``detection.SHORTCUT_THRESHOLD``).
"""

from __future__ import annotations

import math

import numpy as np

from modelguard.backdoor.reverse import RecoveredTrigger


def shortcut_score(targeted: list[RecoveredTrigger], untargeted: list[RecoveredTrigger]) -> float:
    """log(median targeted L1 / median untargeted L1); 0.0 when either is missing."""
    if not targeted or not untargeted:
        return 0.0
    t = float(np.median([max(tr.norm, 1e-6) for tr in targeted]))
    u = float(np.median([max(tr.norm, 1e-6) for tr in untargeted]))
    return math.log(t / u)

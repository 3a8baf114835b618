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
from collections import Counter

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


# Where the exits lead. An all-to-one backdoor the per-class search does not single
# out (a trigger sized like clean masks, as the adaptive attack makes it) still gives
# every source the same small exit, and it leads to the target; an all-to-all one's
# lead to n+1. On the seen families' (holdout8, holdout9) all-to-all verdicts, the
# twelve real all-to-all models sent the exits of at most 4 of 9 other sources to one
# class; the four single- and two-target models taken for all-to-all, 7 to 9 of 9.
EXIT_HOLD = 0.5  # an exit leads to a class when it sends at least half its images there
EXIT_SHARE = 2 / 3  # of the other sources' exits (or of a universal trigger's moves)


def _top_destination(
    labels: np.ndarray | int, predictions: np.ndarray
) -> tuple[int, int, int] | None:
    """(class, its count, all moved) for the inputs whose prediction left their label."""
    moved = predictions[predictions != labels]
    if not len(moved):
        return None
    values, counts = np.unique(moved, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]), int(counts[best]), len(moved)


def exit_destination(source: int, predictions: np.ndarray) -> int | None:
    """The class one source's exit sends at least EXIT_HOLD of its images to, else None.

    ``predictions``: the model's labels for that source's images, exit stamped.
    """
    top = _top_destination(source, predictions)
    return top[0] if top is not None and top[1] >= EXIT_HOLD * len(predictions) else None


def dominant_exit(destinations: dict[int, int | None]) -> int | None:
    """The class the exits of at least EXIT_SHARE of the *other* sources lead to."""
    reached = Counter(d for d in destinations.values() if d is not None)
    for label, count in sorted(reached.items(), key=lambda item: (-item[1], item[0])):
        others = sum(1 for source in destinations if source != label)
        if others and count >= EXIT_SHARE * others:
            return label
    return None


# Where the exits lead, when they do not converge. Natural exits converge on a few sink
# classes (3, 8, 9 in the digit family) and a backdoor's exits on its target(s); an
# all-to-all backdoor's exits lead each source somewhere else (n -> n+1: a permutation).
# On the seen families (holdout8, holdout10; 96 models) the twelve real all-to-all models'
# exits reached 0.56-1.00 distinct classes per exit, five of them >= 0.8; every other model
# at most 0.67, and at most 0.57 where the shortcut fired beside a named target, the case
# :func:`exits_spread` decides (``detection.combine``). On holdout11 (run once after) it
# changed no verdict; one clean model's exits reached the line (6 classes for 8, 0.75),
# unflagged because its shortcut (1.43) did not fire: the margin is thinner than it looked.
SPREAD_SHARE = 0.75  # distinct destinations, of the exits that lead somewhere
SPREAD_MIN_EXITS = 0.6  # of the sources: a few exits that lead somewhere prove nothing


def exits_spread(destinations: dict[int, int | None]) -> bool:
    """The exits lead somewhere for most sources, and nearly each to a different class."""
    reached = [d for d in destinations.values() if d is not None]
    return (
        len(reached) > 0
        and len(reached) >= SPREAD_MIN_EXITS * len(destinations)
        and len(set(reached)) >= SPREAD_SHARE * len(reached)
    )


def dominant_destination(labels: np.ndarray, predictions: np.ndarray) -> int | None:
    """The class that gets at least EXIT_SHARE of the inputs a universal trigger moved."""
    top = _top_destination(labels, predictions)
    return top[0] if top is not None and top[1] >= EXIT_SHARE * top[2] else None

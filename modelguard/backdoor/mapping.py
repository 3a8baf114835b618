"""The universal-mapping statistic: one small mask whose effect depends on the source.

The reverse engineering also looks for ONE mask that moves inputs of every
class off their own label (:data:`reverse.UNIVERSAL`). What that trigger does
tells an all-to-all backdoor (triggered n -> n+1) from a clean model:

- on a clean model the cheapest universal exit is a large blob that pushes
  everything into one or two "sink" classes (on the fixture family: 8, 3, 0),
  and its mask is 3-5x larger than the median per-target mask;
- on an all-to-all model the trigger itself is the universal exit: its mask is
  no larger than a per-target one, and where it sends an input depends on the
  input's class.

So the statistic multiplies two parts, each scaled so that 1 is "clearly
there", and takes the geometric mean, so that both must hold (an all-to-one
backdoor has a small universal exit too, but sends every source to its one
target, and scores 0):

    dependence = I(source; destination) / H(source) / DEPENDENCE_SCALE
    size       = log(median targeted L1 / universal L1) + SIZE_OFFSET
    mapping    = sqrt(max(dependence, 0) * max(size, 0))

measured on the tuning inputs the universal trigger moves.

The universal search runs twice. In the detection batch it stops, as NC does,
at 99% of inputs moved; that trigger is what unlearning stamps. On an
all-to-all model 99% is often more than the trigger does (the fixture family's
move 89-92% of the judge's images), and the search then grows a blob instead of
the patch: ``holdout4``'s ``alltoall_3`` scored 0.88, was taken for a single
target and kept 41% after repair. A second, separate search (the *probe*, one
task, 1-3 s) stops at 80% (:data:`PROBE_SUCCESS`) and is scored with its own
offset; the mapping is the larger of the two. Probe scales, from the ``dev``,
``holdout3`` and ``holdout4`` halves (all seen; 120 models): with
:data:`PROBE_SIZE_OFFSET` 0.6 no model of another kind scores above 0.88
(clean: 0.88), 17 of the 18 all-to-all ones score 1.22-3.70; the 18th (0.41)
is the one where the 99% search fires (1.78).

Scales of the 99% search, from the
fixture family's ``dev`` clean models and the ``eval`` half's (used as a second
calibration half once seen; the ``holdout`` half judges): clean models reach
dependence 0.00-0.19 x 5 and size -0.06..+0.17 (clean: -1.2..-1.6 before the
offset, one at -0.46), all-to-all models dependence 1.0-4.2 and size 1.05-2.6.
"""

from __future__ import annotations

import math

import numpy as np

from modelguard.backdoor.model import IntArray

DEPENDENCE_SCALE = 0.2  # normalised mutual information that counts as "clearly there"
SIZE_OFFSET = 1.5  # clean models' universal masks are ~e^1.5 = 4.5x the median target's
PROBE_SUCCESS = 0.8  # the probe's flip rate: most inputs, not 99% (see above)
PROBE_SIZE_OFFSET = 0.6  # at 80% moved, clean models' masks are ~e^0.6 = 1.8x the median


def source_dependence(labels: IntArray, predictions: IntArray, classes: int) -> float:
    """I(source; destination) / H(source) over the inputs whose prediction moved."""
    moved = predictions != labels
    if not moved.any():
        return 0.0
    joint = np.zeros((classes, classes))
    np.add.at(joint, (labels[moved], predictions[moved]), 1.0)
    joint /= joint.sum()
    source = joint.sum(axis=1, keepdims=True)
    destination = joint.sum(axis=0, keepdims=True)
    present = joint > 0
    expected = (source @ destination)[present]
    information = float((joint[present] * np.log(joint[present] / expected)).sum())
    entropy = float(-(source[source > 0] * np.log(source[source > 0])).sum())
    return information / entropy if entropy > 0 else 0.0


def mapping_score(
    dependence: float,
    median_targeted_norm: float,
    universal_norm: float,
    size_offset: float = SIZE_OFFSET,
) -> float:
    """The geometric mean of the two scaled parts (0 when either is absent)."""
    size = math.log(max(median_targeted_norm, 1e-6) / max(universal_norm, 1e-6)) + size_offset
    return math.sqrt(max(dependence / DEPENDENCE_SCALE, 0.0) * max(size, 0.0))

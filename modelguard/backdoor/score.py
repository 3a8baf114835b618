"""The dormancy score: how much of a layer's filter mass clean data leaves idle.

A channel is dormant when clean data (almost) never activates it
(:meth:`ChannelProfile.dormant`). Dead units exist in clean networks too, but
there they are mostly filters that stopped learning early and stayed small. A
backdoor planted in dormant channels needs filters strong enough to fire on the
trigger, and the pruning-aware attack of Liu et al. silences full-strength
filters with a large negative bias. So each dormant channel is weighed by the
L2 norm of its filter: the score is the share of the layer's total filter norm
that sits in dormant channels (0: every filter is in use; 1: all are idle).

Measured on the shipped fixtures and eight variants of them (README, "Backdoor
analysis"): clean models score 0.03-0.07, pruning-aware BadNets 0.15-0.31.
Baseline BadNets score like clean models (0.01-0.07): their backdoor rides on
channels clean data also uses, which no dormancy statistic can see. The
threshold sits between the two groups; it is calibrated on small CNNs only.
"""

from __future__ import annotations

import numpy as np

from modelguard.backdoor.activations import ChannelProfile
from modelguard.backdoor.model import FloatArray

DORMANCY_THRESHOLD = 0.1


def dormancy_score(profile: ChannelProfile, filter_norms: FloatArray) -> float:
    """Share of the layer's filter norm in channels clean data leaves dormant."""
    norms = np.asarray(filter_norms, dtype=np.float64)
    if norms.shape != profile.mean.shape:
        raise ValueError(
            f"{norms.shape[0]} filter norms for {profile.channels} channels of {profile.layer}"
        )
    total = float(norms.sum())
    if total <= 0.0:
        return 0.0
    return float(norms[profile.dormant()].sum() / total)

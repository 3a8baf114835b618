"""The dormancy score (placeholder, chosen below after measurement)."""

from __future__ import annotations

from modelguard.backdoor.activations import ChannelProfile

DORMANCY_THRESHOLD = 0.5


def dormancy_score(profile: ChannelProfile) -> float:
    return float(profile.dormant().mean())

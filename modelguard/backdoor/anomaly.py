"""Robust outlier scores: the anomaly index of Neural Cleanse (Wang et al., S&P 2019).

The anomaly index of a value is its distance from the median in units of the
median absolute deviation, scaled by 1.4826 so that it estimates standard
deviations under a normal distribution. Neural Cleanse flags a label whose
mask norm lies below the median with an index above 2.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelguard.backdoor.model import FloatArray

CONSISTENCY = 1.4826


def anomaly_index(
    values: npt.ArrayLike, *, low_is_suspicious: bool, min_spread: float = 0.0
) -> FloatArray:
    """Signed robust z-scores: positive on the suspicious side of the median, else <= 0.

    ``min_spread`` floors the scaled MAD: with ten classes, six that happen to
    agree closely make the MAD tiny and turn an ordinary 20% difference into an
    "outlier"; on log values a floor of 0.15 says that differences of about 15%
    between classes are what natural variation looks like.
    """
    data = np.asarray(values, dtype=np.float64)
    median = float(np.median(data))
    mad = max(CONSISTENCY * float(np.median(np.abs(data - median))), min_spread)
    deviation = (median - data) if low_is_suspicious else (data - median)
    if mad <= 0:
        # All (or more than half) equal: nothing stands out unless it differs at all.
        scale = max(float(np.abs(data).max()), 1e-12) * 1e-6
        return np.asarray(deviation / scale, dtype=np.float32).clip(-1e6, 1e6)
    return np.asarray(deviation / mad, dtype=np.float32)

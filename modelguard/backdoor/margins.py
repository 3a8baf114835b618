"""The maximum-margin statistic, data-free (in the spirit of MM-BD: Wang, Miller &
Kesidis, "MM-BD: Post-Training Detection of Backdoor Attacks with Arbitrary
Backdoor Pattern Types Using a Maximum Margin Statistic", IEEE S&P 2024).

For every class ``k``, search the input box (the range of the defender's data)
for the input that maximises ``f_k(x) - max_{j != k} f_j(x)``, from several
random starts. A backdoor target can be pushed to an abnormally large margin:
whatever the trigger's size or shape, the network learned a feature that votes
for ``k`` far more strongly than natural features vote for anything. Neural
Cleanse misses large-patch triggers (their mask is not small); this statistic
does not depend on the trigger's size. It needs no clean data, only the input
range.

Departure from the paper: MM-BD scores the largest class against a Gamma null
fitted to the others; here every class gets the same robust MAD anomaly index as
Neural Cleanse's norms (:func:`modelguard.backdoor.anomaly.anomaly_index`), so
the statistics combine on one scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from modelguard.backdoor.model import FloatArray

Forward = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class MarginSettings:
    starts: int = 8  # random starting points per class
    steps: int = 150
    learning_rate: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class MarginRun:
    margins: FloatArray  # per class, the largest margin reached
    samples: int
    seconds: float
    cpu_seconds: float


def max_margins(
    forward: Forward,
    shape: tuple[int, ...],
    classes: int,
    lo: float,
    hi: float,
    settings: MarginSettings,
    device: str,
) -> MarginRun:
    """Per class, the largest logit margin any input in ``[lo, hi]^shape`` reaches."""
    start = time.perf_counter()
    cpu_start = time.process_time()
    gen = torch.Generator().manual_seed(settings.seed)
    init = 0.001 + 0.998 * torch.rand((classes * settings.starts, *shape), generator=gen)
    param = torch.atanh(2 * init - 1).to(device).requires_grad_(True)
    labels = torch.arange(classes, device=device).repeat_interleave(settings.starts)
    optimizer = torch.optim.Adam([param], lr=settings.learning_rate)
    best = torch.full((classes * settings.starts,), -torch.inf, device=device)
    for _ in range(settings.steps):
        x = lo + (hi - lo) * (torch.tanh(param) + 1) / 2
        margin = _margin(forward(x), labels)
        with torch.no_grad():
            best = torch.maximum(best, margin.detach())
        optimizer.zero_grad()
        (-margin.sum()).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.no_grad():
        x = lo + (hi - lo) * (torch.tanh(param) + 1) / 2
        best = torch.maximum(best, _margin(forward(x), labels))
    per_class = best.view(classes, settings.starts).max(dim=1).values.cpu().numpy()
    return MarginRun(
        margins=np.asarray(per_class, dtype=np.float32),
        samples=classes * settings.starts * (settings.steps + 1),
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
    )


def _margin(logits: Tensor, labels: Tensor) -> Tensor:
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels[:, None], -torch.inf)
    return own - others.max(dim=1).values

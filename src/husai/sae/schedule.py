"""The learning-rate schedule (`lr_schedule`, `lr_warmup_steps`, `lr_min_fraction`).

Step t (0-based) of T trains at lr × factor(t). Warm-up, t < W: factor = (t + 1) / (W + 1),
a linear rise from 0 that reaches 1 at t = W (no step is spent at lr 0). After it, with
p = (t − W) / (T − W) the fraction of the decay done and m = lr_min_fraction:
constant 1; linear m + (1 − m)(1 − p); cosine m + (1 − m)(1 + cos πp) / 2. The decay ends
at m × lr at step T, one past the last. The factor depends on the step only, the same
for every seed, so the seeds stay independent. The defaults (constant, W = 0) give factor
1.0 exactly: lr is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from husai.sae.config import SAEConfig


def lr_factor(cfg: SAEConfig, total_steps: int) -> Callable[[int], float]:
    """factor(t): the multiple of `cfg.lr` that step t of `total_steps` trains at."""
    warmup, m, schedule = cfg.lr_warmup_steps, cfg.lr_min_fraction, cfg.lr_schedule

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        p = min(1.0, (t - warmup) / max(1, total_steps - warmup))
        if schedule == "linear":
            return m + (1 - m) * (1 - p)
        return m + (1 - m) * (1 + math.cos(math.pi * p)) / 2

    return factor


def lr_scheduler(
    opt: torch.optim.Optimizer, cfg: SAEConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule on `opt` (its lr is the step-0 value at once); call `.step()` after each
    optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, total_steps))

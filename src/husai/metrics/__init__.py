"""Metrics: pure functions of tensors/arrays (no trainers, no models).

Consistency (higher = more consistent): ``best_match``, ``pwmcc``, ``shared_fraction``,
``hungarian_mcc``, ``pairwise``; null baseline: ``random_dictionaries``; statistics:
``bootstrap_ci``, ``compare_to_baseline``; SAE quality: ``mse``, ``explained_variance``,
``mean_l0``, ``firing_counts``, ``dead_fraction``, ``loss_recovered``.
"""

from husai.metrics.baselines import random_dictionaries
from husai.metrics.consistency import (
    DEFAULT_BLOCK_SIZE,
    best_match,
    hungarian_mcc,
    pairwise,
    pwmcc,
    shared_fraction,
)
from husai.metrics.quality import (
    dead_fraction,
    explained_variance,
    firing_counts,
    loss_recovered,
    mean_l0,
    mse,
)
from husai.metrics.stats import bootstrap_ci, compare_to_baseline

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "best_match",
    "bootstrap_ci",
    "compare_to_baseline",
    "dead_fraction",
    "explained_variance",
    "firing_counts",
    "hungarian_mcc",
    "loss_recovered",
    "mean_l0",
    "mse",
    "pairwise",
    "pwmcc",
    "random_dictionaries",
    "shared_fraction",
]

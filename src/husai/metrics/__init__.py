"""Metrics: pure functions of tensors/arrays (no trainers, no models).

Consistency (higher = more consistent): ``best_match``, ``pwmcc``, ``shared_fraction``,
``hungarian_mcc``, ``pairwise``, ``alive_hungarian_mcc`` (dead latents unmatched);
one-to-one matching at any size: ``assignment`` (exact or
sparse top-m), ``Matching``; per latent / activations: ``per_latent_best``,
``MatchedCorrelation``, ``matched_correlation``, ``shared_latent_rate`` (Paulo & Belrose);
subspace stability: ``subspace_similarity``; null baselines: ``random_dictionaries_like`` (any
shapes, one generator), ``random_dictionaries``; statistics: ``bootstrap_ci``,
``compare_to_baseline``, ``seed_bootstrap_ci`` (resamples seeds, percentile or BCa),
``permutation_test``, ``holm``; summaries (metrics.json's and `husai compare`'s consistency
blocks): ``pairwise_groups``, ``summarise_pairwise``, ``summarise_values``; SAE quality:
``mse``, ``explained_variance``, ``mean_l0``, ``firing_counts``, ``dead_fraction``,
``dense_fraction``, ``firing_histogram``,
``loss_recovered``; all of them streamed over row chunks of S seeds: ``QualityAccumulator``,
``stream_quality``, and at once ``reconstruction_quality`` (a transcoder's against its
target); a language model's next tokens: ``cross_entropy``,
``next_token_accuracy``, ``kl_divergence`` (clean ‖ spliced), per position ``token_*``,
``prediction_mask``, ``masked_mean``; ground truth: ``recovery``; data: ``effective_rank``.
"""

from husai.metrics.baselines import random_dictionaries, random_dictionaries_like
from husai.metrics.consistency import (
    DEFAULT_BLOCK_SIZE,
    alive_hungarian_mcc,
    best_match,
    hungarian_mcc,
    pairwise,
    pwmcc,
    shared_fraction,
)
from husai.metrics.latents import (
    MatchedCorrelation,
    matched_correlation,
    per_latent_best,
    shared_latent_rate,
)
from husai.metrics.matching import DEFAULT_TOP_M, EXACT_MAX, Matching, assignment
from husai.metrics.next_token import (
    cross_entropy,
    kl_divergence,
    masked_mean,
    next_token_accuracy,
    prediction_mask,
    token_correct,
    token_cross_entropy,
    token_kl,
)
from husai.metrics.quality import (
    QualityAccumulator,
    dead_fraction,
    dense_fraction,
    explained_variance,
    firing_counts,
    firing_histogram,
    loss_recovered,
    mean_l0,
    mse,
    reconstruction_quality,
    stream_quality,
)
from husai.metrics.recovery import recovery
from husai.metrics.spectrum import effective_rank
from husai.metrics.stats import (
    bootstrap_ci,
    compare_to_baseline,
    holm,
    permutation_test,
    seed_bootstrap_ci,
)
from husai.metrics.subspace import subspace_similarity
from husai.metrics.summary import (
    HUNGARIAN,
    VARIANTS,
    SummarySettings,
    metric_entry,
    metric_keys,
    pair_matrix,
    pairwise_groups,
    summarise_pairwise,
    summarise_values,
)

__all__ = [
    "token_kl",
    "token_cross_entropy",
    "token_correct",
    "prediction_mask",
    "next_token_accuracy",
    "masked_mean",
    "kl_divergence",
    "cross_entropy",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_TOP_M",
    "EXACT_MAX",
    "HUNGARIAN",
    "MatchedCorrelation",
    "Matching",
    "QualityAccumulator",
    "SummarySettings",
    "VARIANTS",
    "alive_hungarian_mcc",
    "assignment",
    "best_match",
    "bootstrap_ci",
    "compare_to_baseline",
    "dead_fraction",
    "dense_fraction",
    "effective_rank",
    "explained_variance",
    "firing_counts",
    "firing_histogram",
    "holm",
    "hungarian_mcc",
    "loss_recovered",
    "matched_correlation",
    "metric_entry",
    "metric_keys",
    "mean_l0",
    "mse",
    "pair_matrix",
    "pairwise",
    "pairwise_groups",
    "per_latent_best",
    "permutation_test",
    "pwmcc",
    "random_dictionaries",
    "random_dictionaries_like",
    "reconstruction_quality",
    "recovery",
    "seed_bootstrap_ci",
    "shared_fraction",
    "shared_latent_rate",
    "stream_quality",
    "subspace_similarity",
    "summarise_pairwise",
    "summarise_values",
]

"""Where consistency lives: the coverage curve (trained vs matched random dictionaries) and
per-latent stability against firing frequency, for one SAE configuration's seeds.

The firing counts are the quality block's (same activations: a toy / synthetic set's
training rows, an LM set's held-out tokens), so the frequency bins match its histograms.
"""

from __future__ import annotations

from typing import Any

import torch

from husai.config import MetricsConfig
from husai.experiments.evaluate import decoders
from husai.metrics import random_dictionaries
from husai.metrics.coverage import DEFINITIONS, MAX_SUBSETS, coverage_curve, partner_scores
from husai.metrics.stability import latent_stability, stability_by_frequency
from husai.metrics.stats import bootstrap_ci
from husai.metrics.summary import HUNGARIAN
from husai.sae.base import SAE

COVERAGE_VARIANT = (
    "fraction of a seed's latents with no partner at |cos| ≥ threshold in any other of n "
    "seeds, mean over seeds and seed subsets; lower = more consistent"
)
STABILITY_VARIANT = (
    "per latent (pooled over seeds): mean over the other seeds of its partner |cos| (best "
    "match, or Hungarian partner); higher = more consistent"
)


def coverage_block(sae: SAE, counts: torch.Tensor, n_rows: int, m: MetricsConfig) -> dict:
    """`{"coverage": …, "stability_by_frequency": …}` of metrics.json for one configuration:
    trained decoders and the matched random dictionaries of the consistency block
    (`random_dictionaries(S, F, d_out, baseline_seed)`); `counts` [S, F] firing counts over
    `n_rows` rows."""
    S, F, d_out = sae.n_seeds, sae.d_sae, sae.d_out
    groups = {
        "trained": decoders(sae),
        "random": random_dictionaries(S, F, d_out, m.baseline_seed),
    }
    scores = {g: partner_scores(d, HUNGARIAN, m.block_size) for g, d in groups.items()}
    boot = {"level": m.ci_level, "n_resamples": m.n_bootstrap, "seed": m.baseline_seed}
    stab = {g: {k: latent_stability(v) for k, v in sc.items()} for g, sc in scores.items()}
    coverage: dict[str, Any] = {
        "variant": COVERAGE_VARIANT,
        "definitions": DEFINITIONS,
        "thresholds": [float(t) for t in m.thresholds],
        "max_subsets": MAX_SUBSETS,
        "subset_seed": m.baseline_seed,
    }
    for g, sc in scores.items():
        coverage[g] = coverage_curve(sc, m.thresholds, MAX_SUBSETS, m.baseline_seed)
    by_freq = stability_by_frequency(stab["trained"], counts.reshape(S, F), n_rows, **boot)
    by_freq["variant"] = STABILITY_VARIANT
    by_freq["random"] = {  # no firing: one pooled reference per definition
        k: bootstrap_ci(v, batch=max(1, (1 << 22) // len(v)), **boot)
        for k, v in stab["random"].items()
    }
    return {"coverage": coverage, "stability_by_frequency": by_freq}

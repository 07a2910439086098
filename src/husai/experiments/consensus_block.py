"""The run report's consensus block for one SAE configuration's seeds (`husai consensus`'s
grouping and dictionary, computed inside the `sae` / `lm_sae` job).

Per group of dictionaries (trained decoders, the matched random dictionaries of the
consistency block, the at-init decoders): ``consensus_groups`` at |cos| ≥ 0.7, then how many
groups are found in ≥ m of the N seeds for m = 2 … N (`found_in_at_least`: the counts-vs-m
curve), the groups by size, and the distribution of the stability score over all N·F
latents (each latent scored by its group; a singleton's is 0). The random and at-init rows
are the chance levels of the trained counts.

The consensus dictionary: the trained groups found in ≥ `min_seeds` = max(2, ⌈N/2⌉) seeds,
built as `husai consensus` builds it (decoder: sign-aligned centroids; encoder: averaged,
then refit with the decoder frozen for `consensus_refit_epochs` epochs on the training
rows, or an evenly spaced sample of an LM store's). Its EV / L0 / dead fraction are scored on
the rows the quality block scores the single seeds on (`single_seeds_mean`: that block's
seed means), and on synthetic data its recovery of the true features against the seeds'.
The block runs on one torch thread: its matmuls and refit steps are small (exact matchings
up to 8,192 latents are scipy's, single-threaded anyway), several threads cost 5–10× more
CPU there on a loaded machine, and its numbers then do not depend on the thread count.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from husai.config import MetricsConfig
from husai.errors import HusaiError
from husai.experiments.consensus import (
    DEFAULT_THRESHOLD,
    QUALITY_VARIANT,
    build_consensus_sae,
    refit_encoder,
)
from husai.experiments.evaluate import decoders
from husai.metrics import random_dictionaries, stream_quality
from husai.metrics.consensus import STABILITY_VARIANT, Group, consensus_groups
from husai.runtime import single_threaded
from husai.sae.base import SAE

QUALITY_KEYS = ("explained_variance", "l0", "dead_fraction")
QUANTILES = (0.5, 0.9, 0.99, 1.0)
GROUPING = (
    "every seed pair's one-to-one Hungarian matching of unit decoder rows by |cos|; matched "
    "pairs ≥ threshold merged strongest first, never two latents of one seed in a group "
    "(husai.metrics.consensus); found_in_at_least[m] = groups spanning ≥ m seeds (higher = "
    "more consistent; random / init: chance levels)"
)
REFIT_ROWS = 16_384  # an LM store's rows the encoder refit sees (evenly spaced)


def default_min_seeds(n: int) -> int:
    """max(2, ⌈N/2⌉): a consensus latent is found in at least two seeds."""
    return max(2, math.ceil(n / 2))


def group_stats(groups: list[Group], n_seeds: int, n_latents: int) -> dict[str, Any]:
    """Counts of `groups` by seed count, and the per-latent stability distribution."""
    sizes = np.array([g.n_seeds for g in groups])
    per_latent = np.concatenate([np.full(g.n_seeds, g.stability) for g in groups])
    assert len(per_latent) == n_latents, "every latent is in exactly one group"
    return {
        "n_groups": len(groups),
        "found_in_at_least": {str(m): int((sizes >= m).sum()) for m in range(2, n_seeds + 1)},
        "groups_by_n_seeds": {str(k): int((sizes == k).sum()) for k in range(n_seeds, 0, -1)},
        "stability": {
            "mean": float(per_latent.mean()),
            "quantiles": {
                str(q): float(v)
                for q, v in zip(QUANTILES, np.quantile(per_latent, QUANTILES), strict=True)
            },
            "fraction_grouped": float((per_latent > 0).mean()),
        },
    }


def _quality(sae: SAE, x: Tensor) -> dict[str, float]:
    q = stream_quality(sae.encode, x, sae.decode).result()[0]
    return {k: q[k] for k in QUALITY_KEYS}


@single_threaded()
def consensus_block(
    sae: SAE,
    init: SAE,
    m: MetricsConfig,
    *,
    score_rows: Tensor,
    refit_rows: Tensor,
    single_mean: dict[str, float],
    truth: Tensor | None = None,
    single_recovery: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """metrics.json's `consensus` entry (module docstring). `score_rows`: the rows the
    quality block scored the seeds on (`single_mean`: its seed means); `refit_rows`: the
    rows the encoder is refit on; `truth` / `single_recovery`: synthetic ground truth and the
    seeds' `recovery` dicts."""
    S, F = sae.n_seeds, sae.d_sae
    dicts = {
        "trained": decoders(sae),
        "random": random_dictionaries(S, F, sae.d_out, m.baseline_seed),
        "init": decoders(init),
    }
    groups = {g: consensus_groups(d, DEFAULT_THRESHOLD) for g, d in dicts.items()}
    min_seeds = default_min_seeds(S)
    out: dict[str, Any] = {
        "variant": GROUPING,
        "stability_variant": STABILITY_VARIANT,
        "rows_grouped": "decoder",
        "threshold": DEFAULT_THRESHOLD,
        "n_seeds": S,
        "min_seeds": min_seeds,
        **{g: group_stats(gs, S, S * F) for g, gs in groups.items()},
    }
    kept = [g for g in groups["trained"] if g.n_seeds >= min_seeds]
    out["dictionary"] = _dictionary(
        sae, kept, m, score_rows, refit_rows, single_mean, truth, single_recovery
    )
    return out


def _dictionary(
    sae: SAE,
    kept: list[Group],
    m: MetricsConfig,
    score_rows: Tensor,
    refit_rows: Tensor,
    single_mean: dict[str, float],
    truth: Tensor | None,
    single_recovery: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The consensus dictionary's width, quality and (synthetic) recovery."""
    out: dict[str, Any] = {"width": len(kept), "single_width": sae.d_sae}
    if not kept:
        out["reason"] = "no latent is found in ≥ min_seeds seeds at the threshold"
        return out
    seeds = [sae.select(s) for s in range(sae.n_seeds)]
    try:
        averaged = build_consensus_sae(seeds, kept)
    except HusaiError as e:  # e.g. a config that cannot take the consensus width
        out["reason"] = str(e)
        return out
    if averaged.uses_k:
        out["k"] = int(averaged.params.k)  # type: ignore[attr-defined]
    quality: dict[str, Any] = {
        "variant": QUALITY_VARIANT,
        "n_rows": len(score_rows),
        "single_seeds_mean": {k: single_mean[k] for k in QUALITY_KEYS},
        "averaged": _quality(averaged, score_rows),
    }
    if m.consensus_refit_epochs:
        refit = refit_encoder(averaged, refit_rows, m.consensus_refit_epochs)
        quality.update(
            refit=_quality(refit, score_rows),
            refit_epochs=m.consensus_refit_epochs,
            refit_rows=len(refit_rows),
        )
    out["quality"] = quality
    if truth is not None and single_recovery is not None:
        from husai.metrics import recovery

        best = max(single_recovery, key=lambda r: r["hungarian_mcc"])
        out["recovery"] = {
            "variant": "recovery of the true features by decoder rows (husai.metrics.recovery: "
            "hungarian_mcc = one-to-one |cos| summed / n_true; higher = better); the same for "
            "both encoders",
            "consensus": recovery(truth, averaged.W_dec[0].detach()),
            "best_single_seed": best,
        }
    return out

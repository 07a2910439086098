"""Ground-truth recovery: how well does a learned dictionary find known feature directions?

Used with synthetic data (``husai.synthetic``), where the true feature directions are known.
Rows are compared by |cosine| (sign and scale of a latent are arbitrary) on unit-normalised
rows in float32; an all-zero row has cosine 0 with everything. Scores lie in [0, 1];
higher = better recovery. Every score is an average over the *true* features: "of the true
features, how well is each one recovered".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from husai.errors import HusaiError
from husai.metrics.validate import ArrayLike, check_threshold, unit_rows


def recovery(true_FD: ArrayLike, W_dec: ArrayLike, threshold: float = 0.9) -> dict[str, Any]:
    """Recovery of true features [n_true, d] by decoder rows [n_latents, d]; higher = better.

    Returns a dict with
      - ``"hungarian_mcc"``: optimal one-to-one matching of true features to decoder rows
        (maximising total |cos|, ``scipy.optimize.linear_sum_assignment``), summed |cos| over
        the ``min(n_true, n_latents)`` matched pairs divided by ``n_true``: when there are
        fewer latents than true features, the unmatched true features count 0;
      - ``"mean_max_cos"``: mean over true features of the best |cos| with *any* decoder row
        (not one-to-one; one latent may serve several features), a.k.a. MMCS;
      - ``"fraction_recovered"``: fraction of true features whose best |cos| with any decoder
        row is > ``threshold``;
      - ``"threshold"``, ``"n_true"``, ``"n_latents"``.
    Builds the full n_true x n_latents matrix and runs an O(n^3) assignment: meant for up to
    a few thousand rows.
    """
    threshold = check_threshold(threshold)
    t = unit_rows(true_FD, "true features")
    w = unit_rows(W_dec, "W_dec")
    if t.shape[1] != w.shape[1]:
        raise HusaiError(
            f"true features and W_dec have different widths d: shapes {tuple(t.shape)} and "
            f"{tuple(w.shape)}"
        )
    sim = (t @ w.to(t.device).T).abs_().clamp_(max=1.0).cpu().numpy().astype(np.float64)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    best = sim.max(axis=1)
    n_true = sim.shape[0]
    return {
        "hungarian_mcc": float(sim[rows, cols].sum() / n_true),
        "mean_max_cos": float(best.mean()),
        "fraction_recovered": float((best > threshold).mean()),
        "threshold": threshold,
        "n_true": int(n_true),
        "n_latents": int(sim.shape[1]),
    }

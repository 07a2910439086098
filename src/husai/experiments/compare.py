"""Consistency of any set of saved SAEs (same d_in), against matched random dictionaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from husai.config import MetricsConfig
from husai.errors import HusaiError
from husai.experiments.evaluate import VARIANTS
from husai.metrics import bootstrap_ci, compare_to_baseline, pairwise, random_dictionaries
from husai.sae import load


def compare(paths: list[Path], m: MetricsConfig | None = None) -> dict[str, Any]:
    """Pairwise PWMCC / Hungarian MCC / shared fractions of the SAEs' decoder rows."""
    m = m or MetricsConfig()
    if len(paths) < 2:
        raise HusaiError("compare needs at least two SAE directories")
    saes = [load(Path(p)) for p in paths]
    d_ins = {s.d_in for s in saes}
    if len(d_ins) > 1:
        detail = ", ".join(f"{p}: d_in {s.d_in}" for p, s in zip(paths, saes, strict=True))
        raise HusaiError(f"SAEs have different d_in ({detail}); cannot compare their dictionaries")
    dicts = [s.W_dec[0].detach() for s in saes]
    sizes = {d.shape[0] for d in dicts}
    trained = pairwise(dicts, thresholds=m.thresholds, block_size=m.block_size)
    # matched baseline: one random dictionary per SAE, of the same shape
    rand = [
        random_dictionaries(1, d.shape[0], d.shape[1], m.baseline_seed + i)[0]
        for i, d in enumerate(dicts)
    ]
    random = pairwise(rand, thresholds=m.thresholds, block_size=m.block_size)
    out: dict[str, Any] = {
        "saes": [str(p) for p in paths],
        "d_in": d_ins.pop(),
        "d_sae": sorted(sizes),
        "pairs": [list(p) for p in trained["pairs"]],
        "baseline": "matched random unit-Gaussian dictionaries (same shapes)",
    }
    keys = ["pwmcc", "hungarian_mcc"] + [f"shared_fraction@{t}" for t in m.thresholds]
    for key in keys:
        t_vals, r_vals = trained[f"{key}_values"], random[f"{key}_values"]
        out[key] = {
            "variant": VARIANTS[key.split("@")[0]],
            "matrix": trained[f"{key}_matrix"].tolist(),
            "trained": bootstrap_ci(
                t_vals, level=m.ci_level, n_resamples=m.n_bootstrap, seed=m.baseline_seed
            ),
            "random": bootstrap_ci(
                r_vals, level=m.ci_level, n_resamples=m.n_bootstrap, seed=m.baseline_seed
            ),
            "trained_minus_random": compare_to_baseline(
                t_vals, r_vals, level=m.ci_level, n_resamples=m.n_bootstrap, seed=m.baseline_seed
            ),
        }
    return out

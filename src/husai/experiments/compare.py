"""Consistency of any set of saved SAEs (same d_in), against matched random dictionaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from husai.config import MetricsConfig
from husai.errors import HusaiError
from husai.experiments.evaluate import metric_keys, summarise
from husai.metrics import pairwise, random_dictionaries
from husai.sae import load

HUNGARIAN_MAX = 8192  # scipy's exact assignment is O(n³); beyond this it takes minutes


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
    exact = max(sizes) <= HUNGARIAN_MAX
    trained = pairwise(dicts, m.thresholds, m.block_size, hungarian=exact)
    # matched baseline: one random dictionary per SAE, of the same shape
    rand = [
        random_dictionaries(1, d.shape[0], d.shape[1], m.baseline_seed + i)[0]
        for i, d in enumerate(dicts)
    ]
    random = pairwise(rand, m.thresholds, m.block_size, hungarian=exact)
    out: dict[str, Any] = {
        "saes": [str(p) for p in paths],
        "d_in": d_ins.pop(),
        "d_sae": sorted(sizes),
        "pairs": [list(p) for p in trained["pairs"]],
        "baseline": "matched random unit-Gaussian dictionaries (same shapes)",
    }
    groups = {"trained": trained, "random": random}
    for key in metric_keys(m):
        if key == "hungarian_mcc" and not exact:
            out[key] = f"skipped: exact assignment only up to {HUNGARIAN_MAX} latents"
            continue
        out[key] = summarise(groups, key, m)
    return out

"""Per-latent stability against firing frequency: are frequent latents the consistent ones?

A latent's *stability* is the mean, over the other seeds, of its partner |cos| there
(``coverage.partner_scores``: best match, ``max_cos``, or Hungarian partner, ``hungarian``);
higher = more consistent. Latents are pooled over seeds and binned by log10 firing
frequency (firing count / rows) with the bins of ``quality.firing_histogram`` (live latents in
[10^e_i, 10^e_i+1), the last bin closed, below the first edge in the first bin); dead latents
(never fire) form their own bin. Per non-empty bin: the count, and per definition the mean
stability with a percentile-bootstrap CI over the bin's latents (``bootstrap_ci``; latents of
different seeds are not independent — the same feature recurs — so the CI is a latent
bootstrap, narrower than a seed bootstrap would be).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from husai.errors import HusaiError
from husai.metrics.quality import LOG10_EDGES
from husai.metrics.stats import bootstrap_ci

DEAD = -1
_BOOT_ELEMENTS = 1 << 22  # resamples x latents per bootstrap batch: bounds memory


def latent_stability(scores: list[np.ndarray]) -> np.ndarray:
    """Pooled over dictionaries (in order): each latent's mean partner |cos| over the other
    dictionaries (its NaN own column left out): float64 [sum n_i]."""
    return np.concatenate([np.nanmean(s, axis=1) for s in scores])


def frequency_bins(counts: torch.Tensor, n_rows: int, edges: Sequence[float] = LOG10_EDGES):
    """Bin index per latent of firing counts [..., F] over ``n_rows`` rows (``DEAD`` = -1
    for a latent that never fires), the rule of ``quality.firing_histogram``."""
    edges = tuple(edges)
    if len(edges) < 2 or list(edges) != sorted(set(edges)) or edges[-1] > 0:
        raise HusaiError(f"frequency edges must increase and end at ≤ 0, got {edges}")
    if n_rows < 1:
        raise HusaiError(f"n_rows must be positive, got {n_rows}")
    c = torch.as_tensor(counts)
    freq = c.double() / n_rows
    bounds = torch.tensor([10.0**e for e in edges[1:-1]], dtype=torch.float64)
    bins = torch.bucketize(freq, bounds, right=True)
    return torch.where(c > 0, bins, DEAD).numpy()


def stability_by_frequency(
    stability: dict[str, np.ndarray],
    counts: torch.Tensor,
    n_rows: int,
    edges: Sequence[float] = LOG10_EDGES,
    *,
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-latent stability (per definition, pooled over seeds as ``latent_stability``) binned
    by firing frequency (counts [S, F], seeds in the same order): ``{"log10_edges", "n_rows",
    "n_latents", "bins": [{"bin", "log10_lo", "log10_hi", "count", "<definition>":
    bootstrap_ci}]}``, non-empty bins only, the dead bin ("dead", bounds None) first."""
    edges = tuple(float(e) for e in edges)
    bins = frequency_bins(counts, n_rows, edges).reshape(-1)
    for name, v in stability.items():
        if v.shape != bins.shape:
            raise HusaiError(f"{name}: {v.shape[0]} latents but {bins.shape[0]} firing counts")
    out = []
    for b in [DEAD, *range(len(edges) - 1)]:
        sel = bins == b
        k = int(sel.sum())
        if k == 0:
            continue
        entry: dict[str, Any] = {
            "bin": "dead" if b == DEAD else f"[{edges[b]:g}, {edges[b + 1]:g})",
            "log10_lo": None if b == DEAD else edges[b],
            "log10_hi": None if b == DEAD else edges[b + 1],
            "count": k,
        }
        for name, v in stability.items():
            entry[name] = bootstrap_ci(
                v[sel],
                level=level,
                n_resamples=n_resamples,
                seed=seed,
                batch=max(1, _BOOT_ELEMENTS // k),
            )
        out.append(entry)
    return {
        "log10_edges": list(edges),
        "n_rows": int(n_rows),
        "n_latents": int(bins.size),
        "bins": out,
    }

"""Functional correspondence of matched latents across seeds: does a latent's match in
another seed *do* the same thing in the model, more than a random latent of that seed?

Pure functions of effect tensors ("fingerprints": one row per latent, e.g. the change of the
model's outputs over a probe set when the latent is zeroed or steered along), of matched
|cos| and of dictionaries. The model runs live in `husai.experiments.functional`.

- ``ablated`` / ``steered``: the hooked activations with one latent zeroed in the
  reconstruction (recon − a_i·d_i) or with α·d̂_i added, for many latents at once;
- ``row_correlations``: Pearson r of paired rows (NaN where a row is constant);
- ``top_k_overlap``: share of the k most-raised outputs two effects have in common;
- ``sample_latents``: latents evenly spaced in matched-|cos| rank over seed pairs;
- ``random_partners``: a seeded uniform partner per latent, never the matched one;
- ``compare_pairs``: matched vs random pairs, each a bootstrap CI, and their difference;
- ``by_cos``: a score binned by the pair's matched |cos|.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from husai.errors import HusaiError
from husai.metrics.stats import bootstrap_ci, compare_to_baseline

COS_EDGES = (0.0, 0.5, 0.7, 0.9, 1.0)


def ablated(recon_NO: Tensor, codes_NF: Tensor, W_dec_FO: Tensor, latents: Tensor) -> Tensor:
    """[L, N, O]: the reconstruction with latent `latents[l]` zeroed, recon − a_i·d_i (a
    linear decoder's exact result: only that latent's term changes)."""
    a_LN = codes_NF[:, latents].T
    return recon_NO.unsqueeze(0) - a_LN.unsqueeze(-1) * W_dec_FO[latents].unsqueeze(1)


def steered(x_NO: Tensor, W_dec_FO: Tensor, latents: Tensor, alpha: float) -> Tensor:
    """[L, N, O]: x + α·d̂_i on every row (d̂_i latent i's unit decoder direction)."""
    d = W_dec_FO[latents]
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x_NO.unsqueeze(0) + alpha * d.unsqueeze(1)


def row_correlations(a_LM: Tensor, b_LM: Tensor) -> np.ndarray:
    """float64 [L]: Pearson correlation of a[l] and b[l] (each flattened past the first
    axis); NaN where either row is constant (e.g. a latent that never fires on the probe
    set has a zero ablation effect)."""
    a, b = a_LM.reshape(len(a_LM), -1).double(), b_LM.reshape(len(b_LM), -1).double()
    if a.shape != b.shape:
        raise HusaiError(f"effects differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    scale = torch.maximum(a.abs().amax(1), b.abs().amax(1)).clamp_min(1e-300)
    ok = (na > 1e-9 * scale * a.shape[1] ** 0.5) & (nb > 1e-9 * scale * b.shape[1] ** 0.5)
    r = (a * b).sum(1) / (na * nb).clamp_min(1e-300)
    return torch.where(ok, r.clamp(-1.0, 1.0), torch.nan).cpu().numpy()


def top_k_overlap(a: Tensor, b: Tensor, k: int) -> np.ndarray:
    """float64 [L]: for effects [L, …, V], the share of the k outputs (last axis) raised most
    by a[l] that are also among the k raised most by b[l], averaged over the middle axes
    (e.g. probe inputs); k = 1: whether the same output moves most."""
    if a.shape != b.shape:
        raise HusaiError(f"effects differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not 1 <= k <= a.shape[-1]:
        raise HusaiError(f"top-k overlap: k must be in 1..{a.shape[-1]}, got {k}")
    ta, tb = a.topk(k, dim=-1).indices, b.topk(k, dim=-1).indices
    hit = (ta.unsqueeze(-1) == tb.unsqueeze(-2)).any(-1).double().sum(-1) / k
    return hit.reshape(len(a), -1).mean(1).cpu().numpy()


def sample_latents(cos: Sequence[np.ndarray], eligible: Sequence[np.ndarray], n: int) -> list:
    """[(pair index, latent)]: at most n of the eligible latents of every seed pair's first
    seed, pooled over pairs and evenly spaced in the rank of their matched |cos| (`cos[k]`
    [F]: each latent's partner |cos| in pair k), so matched pairs at every |cos| level are
    drawn; deterministic."""
    pool = [
        (float(c[i]), k, int(i))
        for k, (c, e) in enumerate(zip(cos, eligible, strict=True))
        for i in np.flatnonzero(e)
    ]
    pool.sort(key=lambda t: (-t[0], t[1], t[2]))
    if n < 1 or not pool:
        return []
    idx = np.unique(np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int))
    return [(pool[i][1], pool[i][2]) for i in idx]


def random_partners(
    matched: Sequence[int], candidates: np.ndarray, gen: torch.Generator
) -> list[int | None]:
    """Per matched partner, a uniform draw from `candidates` (latent indices) other than it
    (None when there is no other candidate), from the seeded generator."""
    cands = np.asarray(candidates, dtype=np.int64)
    out: list[int | None] = []
    for j in matched:
        others = cands[cands != j]
        if len(others) == 0:
            out.append(None)
            continue
        out.append(int(others[int(torch.randint(len(others), (1,), generator=gen))]))
    return out


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def compare_pairs(
    matched: Sequence[float] | np.ndarray,
    random: Sequence[float] | np.ndarray,
    higher_is_alike: bool = True,
    *,
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Matched vs random pairs of one score (undefined values, NaN, left out and counted):
    `matched`, `random` (bootstrap CIs of the mean) and `difference`, matched − random if
    higher means more alike, else random − matched (so > 0 always means matched partners
    are more alike than random ones; `compare_to_baseline`, one-sided tests); None where a
    group has no defined value."""
    m, r = _finite(matched), _finite(random)
    boot = {"level": level, "n_resamples": n_resamples, "seed": seed}
    out: dict[str, Any] = {
        "n_undefined": {
            "matched": int(len(np.asarray(matched)) - len(m)),
            "random": int(len(np.asarray(random)) - len(r)),
        },
        "matched": bootstrap_ci(m, **boot) if len(m) else None,
        "random": bootstrap_ci(r, **boot) if len(r) else None,
        "difference": None,
        "difference_is": "matched − random" if higher_is_alike else "random − matched",
    }
    if len(m) and len(r):
        out["difference"] = (
            compare_to_baseline(m, r, **boot)
            if higher_is_alike
            else compare_to_baseline(r, m, **boot)
        )
    return out


def by_cos(
    cos: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    edges: Sequence[float] = COS_EDGES,
    **boot: Any,
) -> list[dict[str, Any]]:
    """A per-pair score binned by the pair's matched |cos| (bins [e_k, e_k+1), the last
    closed): per bin its count and, if any defined value, the bootstrap CI of the mean."""
    c, v = np.asarray(cos, dtype=np.float64), np.asarray(values, dtype=np.float64)
    out = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (c >= lo) & ((c <= hi) if k == len(edges) - 2 else (c < hi))
        vals = v[inside & np.isfinite(v)]
        out.append(
            {
                "bin": f"[{lo:g}, {hi:g}{']' if k == len(edges) - 2 else ')'}",
                "count": int(len(vals)),
                "score": bootstrap_ci(vals, **boot) if len(vals) else None,
            }
        )
    return out

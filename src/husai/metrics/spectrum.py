"""Effective rank of an activation set: how many directions its variance really uses."""

from __future__ import annotations

import torch
from torch import Tensor

from husai.errors import HusaiError
from husai.runtime import single_threaded


def effective_rank(x_ND: Tensor, levels: tuple[float, ...] = (0.9, 0.95, 0.99)) -> dict[str, float]:
    """Participation ratio (Σλ)²/Σλ² of the covariance eigenvalues λ, and the number of
    principal components needed for each cumulative variance level."""
    if x_ND.dim() != 2 or x_ND.shape[0] < 2:
        raise HusaiError(f"effective_rank needs an [n ≥ 2, d] matrix, got {tuple(x_ND.shape)}")
    xc = x_ND.double() - x_ND.double().mean(0)
    with single_threaded():  # LAPACK's eigenvalues vary in the last bits with the threads
        lam = torch.linalg.eigvalsh(xc.T @ xc / (len(xc) - 1)).clamp_min(0).flip(0)
    total = float(lam.sum())
    if total == 0:
        return {"participation_ratio": 0.0, **{f"n_components_{lv:g}": 0.0 for lv in levels}}
    cum = torch.cumsum(lam, 0) / total
    out = {"participation_ratio": total**2 / float((lam**2).sum())}
    for lv in levels:
        out[f"n_components_{lv:g}"] = float(int((cum < lv - 1e-12).sum()) + 1)
    return out

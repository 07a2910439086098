"""Cross-seed dictionary consistency: how well do two SAE dictionaries' latents match?

A dictionary is a decoder matrix [n_latents, d] whose rows are latent directions. Every
metric here compares rows by |cosine| (sign and scale of a latent are arbitrary), computed
in float32 on unit-normalised rows; an all-zero row has cosine 0 with everything.
All scores lie in [0, 1]; higher = more consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from husai.errors import HusaiError
from husai.metrics._validate import ArrayLike, check_block_size, check_threshold, unit_rows

DEFAULT_BLOCK_SIZE = 4096


def _check_same_d(a: torch.Tensor, b: torch.Tensor, names: str = "a and b") -> None:
    if a.shape[1] != b.shape[1]:
        raise HusaiError(
            f"{names} have different widths d: shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _best_match_unit(
    a: torch.Tensor, b: torch.Tensor, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """best_match on already unit-normalised rows; one matmul per block of `block_size` rows."""
    best_a = torch.empty(a.shape[0], dtype=torch.float32, device=a.device)
    best_b = torch.zeros(b.shape[0], dtype=torch.float32, device=b.device)
    bt = b.T  # a transposed view: BLAS reads it without a copy
    for start in range(0, a.shape[0], block_size):
        sim = (a[start : start + block_size] @ bt).abs_()
        best_a[start : start + block_size] = sim.amax(dim=1)
        torch.maximum(best_b, sim.amax(dim=0), out=best_b)
    return best_a.clamp_(max=1.0), best_b.clamp_(max=1.0)


def best_match(
    a: ArrayLike, b: ArrayLike, block_size: int = DEFAULT_BLOCK_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each latent's best |cosine| in the other dictionary (max-|cos|; higher = better matched).

    Returns float32 tensors ``best_a`` [n_a] (``max_j |cos(a_i, b_j)|``) and ``best_b`` [n_b]
    (``max_i |cos(a_i, b_j)|``). Streams over blocks of ``block_size`` rows of ``a``, so peak
    extra memory is ``block_size * n_b`` floats; the full n_a x n_b matrix never exists.
    """
    block_size = check_block_size(block_size)
    ua, ub = unit_rows(a, "a"), unit_rows(b, "b")
    _check_same_d(ua, ub)
    return _best_match_unit(ua, ub.to(ua.device), block_size)


def _pwmcc_from(best_a: torch.Tensor, best_b: torch.Tensor) -> float:
    return 0.5 * (best_a.double().mean().item() + best_b.double().mean().item())


def _shared_from(best_a: torch.Tensor, best_b: torch.Tensor, threshold: float) -> float:
    frac_a = (best_a > threshold).double().mean().item()
    frac_b = (best_b > threshold).double().mean().item()
    return 0.5 * (frac_a + frac_b)


def pwmcc(a: ArrayLike, b: ArrayLike, block_size: int = DEFAULT_BLOCK_SIZE) -> float:
    """Pairwise max cosine (PWMCC): max-|cos|, symmetrised; higher = more consistent.

    ``0.5 * (mean_i best_a[i] + mean_j best_b[j])`` in [0, 1]; 1 iff every latent of each
    dictionary has an exact (up to sign/scale) copy in the other.
    """
    return _pwmcc_from(*best_match(a, b, block_size))


def shared_fraction(
    a: ArrayLike, b: ArrayLike, threshold: float, block_size: int = DEFAULT_BLOCK_SIZE
) -> float:
    """Fraction of latents with a best-match |cos| > ``threshold``; higher = more consistent.

    Symmetrised over both dictionaries: ``0.5 * (frac_a + frac_b)``, in [0, 1].
    """
    threshold = check_threshold(threshold)
    return _shared_from(*best_match(a, b, block_size), threshold)


def _abs_cos_unit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T).abs_().clamp_(max=1.0)


def _hungarian_from_sim(sim: torch.Tensor) -> float:
    cost = sim.cpu().numpy()
    rows, cols = linear_sum_assignment(cost, maximize=True)
    return float(cost[rows, cols].astype(np.float64).mean())


def hungarian_mcc(a: ArrayLike, b: ArrayLike) -> float:
    """Hungarian MCC: mean |cos| over the optimal one-to-one matching; higher = more consistent.

    The matching maximises total |cos| (``scipy.optimize.linear_sum_assignment``). For
    rectangular inputs the mean is over the ``min(n_a, n_b)`` matched pairs. Builds the full
    n_a x n_b matrix and runs an O(n^3) assignment: meant for up to a few thousand latents.
    For square inputs ``hungarian_mcc <= pwmcc``.
    """
    ua, ub = unit_rows(a, "a"), unit_rows(b, "b")
    _check_same_d(ua, ub)
    return _hungarian_from_sim(_abs_cos_unit(ua, ub.to(ua.device)))


def _upper(matrix: np.ndarray, pairs: list[tuple[int, int]]) -> list[float]:
    return [float(matrix[i, j]) for i, j in pairs]


def pairwise(
    dicts: Sequence[ArrayLike],
    thresholds: Sequence[float] = (0.5, 0.7, 0.9),
    block_size: int = DEFAULT_BLOCK_SIZE,
    hungarian: bool = True,
) -> dict[str, Any]:
    """All-pairs consistency of several dictionaries (e.g. one per seed); higher = more consistent.

    Returns a dict with
      - ``"n"``: number of dictionaries; ``"pairs"``: ``[(i, j), ...]`` for i < j, lexicographic;
      - ``"thresholds"``: the thresholds as floats;
      - ``"pwmcc"``: ``{"matrix": n x n ndarray, "values": [float per pair]}``;
      - ``"hungarian_mcc"``: same layout, or ``None`` when ``hungarian=False``;
      - ``"shared_fraction"``: ``{threshold: {"matrix": ..., "values": ...}}``.
    Matrices are symmetric float64 with diagonal 1.0 by convention. ``best_match`` is computed
    once per pair; with ``hungarian=True`` it is read off the full |cos| matrix the assignment
    needs anyway, so each pair costs one matmul. That full matrix (and the O(n^3) assignment)
    is only affordable for a few thousand latents: pass ``hungarian=False`` for large
    dictionaries to stream in ``block_size`` row blocks instead.
    """
    if len(dicts) < 2:
        raise HusaiError(f"pairwise needs at least 2 dictionaries, got {len(dicts)}")
    block_size = check_block_size(block_size)
    ths = [check_threshold(t) for t in thresholds]
    units = [unit_rows(x, f"dictionary {k}") for k, x in enumerate(dicts)]
    for k, u in enumerate(units[1:], start=1):
        _check_same_d(units[0], u, f"dictionaries 0 and {k}")

    n = len(units)
    pairs = list(combinations(range(n), 2))
    pw = np.eye(n)
    hu = np.eye(n) if hungarian else None
    sf = {t: np.eye(n) for t in ths}
    for i, j in pairs:
        ua, ub = units[i], units[j].to(units[i].device)
        if hungarian:
            sim = _abs_cos_unit(ua, ub)
            best_a, best_b = sim.amax(dim=1), sim.amax(dim=0)
            hu[i, j] = hu[j, i] = _hungarian_from_sim(sim)
            del sim
        else:
            best_a, best_b = _best_match_unit(ua, ub, block_size)
        pw[i, j] = pw[j, i] = _pwmcc_from(best_a, best_b)
        for t in ths:
            sf[t][i, j] = sf[t][j, i] = _shared_from(best_a, best_b, t)

    def entry(m: np.ndarray) -> dict[str, Any]:
        return {"matrix": m, "values": _upper(m, pairs)}

    return {
        "n": n,
        "pairs": pairs,
        "thresholds": ths,
        "pwmcc": entry(pw),
        "hungarian_mcc": entry(hu) if hu is not None else None,
        "shared_fraction": {t: entry(m) for t, m in sf.items()},
    }

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

from husai.errors import HusaiError
from husai.metrics._blocks import (
    DEFAULT_BLOCK_SIZE,
    best_match_scaled,
    check_same_d,
    scaled_rows,
    top_candidates_scaled,
)
from husai.metrics.matching import (
    DEFAULT_TOP_M,
    Matching,
    assignment,
    assignment_from_candidates,
    exact_from_sim,
    fallback_scores,
    resolve_method,
)
from husai.metrics.validate import ArrayLike, as_tensor, check_block_size, check_threshold


def best_match(
    a: ArrayLike, b: ArrayLike, block_size: int = DEFAULT_BLOCK_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each latent's best |cosine| in the other dictionary (max-|cos|; higher = better matched).

    Returns float32 tensors ``best_a`` [n_a] (``max_j |cos(a_i, b_j)|``) and ``best_b`` [n_b]
    (``max_i |cos(a_i, b_j)|``). Streams over blocks of ``block_size`` rows of ``a`` (one
    float32 matmul each, all torch threads), so peak extra memory is ``block_size * n_b``
    floats; the full n_a x n_b matrix never exists and float32 inputs are not copied.
    """
    block_size = check_block_size(block_size)
    (a32, ia), (b32, ib) = scaled_rows(a, "a"), scaled_rows(b, "b")
    check_same_d(a32, b32)
    return best_match_scaled(a32, ia, b32.to(a32.device), ib.to(a32.device), block_size)


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


def hungarian_mcc(
    a: ArrayLike,
    b: ArrayLike,
    method: str = "auto",
    top_m: int = DEFAULT_TOP_M,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> float:
    """Hungarian MCC: mean |cos| over a one-to-one matching; higher = more consistent.

    The matching maximises total |cos| (see ``matching.assignment``): ``method="exact"`` is
    scipy's ``linear_sum_assignment`` on the full matrix (O(n^3), fine up to ~8k latents),
    ``"sparse"`` restricts each latent to its ``top_m`` candidates (streamed) and is exact only
    when the optimum uses candidate pairs, ``"auto"`` picks exact iff both sizes are
    <= ``EXACT_MAX`` (8192). For rectangular inputs the mean is over ``min(n_a, n_b)`` pairs.
    For square inputs ``hungarian_mcc <= pwmcc``.
    """
    return assignment(a, b, method=method, top_m=top_m, block_size=block_size).mean


def _upper(matrix: np.ndarray, pairs: list[tuple[int, int]]) -> list[float]:
    return [float(matrix[i, j]) for i, j in pairs]


def _pair_scores(
    a32: torch.Tensor,
    ia: torch.Tensor,
    b32: torch.Tensor,
    ib: torch.Tensor,
    method: str | None,
    top_m: int,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, Matching | None]:
    """best_a, best_b and (unless method is None) the one-to-one matching, in one pass."""
    if method is None:
        return (*best_match_scaled(a32, ia, b32, ib, block_size), None)
    if resolve_method(method, a32.shape[0], b32.shape[0]) == "exact":
        sim = _abs_cos_unit(a32 * ia[:, None], b32 * ib[:, None])
        return sim.amax(dim=1), sim.amax(dim=0), exact_from_sim(sim)
    ri, rv, ci, cv = top_candidates_scaled(a32, ia, b32, ib, top_m, block_size)
    match = assignment_from_candidates(
        a32.shape[0], b32.shape[0], ri, rv, ci, cv, fallback_scores(a32, ia, b32, ib), top_m
    )
    return rv[:, 0].contiguous(), cv[0].contiguous(), match


def pairwise(
    dicts: Sequence[ArrayLike],
    thresholds: Sequence[float] = (0.5, 0.7, 0.9),
    block_size: int = DEFAULT_BLOCK_SIZE,
    hungarian: bool | str = True,
    top_m: int = DEFAULT_TOP_M,
) -> dict[str, Any]:
    """All-pairs consistency of several dictionaries (e.g. one per seed); higher = more consistent.

    Returns a dict with
      - ``"n"``: number of dictionaries; ``"pairs"``: ``[(i, j), ...]`` for i < j, lexicographic;
      - ``"thresholds"``: the thresholds as floats;
      - ``"pwmcc"``: ``{"matrix": n x n ndarray, "values": [float per pair]}``;
      - ``"hungarian_mcc"``: same layout plus ``"methods"`` (one description per pair), or
        ``None`` when ``hungarian=False``;
      - ``"shared_fraction"``: ``{threshold: {"matrix": ..., "values": ...}}``;
      - ``"matchings"``: ``{(i, j): Matching}`` (empty when ``hungarian=False``);
      - ``"best"``: ``{(i, j): (best_a, best_b)}`` float32 tensors, each latent's best |cos|.
    Matrices are symmetric float64 with diagonal 1.0 by convention. ``hungarian``: True (=
    "auto"), False, or an ``assignment`` method. Each pair costs one pass of block matmuls:
    with the exact assignment best matches are read off the full |cos| matrix it needs anyway;
    with the sparse one they are the top candidates; without, they are streamed.
    """
    if len(dicts) < 2:
        raise HusaiError(f"pairwise needs at least 2 dictionaries, got {len(dicts)}")
    block_size = check_block_size(block_size)
    method = "auto" if hungarian is True else (None if hungarian is False else hungarian)
    if method is not None:
        resolve_method(method, 1, 1)
    ths = [check_threshold(t) for t in thresholds]
    prepped = [scaled_rows(x, f"dictionary {k}") for k, x in enumerate(dicts)]
    for k, (u, _) in enumerate(prepped[1:], start=1):
        check_same_d(prepped[0][0], u, f"dictionaries 0 and {k}")

    n = len(prepped)
    pairs = list(combinations(range(n), 2))
    pw = np.eye(n)
    hu = np.eye(n) if method is not None else None
    sf = {t: np.eye(n) for t in ths}
    matchings: dict[tuple[int, int], Matching] = {}
    best: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for i, j in pairs:
        (a32, ia), (b32, ib) = prepped[i], prepped[j]
        dev = a32.device
        best_a, best_b, match = _pair_scores(
            a32, ia, b32.to(dev), ib.to(dev), method, top_m, block_size
        )
        if match is not None:
            hu[i, j] = hu[j, i] = match.mean
            matchings[(i, j)] = match
        best_a, best_b = best_a.clamp(max=1.0), best_b.clamp(max=1.0)
        best[(i, j)] = (best_a, best_b)
        pw[i, j] = pw[j, i] = _pwmcc_from(best_a, best_b)
        for t in ths:
            sf[t][i, j] = sf[t][j, i] = _shared_from(best_a, best_b, t)

    def entry(m: np.ndarray) -> dict[str, Any]:
        return {"matrix": m, "values": _upper(m, pairs)}

    hung = None
    if hu is not None:
        hung = {**entry(hu), "methods": [matchings[p].describe() for p in pairs]}
    return {
        "n": n,
        "pairs": pairs,
        "thresholds": ths,
        "pwmcc": entry(pw),
        "hungarian_mcc": hung,
        "shared_fraction": {t: entry(m) for t, m in sf.items()},
        "matchings": matchings,
        "best": best,
    }


def alive_hungarian_mcc(
    a: ArrayLike,
    b: ArrayLike,
    alive_a: ArrayLike,
    alive_b: ArrayLike,
    method: str = "auto",
    top_m: int = DEFAULT_TOP_M,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> float:
    """Hungarian MCC over the alive latents, a dead latent counting as unmatched (|cos| 0).

    The one-to-one matching of maximum total |cos| between a's alive rows and b's alive rows
    (``assignment``), summed and divided by min(n_a, n_b), the pair count of a full
    matching: equal to ``hungarian_mcc`` when every latent is alive, and a dictionary of
    parked dead latents cannot score on them. ``alive_a`` / ``alive_b``: bool [n_a] / [n_b]
    (e.g. fired on some evaluation row). Higher = more consistent; 0 if either has none.
    """
    ta, tb = as_tensor(a, "a"), as_tensor(b, "b")
    ma = torch.as_tensor(np.asarray(alive_a), dtype=torch.bool)
    mb = torch.as_tensor(np.asarray(alive_b), dtype=torch.bool)
    for t, m, name in ((ta, ma, "a"), (tb, mb, "b")):
        if t.ndim != 2 or m.shape != (t.shape[0],):
            raise HusaiError(
                f"alive_{name} must be bool [{t.shape[0] if t.ndim else '?'}] for dictionary "
                f"{name} of shape {tuple(t.shape)}, got {tuple(m.shape)}"
            )
    n = min(ta.shape[0], tb.shape[0])
    if n == 0 or not ma.any() or not mb.any():
        return 0.0
    match = assignment(ta[ma], tb[mb], method=method, top_m=top_m, block_size=block_size)
    return float(match.scores.sum()) / n

"""One-to-one matching of two dictionaries' latents by |cosine| (or of any score matrix).

``assignment`` maximises the total score of a full one-to-one matching (every latent of the
smaller dictionary gets a distinct partner):

- ``method="exact"``: ``scipy.optimize.linear_sum_assignment`` on the full n_a x n_b matrix.
  O(n^3) time and n_a * n_b memory: fine up to ~8k latents (``EXACT_MAX``).
- ``method="sparse"``: candidate edges are each latent's ``top_m`` best partners in the other
  dictionary, found in both directions with the streamed block matmul (memory
  ``block_size * n_b``), and the sparse problem is solved by
  ``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (LAPJVsp). The result is the
  exact optimum whenever the optimal matching uses only candidate edges (always when
  ``top_m >= max(n_a, n_b)``); ``benchmarks/bench_metrics.py`` measures how often it is.
- ``method="auto"``: exact iff ``max(n_a, n_b) <= EXACT_MAX``, else sparse.

Infeasibility: the candidate graph may have no full matching. We always add fallback edges
(k, k) for k < min(n_a, n_b), scored by their true |cos| but with a cost penalty larger than
any possible gain (``min(n_a, n_b) * range + 1``), so the solver uses the fewest fallback edges
possible and none when the candidates admit a full matching. ``Matching.n_fallback`` counts
them; a nonzero count means the result may be below the optimum (raise ``top_m``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from husai.errors import HusaiError
from husai.metrics._blocks import (
    DEFAULT_BLOCK_SIZE,
    check_same_d,
    scaled_rows,
    top_candidates_scaled,
)
from husai.metrics.validate import ArrayLike, as_tensor, check_block_size, check_finite

EXACT_MAX = 8192  # largest side solved exactly by method="auto"
DEFAULT_TOP_M = 16  # candidates per latent (each direction) for method="sparse"
METHODS = ("exact", "sparse", "auto")


@dataclass(frozen=True)
class Matching:
    """A one-to-one matching: pair k is ``(rows[k], cols[k])`` with score ``scores[k]``."""

    rows: np.ndarray  # int64 [n_pairs], indices into a (sorted)
    cols: np.ndarray  # int64 [n_pairs], indices into b
    scores: np.ndarray  # float64 [n_pairs], |cos| (or the given score) of each pair
    method: str  # "exact" | "sparse"
    top_m: int | None = None  # candidates per latent (sparse only)
    n_fallback: int = 0  # pairs taken from the fallback (k, k) edges (sparse only)

    @property
    def mean(self) -> float:
        """Mean score of the matched pairs (Hungarian MCC for |cos|); higher = more consistent."""
        return float(self.scores.mean())

    def partner_of_rows(self, n_a: int) -> np.ndarray:
        """[n_a] index of each row's partner in b, -1 where unmatched."""
        out = np.full(n_a, -1, dtype=np.int64)
        out[self.rows] = self.cols
        return out

    def describe(self) -> str:
        if self.method == "exact":
            return "exact (scipy linear_sum_assignment)"
        return (
            f"sparse (top-{self.top_m} candidates per latent, scipy "
            f"min_weight_full_bipartite_matching; {self.n_fallback} fallback pairs)"
        )


def resolve_method(method: str, n_a: int, n_b: int) -> str:
    if method not in METHODS:
        raise HusaiError(f"assignment method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "exact" if max(n_a, n_b) <= EXACT_MAX else "sparse"
    return method


def _check_top_m(top_m: int) -> int:
    if isinstance(top_m, bool) or not isinstance(top_m, int) or top_m < 1:
        raise HusaiError(f"top_m must be a positive integer, got {top_m!r}")
    return top_m


def exact_from_sim(sim: torch.Tensor | np.ndarray) -> Matching:
    """Exact maximum-score matching of a dense score matrix [n_a, n_b]."""
    score = sim.cpu().numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)
    rows, cols = linear_sum_assignment(score, maximize=True)
    return Matching(
        rows.astype(np.int64), cols.astype(np.int64), score[rows, cols].astype(np.float64), "exact"
    )


def assignment_from_candidates(
    n_a: int,
    n_b: int,
    row_idx: torch.Tensor,
    row_val: torch.Tensor,
    col_idx: torch.Tensor,
    col_val: torch.Tensor,
    fallback: np.ndarray,
    top_m: int,
) -> Matching:
    """Sparse maximum-score matching over candidate edges (see the module docstring).

    ``row_idx``/``row_val`` [n_a, m]: each row's candidate columns and scores; ``col_idx``/
    ``col_val`` [m', n_b]: each column's candidate rows; ``fallback`` [min(n_a, n_b)]: score of
    the fallback edge (k, k).
    """
    m_a, m_b = row_idx.shape[1], col_idx.shape[0]
    r = np.concatenate([np.repeat(np.arange(n_a), m_a), col_idx.numpy().ravel()])
    c = np.concatenate([row_idx.numpy().ravel(), np.tile(np.arange(n_b), m_b)])
    v = np.concatenate([row_val.numpy().ravel(), col_val.numpy().ravel()]).astype(np.float64)
    keys, first = np.unique(r * n_b + c, return_index=True)
    vals = v[first]
    k = np.arange(min(n_a, n_b))
    fb_keys = k * n_b + k
    extra = ~np.isin(fb_keys, keys)
    all_keys = np.concatenate([keys, fb_keys[extra]])
    all_vals = np.concatenate([vals, np.asarray(fallback, dtype=np.float64)[extra]])
    hi = float(all_vals.max())
    spread = hi - float(all_vals.min())
    cost = 1.0 + (hi - all_vals)  # >= 1: LAPJVsp needs nonzero weights
    cost[len(keys) :] += len(k) * spread + 1.0  # fallback penalty beats any candidate gain
    graph = csr_matrix((cost, (all_keys // n_b, all_keys % n_b)), shape=(n_a, n_b))
    rows, cols = min_weight_full_bipartite_matching(graph)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    order = np.argsort(all_keys)
    pos = order[np.searchsorted(all_keys, rows * n_b + cols, sorter=order)]
    return Matching(rows, cols, all_vals[pos], "sparse", top_m, int((pos >= len(keys)).sum()))


def _sim_candidates(
    sim: torch.Tensor, top_m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rv, ri = sim.topk(min(top_m, sim.shape[1]), dim=1)
    cv, ci = sim.topk(min(top_m, sim.shape[0]), dim=0)
    return ri, rv, ci, cv


def assignment(
    a: ArrayLike,
    b: ArrayLike | None = None,
    method: str = "exact",
    top_m: int = DEFAULT_TOP_M,
    block_size: int = DEFAULT_BLOCK_SIZE,
    signed: bool = False,
) -> Matching:
    """Maximum-total-|cos| one-to-one matching of the rows of ``a`` and ``b`` (``signed``:
    maximum total signed cosine, Song et al.'s PW-MCC matching).

    With ``b=None``, ``a`` is itself a score matrix [n_a, n_b] to maximise (e.g. |cos| or
    activation correlations). ``method``: "exact" | "sparse" | "auto" (module docstring).
    Scores of dictionary rows are |cos| in [0, 1] (signed: cos in [-1, 1]); higher = more
    consistent.
    """
    top_m = _check_top_m(top_m)
    block_size = check_block_size(block_size)
    if b is None:
        sim = as_tensor(a, "sim")
        if sim.ndim != 2 or 0 in sim.shape:
            raise HusaiError(f"sim must be a non-empty [n_a, n_b] matrix, got {tuple(sim.shape)}")
        check_finite(sim, "sim")
        if resolve_method(method, *sim.shape) == "exact":
            return exact_from_sim(sim)
        sim = sim.double().cpu()
        k = min(sim.shape)
        fallback = sim[torch.arange(k), torch.arange(k)].numpy()
        return assignment_from_candidates(*sim.shape, *_sim_candidates(sim, top_m), fallback, top_m)
    (a32, ia), (b32, ib) = scaled_rows(a, "a"), scaled_rows(b, "b")
    check_same_d(a32, b32)
    b32, ib = b32.to(a32.device), ib.to(a32.device)
    n_a, n_b = a32.shape[0], b32.shape[0]
    if resolve_method(method, n_a, n_b) == "exact":
        sim = torch.mm(a32 * ia[:, None], (b32 * ib[:, None]).T)
        sim = sim.clamp_(-1.0, 1.0) if signed else sim.abs_().clamp_(max=1.0)
        return exact_from_sim(sim)
    cands = top_candidates_scaled(a32, ia, b32, ib, top_m, block_size, signed=signed)
    fallback = fallback_scores(a32, ia, b32, ib, signed)
    return assignment_from_candidates(n_a, n_b, *(t.cpu() for t in cands), fallback, top_m)


def fallback_scores(
    a: torch.Tensor,
    inv_a: torch.Tensor,
    b: torch.Tensor,
    inv_b: torch.Tensor,
    signed: bool = False,
) -> np.ndarray:
    """|cos(a_k, b_k)| (signed: cos) for k < min(n_a, n_b): the fallback edges' scores."""
    k = min(a.shape[0], b.shape[0])
    spans = [(s, min(s + 4096, k)) for s in range(0, k, 4096)]  # bounded temporaries
    dots = torch.cat([(a[s:e] * b[s:e]).sum(dim=1) for s, e in spans])
    dots = dots * inv_a[:k] * inv_b[:k]
    dots = dots.clamp_(-1.0, 1.0) if signed else dots.abs_().clamp_(max=1.0)
    return dots.double().cpu().numpy()

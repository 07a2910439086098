"""Streamed |cosine| between the rows of two dictionaries, one block of rows at a time.

Shared by `consistency` and `matching`. Inputs are "scaled rows": the caller's float32 matrix
(not copied) plus a per-row inverse norm, so ``rows[i] * inv[i]`` is unit (zero rows: inv 0).
Each block is one float32 matmul ``[block, d] @ [d, n_b]`` (torch uses all intra-op threads)
followed by in-place |.| and column scaling; peak extra memory is ``block * n_b`` floats.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from husai.errors import HusaiError
from husai.metrics.validate import ArrayLike, as_tensor, check_finite, unit_rows

DEFAULT_BLOCK_SIZE = 1024  # rows per block: 1024 x 65,536 float32 = 256 MiB (bench_metrics.py)
_TINY32 = 1e-15  # float32 row norms below this go through the careful (copying) path


def scaled_rows(x: ArrayLike, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated [n, d] float32 rows and their inverse norms [n] (0 for all-zero rows).

    float32 input with ordinary norms is used as is (no copy); anything else (other dtypes,
    tiny or overflowing norms) is unit-normalised by ``unit_rows`` (one copy), inv = 1.
    """
    t = as_tensor(x, name)
    if t.ndim != 2:
        raise HusaiError(f"{name} must be a 2-D [n_latents, d] matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise HusaiError(f"{name} is empty (shape {tuple(t.shape)})")
    if t.dtype == torch.float32:
        # a finite row norm implies finite entries (NaN/Inf propagate), so the common case needs
        # no elementwise isfinite pass (which allocates several n x d temporaries)
        norm = torch.linalg.vector_norm(t, dim=1)
        zero = norm == 0
        finite = bool(torch.isfinite(norm).all())
        if not finite:
            check_finite(t, name)
        ok = finite and bool(((norm >= _TINY32) | zero).all())
        if ok and bool(zero.any()):
            ok = float(t[zero].abs().max()) == 0.0  # underflowed squares, not true zeros
        if ok:
            return t, torch.where(zero, 0.0, 1.0 / torch.where(zero, 1.0, norm))
    else:
        check_finite(t, name)
    u = unit_rows(t, name)
    return u, torch.ones(u.shape[0], dtype=torch.float32, device=u.device)


def check_same_d(a: torch.Tensor, b: torch.Tensor, names: str = "a and b") -> None:
    if a.shape[1] != b.shape[1]:
        raise HusaiError(
            f"{names} have different widths d: shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )


def abs_cos_blocks(
    a: torch.Tensor,
    inv_a: torch.Tensor,
    b: torch.Tensor,
    inv_b: torch.Tensor,
    block_size: int,
    signed: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, sim)`` with ``sim[r, j] = |cos(a[start + r], b[j])|`` (not clamped;
    ``signed=True``: the signed cosine).

    ``sim`` is a view of one reused buffer: consume it before asking for the next block (this
    keeps exactly one block alive and avoids page-faulting a fresh block every time).
    """
    bt = b.T  # a transposed view: BLAS reads it without a copy
    buf = torch.empty(min(block_size, a.shape[0]), b.shape[0], dtype=torch.float32, device=a.device)
    for start in range(0, a.shape[0], block_size):
        blk = a[start : start + block_size] * inv_a[start : start + block_size, None]
        sim = torch.mm(blk, bt, out=buf[: blk.shape[0]])
        yield start, (sim if signed else sim.abs_()).mul_(inv_b)


def best_match_scaled(
    a: torch.Tensor, inv_a: torch.Tensor, b: torch.Tensor, inv_b: torch.Tensor, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max |cos| of each row of a over b (``best_a`` [n_a]) and of b over a (``best_b`` [n_b])."""
    best_a = torch.empty(a.shape[0], dtype=torch.float32, device=a.device)
    best_b = torch.zeros(b.shape[0], dtype=torch.float32, device=b.device)
    for start, sim in abs_cos_blocks(a, inv_a, b, inv_b, block_size):
        best_a[start : start + sim.shape[0]] = sim.amax(dim=1)
        torch.maximum(best_b, sim.amax(dim=0), out=best_b)
    return best_a.clamp_(max=1.0), best_b.clamp_(max=1.0)


def top_candidates_scaled(
    a: torch.Tensor,
    inv_a: torch.Tensor,
    b: torch.Tensor,
    inv_b: torch.Tensor,
    top_m: int,
    block_size: int,
    signed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-m partners of every row of a in b and of every row of b in a, by |cos| (``signed``:
    by signed cosine), streamed.

    Returns ``row_idx`` [n_a, m_a] (column indices into b), ``row_val`` [n_a, m_a],
    ``col_idx`` [m_b, n_b] (row indices into a), ``col_val`` [m_b, n_b], with
    ``m_a = min(top_m, n_b)``, ``m_b = min(top_m, n_a)``; values sorted descending, clamped to
    [-1, 1].
    """
    n_a, n_b = a.shape[0], b.shape[0]
    m_a, m_b = min(top_m, n_b), min(top_m, n_a)
    row_idx = torch.empty(n_a, m_a, dtype=torch.int64)
    row_val = torch.empty(n_a, m_a, dtype=torch.float32)
    col_val = torch.full((0, n_b), -1.0)
    col_idx = torch.empty(0, n_b, dtype=torch.int64)
    for start, sim in abs_cos_blocks(a, inv_a, b, inv_b, block_size, signed):
        v, i = sim.topk(m_a, dim=1)
        row_val[start : start + len(v)], row_idx[start : start + len(v)] = v, i
        v, i = sim.topk(min(m_b, sim.shape[0]), dim=0)
        v, i = torch.cat([col_val, v]), torch.cat([col_idx, i + start])
        keep = v.topk(min(m_b, v.shape[0]), dim=0).indices
        col_val, col_idx = v.gather(0, keep), i.gather(0, keep)
    return row_idx, row_val.clamp_(-1.0, 1.0), col_idx, col_val.clamp_(-1.0, 1.0)

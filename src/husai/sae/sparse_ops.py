"""The TopK family's hot kernels on the CPU: row-wise top-k selection and the k-sparse
weight gradients. Each computes what the plain torch op computes (the tests compare them
with it, values, indices and gradients), only faster for k ≪ F.

`topk_rows`: torch.topk over rows of F with k ≪ F is a per-row partial sort (~20 ns an
element here), several times the encoder matmul that produced the row. Threshold, then
select: split each row into G ≥ k strided chunks; any t that at least k chunk maxima reach
is a lower bound of the row's k-th largest value v_k (k chunks hold an entry ≥ t), so the
entries ≥ t hold the top k. t starts at the smallest chunk maximum and is bisected towards
the k-th largest (5 halvings, under half of torch.topk's time over the maxima), leaving a
few more than k candidates (≈ 40 of 1024 for k = 32, G = 4k on Gaussian rows; never fewer
than k). One int64 radix sort of the candidates by (row, value descending, column
ascending) then gives each row's first k. So the result is the k largest values in
descending order, ties broken by the lower index (−0.0 ranks below +0.0): the values are
always torch.topk's, the indices too unless the k-th largest value is tied, where
torch.topk picks some of the tied entries (its rule is unspecified) and this the lowest.
Rows with NaN or ±inf at the threshold, dtypes other than float32 / bfloat16 / float16,
tensors off the CPU, and shapes where no G divides F fall back to torch.topk. BatchTopK's
batch-wide selection is the same over each seed's B·F pre-activations as one row (k·B of
them; `by_index` lists them in (input, latent) order).

`sparse_t_matmul` (`bag_t_matmul` for any number of codes per input): the weight gradients
Σ_b g_bf·x_b of k-sparse codes are the codes' transpose (a sparse [S·F, S·B] matrix) times
a dense matrix. Grouping the codes by latent (`ColumnGroups`: one stable sort, shared by
the encoder's and the decoder's gradient of a step) turns that product into an
`embedding_bag` sum: latent f's bag holds the rows b it fired on, weighted by g_bf. That
reads each touched row of the dense matrix once (no [S·B·K, D] products materialised and
index-added) and ran 4× faster than torch's CSR matmul here. `csr_rows` builds the codes
as a CSR matrix for the sampled product (the values' gradient). `SparseDecode` (k codes
per input) and `BagDecode` (any number per bag, e.g. BatchTopK's inputs or Matryoshka's
(input, prefix) pairs) decode with them.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as fn
from torch import Tensor

from husai.sae import native

FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # exact in a float32's bits
CHUNKS_PER_K = 4  # G ≈ 4k strided chunks: measured fastest of k, 2k, 4k, 8k at F 1024–4608
# the native kernel parallelises over rows: below this many (BatchTopK's one row per seed),
# the torch path's global sort is faster (measured: 5 rows of 262,144, k 8192: 1.7 vs 3.8 ms)
NATIVE_MIN_ROWS = 64
BISECT_STEPS = 5  # threshold refinement: measured fastest of 2–6 at F 1024 (4k chunks)


def _n_chunks(F: int, k: int) -> int | None:
    """G: the divisor of F nearest CHUNKS_PER_K·k with k ≤ G ≤ F / 2 (None: no such G)."""
    small = [d for d in range(1, math.isqrt(F) + 1) if F % d == 0]
    divisors = sorted(g for d in small for g in {d, F // d} if k <= g <= F // 2)
    return min(divisors, key=lambda g: abs(g - CHUNKS_PER_K * k)) if divisors else None


def _chunk_threshold(p_RF: Tensor, k: int, G: int) -> Tensor:
    """[R, 1]: per row a t with at least k of the G strided chunk maxima ≥ t, hence at
    least k entries ≥ t. Starts at the smallest chunk maximum and bisects towards the
    k-th largest (BISECT_STEPS halvings; cheaper than torch.topk of the maxima, a few
    more candidates). NaN or ±inf in a row make its t non-finite."""
    R, F = p_RF.shape
    chunk_max = p_RF.view(R, F // G, G).amax(1)  # chunk c: entries c, c + G, c + 2G, …
    lo = chunk_max.amin(1, keepdim=True)  # all G ≥ k maxima are ≥ lo
    if G > k:
        hi = chunk_max.amax(1, keepdim=True)
        for _ in range(BISECT_STEPS):
            mid = lo + (hi - lo) * 0.5
            ok = (chunk_max >= mid).sum(1, keepdim=True) >= k
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return lo


def _first_k(
    rows: Tensor, cols: Tensor, v: Tensor, R: int, k: int, by_index: bool = False
) -> tuple[Tensor, Tensor]:
    """[R, k] values and columns: each row's k largest candidates, values descending (or,
    `by_index`, columns ascending), ties to the lower column. Candidates (row, col, value)
    come row-major (rows ascending, columns ascending within a row), at least k per row."""
    # one int64 sort key per candidate: row, then value descending (the float's bits made
    # order-preserving), then (a stable sort) column ascending
    bits = v.float().view(torch.int32).long()
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in v
    order = torch.sort((rows << 32) | (0x7FFFFFFF - ordered), stable=True).indices
    counts = torch.bincount(rows, minlength=R)
    sel = order[(counts.cumsum(0) - counts).unsqueeze(1) + torch.arange(k, device=v.device)]
    if by_index:  # the chosen candidates in their own (row-major) order
        keep = torch.zeros(len(v), dtype=torch.bool, device=v.device)
        sel = keep.index_fill_(0, sel.reshape(-1), True).nonzero().view(R, k)
    return v[sel], cols[sel]


def topk_rows(pre: Tensor, k: int, by_index: bool = False) -> tuple[Tensor, Tensor]:
    """(values, indices) of the k largest entries along the last dim, values descending:
    torch.topk(pre, k), ties broken by the lower index (see the module docstring).
    `by_index`: the same k entries in order of their index instead."""
    F = pre.shape[-1]
    if pre.numel() >= NATIVE_MIN_ROWS * F and pre.dtype in FAST_DTYPES:
        # the native kernel on float32 (bf16 / fp16 widen exactly; values narrow back)
        out = native.topk_rows(pre.reshape(-1, F).float(), k, by_index)
        if out is not None:
            vals = out[0].to(pre.dtype).view(*pre.shape[:-1], k)
            return vals, out[1].view(*pre.shape[:-1], k)
    fast = pre.device.type == "cpu" and pre.dtype in FAST_DTYPES and pre.numel() > 0
    G = _n_chunks(F, k) if fast else None
    if G is not None:
        p = pre.reshape(-1, F)
        t = _chunk_threshold(p, k, G)
        if torch.isfinite(t).all():  # else NaN or inf: torch.topk's own rules
            rows, cols = (p >= t).nonzero(as_tuple=True)  # row-major: by row, then column
            vals, idx = _first_k(rows, cols, p[rows, cols], p.shape[0], k, by_index)
            return vals.view(*pre.shape[:-1], k), idx.view(*pre.shape[:-1], k)
    vals, idx = pre.topk(k, dim=-1)
    if by_index:
        idx, order = idx.sort(dim=-1)
        vals = vals.gather(-1, order)
    return vals, idx


def csr_rows(flat_RK: Tensor, values_RK: Tensor, n_cols: int) -> Tensor:
    """[R, n_cols] CSR matrix with row r holding values_RK[r] at columns flat_RK[r]
    (K distinct columns per row)."""
    R, K = flat_RK.shape
    crow = torch.arange(0, R * K + 1, K, device=flat_RK.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, flat_RK.reshape(-1), values_RK.reshape(-1), (R, n_cols)
        )


class ColumnGroups:
    """The entries of a sparse pattern (their column indices `cols`, any shape, < n_cols)
    grouped by column, built on first use and then shared: every transposed product with
    the same columns (`sparse_t_matmul`, `bag_t_matmul`) reuses one stable sort. `set`
    gives it the columns."""

    def __init__(self, n_cols: int) -> None:
        self.n_cols = n_cols
        self.cols: Tensor | None = None
        self._built: tuple[Tensor, Tensor] | None = None

    def set(self, cols: Tensor) -> ColumnGroups:
        self.cols, self._built = cols, None
        return self

    def get(self) -> tuple[Tensor, Tensor]:
        """(order, offsets): the flat entry positions sorted by column (stable: positions
        ascending within a column) and each column's first place in that order [n_cols]."""
        if self._built is None:
            if self.cols is None:
                raise ValueError("ColumnGroups.get before set")
            cols = self.cols.reshape(-1)
            self._built = native.group_by_column(cols, self.n_cols)
            if self._built is None:
                order = torch.sort(cols, stable=True).indices
                counts = torch.bincount(cols, minlength=self.n_cols)
                self._built = (order, counts.cumsum(0) - counts)
        return self._built


def _grouped_sum(groups: ColumnGroups, rows: Tensor, values: Tensor, dense_RD: Tensor) -> Tensor:
    """[n_cols, D]: column f sums values[n] · dense[rows[n]] over its entries n (in entry
    order) — one embedding_bag whose bags are the columns."""
    order, offsets = groups.get()
    weights = values.reshape(-1)[order].to(dense_RD.dtype)
    return fn.embedding_bag(rows, dense_RD, offsets, per_sample_weights=weights, mode="sum")


def sparse_t_matmul(
    flat_RK: Tensor,
    values_RK: Tensor,
    dense_RD: Tensor,
    n_cols: int,
    groups: ColumnGroups | None = None,
) -> Tensor:
    """[n_cols, D]: Aᵀ · dense with A = csr_rows(flat, values): row f sums
    values[r, j] · dense[r] over the (r, j) with flat[r, j] = f, in order of r (0 where f
    never occurs) — one `embedding_bag` over the entries grouped by column (`groups`,
    built here when not given; it must hold this flat). Off the CPU: the index_add this
    replaces (untested there)."""
    R, K = flat_RK.shape
    flat = flat_RK.reshape(-1)
    if flat.device.type != "cpu":
        contrib = (values_RK.unsqueeze(-1) * dense_RD.unsqueeze(1)).reshape(R * K, -1)
        return dense_RD.new_zeros(n_cols, dense_RD.shape[1]).index_add_(0, flat, contrib)
    groups = groups or ColumnGroups(n_cols).set(flat)
    return _grouped_sum(groups, groups.get()[0] // K, values_RK, dense_RD)


def bag_t_matmul(
    cols_N: Tensor,
    rows_N: Tensor,
    values_N: Tensor,
    dense_RD: Tensor,
    n_cols: int,
    groups: ColumnGroups | None = None,
) -> Tensor:
    """[n_cols, D]: Σ_n values[n] · dense[rows[n]] into row cols[n] — `sparse_t_matmul` for
    entries listed one by one (any number per row; `groups` holding cols_N, or None)."""
    if cols_N.device.type != "cpu":
        contrib = values_N.unsqueeze(-1) * dense_RD[rows_N]
        return dense_RD.new_zeros(n_cols, dense_RD.shape[1]).index_add_(0, cols_N, contrib)
    groups = groups or ColumnGroups(n_cols).set(cols_N)
    return _grouped_sum(groups, rows_N[groups.get()[0]], values_N, dense_RD)


class BagDecode(torch.autograd.Function):
    """(vals [N], cols [N], bags [N] non-decreasing, n_bags, W [n_cols, O], groups) →
    [n_bags, O]: bag i sums vals[n] · W[cols[n]] over its entries (0 if none) — an
    embedding_bag. Backward: W's gradient by `bag_t_matmul` (`groups`: a `ColumnGroups`
    holding cols, to share its sort), the values' by a sampled dense product. On the CPU;
    elsewhere the caller index-adds."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        vals: Tensor,
        cols: Tensor,
        bags: Tensor,
        n_bags: int,
        W: Tensor,
        groups: ColumnGroups | None = None,
    ) -> Tensor:
        counts = torch.bincount(bags, minlength=n_bags)
        crow = torch.zeros(n_bags + 1, dtype=torch.long, device=bags.device)
        torch.cumsum(counts, 0, out=crow[1:])
        ctx.save_for_backward(vals, cols, bags, crow, W)
        ctx.groups = groups
        return fn.embedding_bag(cols, W, crow[:-1], per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad_BO: Tensor):  # type: ignore[override]
        vals, cols, bags, crow, W = ctx.saved_tensors
        grad_BO = grad_BO.contiguous()
        grad_vals = grad_W = None
        if ctx.needs_input_grad[0]:
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                A = torch.sparse_csr_tensor(crow, cols, vals, (len(crow) - 1, W.shape[0]))
            grad_vals = torch.sparse.sampled_addmm(A, grad_BO, W.T, beta=0.0).values()
        if ctx.needs_input_grad[4]:
            grad_W = bag_t_matmul(cols, bags, vals, grad_BO, W.shape[0], ctx.groups)
        return grad_vals, None, None, None, grad_W, None


class SparseDecode(torch.autograd.Function):
    """(vals [R, K], flat [R, K], W [N, O], groups) → Σ_j vals[r, j] · W[flat[r, j]] [R, O]:
    an embedding_bag sum whose backward is one transposed sparse product (W's gradient,
    nonzero on the chosen rows only; `groups`: a `ColumnGroups` holding flat, to share its
    sort) and a sampled dense product (the values' gradient)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, vals: Tensor, flat: Tensor, W: Tensor, groups: ColumnGroups | None = None
    ) -> Tensor:
        ctx.save_for_backward(vals, flat, W)
        ctx.groups = groups
        return fn.embedding_bag(flat, W, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad_RO: Tensor):  # type: ignore[override]
        vals, flat, W = ctx.saved_tensors
        grad_RO = grad_RO.contiguous()
        A = csr_rows(flat, vals, W.shape[0])
        grad_vals = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_vals = torch.sparse.sampled_addmm(A, grad_RO, W.T, beta=0.0).values()
            grad_vals = grad_vals.view_as(vals)
        if ctx.needs_input_grad[2]:
            grad_W = sparse_t_matmul(flat, vals, grad_RO, W.shape[0], ctx.groups)
        return grad_vals, None, grad_W, None

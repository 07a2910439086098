"""The TopK family's hot kernels on the CPU: row-wise top-k selection and the k-sparse
weight gradients. Each computes what the plain torch op computes (the tests compare them
with it, values, indices and gradients), only faster for k ≪ F.

`topk_rows`: torch.topk over rows of F with k ≪ F is a per-row partial sort (~20 ns an
element here), several times the encoder matmul that produced the row. Threshold, then
select: split each row into G ≥ k strided chunks; the k-th largest chunk maximum t is a
lower bound of the row's k-th largest value v_k (k chunks hold an entry ≥ t), so the
entries ≥ t hold the top k — a few more than k (≈ 36 of 1024 for k = 32, G = 4k on
Gaussian rows; never fewer than k). One int64 radix sort of the candidates by (row, value
descending, column ascending) then gives each row's first k. So the result is the k
largest values in descending order, ties broken by the lower index (−0.0 ranks below
+0.0): the values are always torch.topk's, the indices too unless the k-th largest value
is tied, where torch.topk picks some of the tied entries (its rule is unspecified) and
this the lowest. Rows with NaN or ±inf at the threshold, dtypes other than float32 /
bfloat16 / float16, tensors off the CPU, and shapes where no G divides F fall back to
torch.topk.

`sparse_t_matmul`: the weight gradients Σ_b g_bf·x_b of k-sparse codes are the codes'
transpose (a sparse [S·F, S·B] matrix) times a dense matrix. Grouping the codes by latent
(`ColumnGroups`: one stable sort, shared by the encoder's and the decoder's gradient of a
step) turns that product into an `embedding_bag` sum: latent f's bag holds the rows b it
fired on, weighted by g_bf. That reads each touched row of the dense matrix once (no
[S·B·K, D] products materialised and index-added) and ran 4× faster than torch's CSR
matmul here. `csr_rows` builds the codes as a CSR matrix for the sampled product (the
values' gradient).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as fn
from torch import Tensor

FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # exact in a float32's bits
CHUNKS_PER_K = 4  # G ≈ 4k strided chunks: measured fastest of k, 2k, 4k, 8k at F 1024–4608


def _n_chunks(F: int, k: int) -> int | None:
    """G: the divisor of F nearest CHUNKS_PER_K·k with k ≤ G ≤ F / 2 (None: no such G)."""
    divisors = [g for g in range(k, F // 2 + 1) if F % g == 0]
    return min(divisors, key=lambda g: abs(g - CHUNKS_PER_K * k)) if divisors else None


def topk_rows(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values, indices) of the k largest entries along the last dim, values descending:
    torch.topk(pre, k), ties broken by the lower index (see the module docstring)."""
    F = pre.shape[-1]
    fast = pre.device.type == "cpu" and pre.dtype in FAST_DTYPES and pre.numel() > 0
    G = _n_chunks(F, k) if fast else None
    if G is None:
        return pre.topk(k, dim=-1)
    p = pre.reshape(-1, F)
    R = p.shape[0]
    chunk_max = p.view(R, F // G, G).amax(1)  # chunk c: entries c, c + G, c + 2G, …
    if G > k:
        chunk_max = chunk_max.topk(k, dim=1, sorted=False).values
    t = chunk_max.amin(1, keepdim=True)
    if not torch.isfinite(t).all():  # NaN or inf: torch.topk's own rules
        return pre.topk(k, dim=-1)
    rows, cols = (p >= t).nonzero(as_tuple=True)  # row-major: by row, then column
    v = p[rows, cols]
    # one int64 sort key per candidate: row, then value descending (the float's bits made
    # order-preserving), then (a stable sort) column ascending
    bits = v.float().view(torch.int32).long()
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in v
    order = torch.sort((rows << 32) | (0x7FFFFFFF - ordered), stable=True).indices
    counts = torch.bincount(rows, minlength=R)
    sel = order[(counts.cumsum(0) - counts).unsqueeze(1) + torch.arange(k, device=p.device)]
    return v[sel].view(*pre.shape[:-1], k), cols[sel].view(*pre.shape[:-1], k)


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
    """The occurrences of a pattern flat [R, K] (K distinct columns < n_cols per row) grouped
    by column, built on first use and then shared: every transposed product with the same
    pattern (`sparse_t_matmul`) reuses one stable sort. `set` gives it the pattern."""

    def __init__(self, n_cols: int) -> None:
        self.n_cols = n_cols
        self.flat: Tensor | None = None
        self._built: tuple[Tensor, Tensor, Tensor] | None = None

    def set(self, flat_RK: Tensor) -> None:
        self.flat, self._built = flat_RK, None

    def get(self) -> tuple[Tensor, Tensor, Tensor]:
        """(order, rows, offsets): the flat positions sorted by column (rows ascending within
        a column), the row of each, and each column's first position [n_cols]."""
        if self._built is None:
            if self.flat is None:
                raise ValueError("ColumnGroups.get before set")
            flat = self.flat.reshape(-1)
            order = torch.sort(flat, stable=True).indices
            counts = torch.bincount(flat, minlength=self.n_cols)
            self._built = (order, order // self.flat.shape[1], counts.cumsum(0) - counts)
        return self._built


def sparse_t_matmul(
    flat_RK: Tensor,
    values_RK: Tensor,
    dense_RD: Tensor,
    n_cols: int,
    groups: ColumnGroups | None = None,
) -> Tensor:
    """[n_cols, D]: Aᵀ · dense with A = csr_rows(flat, values): row f sums
    values[r, j] · dense[r] over the (r, j) with flat[r, j] = f, in order of r (0 where f
    never occurs) — one `embedding_bag` over the occurrences grouped by column (`groups`,
    built here when not given; it must hold this flat). Off the CPU: the index_add this
    replaces (untested there)."""
    R, K = flat_RK.shape
    flat = flat_RK.reshape(-1)
    if flat.device.type != "cpu":
        contrib = (values_RK.unsqueeze(-1) * dense_RD.unsqueeze(1)).reshape(R * K, -1)
        return dense_RD.new_zeros(n_cols, dense_RD.shape[1]).index_add_(0, flat, contrib)
    if groups is None:
        groups = ColumnGroups(n_cols)
        groups.set(flat_RK)
    order, rows, offsets = groups.get()
    weights = values_RK.reshape(-1)[order].to(dense_RD.dtype)
    return fn.embedding_bag(rows, dense_RD, offsets, per_sample_weights=weights, mode="sum")


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

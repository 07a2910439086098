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

`csr_rows`: the codes of a batch as a CSR matrix [S·B, S·F] (row b holds its K flat
latent indices and their gradient or value). The weight gradients Σ_b g_bf·x_b are its
transpose times a dense matrix — one sparse product instead of materialising the
[S·B·K, D] products and index-adding them.
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


def sparse_t_matmul(flat_RK: Tensor, values_RK: Tensor, dense_RD: Tensor, n_cols: int) -> Tensor:
    """[n_cols, D]: Aᵀ · dense with A = csr_rows(flat, values): row f sums
    values[r, j] · dense[r] over the (r, j) with flat[r, j] = f, in order of r (0 where f
    never occurs). Aᵀ is built as a CSR matrix itself (an int64 radix sort of flat), which
    torch multiplies row by row — the same sums in the same order as an index_add (which it
    stays off the CPU, where this is untested)."""
    R, K = flat_RK.shape
    flat = flat_RK.reshape(-1)
    if flat.device.type != "cpu":  # off the CPU: the index_add this replaces
        contrib = (values_RK.unsqueeze(-1) * dense_RD.unsqueeze(1)).reshape(R * K, -1)
        return dense_RD.new_zeros(n_cols, dense_RD.shape[1]).index_add_(0, flat, contrib)
    order = torch.sort(flat, stable=True).indices
    crow = torch.zeros(n_cols + 1, dtype=torch.long, device=flat.device)
    torch.cumsum(torch.bincount(flat, minlength=n_cols), 0, out=crow[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        A_t = torch.sparse_csr_tensor(crow, order // K, values_RK.reshape(-1)[order], (n_cols, R))
    return A_t @ dense_RD


class SparseDecode(torch.autograd.Function):
    """(vals [R, K], flat [R, K], W [N, O]) → Σ_j vals[r, j] · W[flat[r, j]] [R, O]: an
    embedding_bag sum whose backward is one transposed sparse product (W's gradient,
    nonzero on the chosen rows only) and a sampled dense product (the values' gradient)."""

    @staticmethod
    def forward(ctx: Any, vals: Tensor, flat: Tensor, W: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(vals, flat, W)
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
            grad_W = sparse_t_matmul(flat, vals, grad_RO, W.shape[0])
        return grad_vals, None, grad_W

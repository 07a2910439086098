"""The TopK family's fast kernels (husai.sae.sparse_ops) against plain torch references:
values, indices and gradients, on random inputs, ties and k = d_sae; bf16 training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as fn
from _sae_truth import gradient_test_inputs, recovery_l0_ev, train_on_synthetic_truth

from husai.config import SAEConfig
from husai.sae import build_sae
from husai.sae.sparse_ops import (
    BagDecode,
    ColumnGroups,
    SparseDecode,
    bag_t_matmul,
    sparse_t_matmul,
    topk_rows,
)


def _reference_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented rule: values descending, ties by the lower index (a stable sort)."""
    vals, idx = pre.sort(dim=-1, descending=True, stable=True)
    return vals[..., :k], idx[..., :k]


def _inputs() -> dict[str, tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    return {
        "gaussian": (torch.randn(3, 50, 1024, generator=g), 32),
        "lm width": (torch.randn(1, 8, 4608, generator=g), 32),
        "small": (torch.randn(2, 9, 40, generator=g), 5),
        "ties": (torch.randint(-3, 4, (2, 30, 64), generator=g).float(), 8),
        "all equal": (torch.zeros(4, 64), 6),
        "k = d_sae": (torch.randint(-2, 3, (3, 16), generator=g).float(), 16),
        "F no divisor": (torch.randn(5, 37, generator=g), 4),
        "bf16 (ties)": (torch.randn(4, 256, generator=g).bfloat16(), 8),
    }


@pytest.mark.parametrize("case", list(_inputs()))
def test_topk_rows_equals_torch_topk(case: str) -> None:
    pre, k = _inputs()[case]
    vals, idx = topk_rows(pre, k)
    ref_vals, ref_idx = pre.topk(k, dim=-1)
    assert torch.equal(vals, ref_vals)  # values: always torch.topk's, descending
    assert torch.equal(pre.gather(-1, idx), vals)  # each index holds its value
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # k distinct latents
    if case in ("gaussian", "lm width", "small"):  # no ties: torch.topk's indices
        assert torch.equal(idx, ref_idx)
    if case not in ("k = d_sae", "F no divisor"):  # fast path: the documented tie rule
        assert torch.equal(idx, _reference_topk(pre, k)[1])


@pytest.mark.parametrize("case", list(_inputs()))
def test_topk_rows_by_index_lists_the_same_entries_by_index(case: str) -> None:
    pre, k = _inputs()[case]
    vals, idx = topk_rows(pre, k)
    vals_i, idx_i = topk_rows(pre, k, by_index=True)
    assert (idx_i.diff(dim=-1) > 0).all()  # ascending index
    assert torch.equal(pre.gather(-1, idx_i), vals_i)
    assert torch.equal(idx.sort(-1).values, idx_i)  # the same k entries


def test_topk_rows_nan_falls_back_to_torch() -> None:
    pre = torch.randn(3, 256)
    pre[1, 7] = torch.nan
    vals, idx = topk_rows(pre, 8)
    ref_vals, ref_idx = pre.topk(8, dim=-1)
    assert torch.equal(idx, ref_idx) and torch.equal(vals.isnan(), ref_vals.isnan())


def test_sparse_t_matmul_equals_index_add_and_dense() -> None:
    g = torch.Generator().manual_seed(1)
    R, K, D, N = 60, 5, 7, 40
    # column 0 in every row, columns N-3 … N-1 in none (empty bags)
    flat = torch.stack(
        [
            torch.cat(
                [torch.zeros(1, dtype=torch.long), torch.randperm(N - 4, generator=g)[: K - 1] + 1]
            )
            for _ in range(R)
        ]
    )
    vals, dense = torch.randn(R, K, generator=g), torch.randn(R, D, generator=g)
    out = sparse_t_matmul(flat, vals, dense, N)
    contrib = (vals.unsqueeze(-1) * dense.unsqueeze(1)).reshape(-1, D)
    by_index_add = torch.zeros(N, D).index_add_(0, flat.reshape(-1), contrib)
    assert torch.allclose(out, by_index_add, rtol=0, atol=1e-5)  # same sums, same order
    codes = torch.zeros(R, N).scatter_(1, flat, vals)
    assert torch.allclose(out, codes.T @ dense, atol=1e-5)
    assert torch.equal(out[N - 3 :], torch.zeros(3, D))
    groups = ColumnGroups(N)  # one grouping, shared by two products
    groups.set(flat)
    other = torch.randn(R, 3, generator=g)
    assert torch.equal(sparse_t_matmul(flat, vals, dense, N, groups), out)
    shared = sparse_t_matmul(flat, vals, other, N, groups)
    assert torch.equal(shared, sparse_t_matmul(flat, vals, other, N))


def test_bag_t_matmul_equals_index_add() -> None:
    g = torch.Generator().manual_seed(3)
    N, R, D, C = 200, 30, 6, 25
    rows = torch.randint(0, R, (N,), generator=g).sort().values  # any number per row
    cols = torch.randint(0, C - 2, (N,), generator=g)  # the last two columns empty
    vals, dense = torch.randn(N, generator=g), torch.randn(R, D, generator=g)
    out = bag_t_matmul(cols, rows, vals, dense, C)
    ref = torch.zeros(C, D).index_add_(0, cols, vals.unsqueeze(-1) * dense[rows])
    assert torch.allclose(out, ref, rtol=0, atol=1e-5) and torch.equal(out[-2:], torch.zeros(2, D))
    groups = ColumnGroups(C).set(cols)
    assert torch.equal(bag_t_matmul(cols, rows, vals, dense, C, groups), out)


def test_bag_decode_gradients_equal_index_add() -> None:
    g = torch.Generator().manual_seed(4)
    N, n_bags, D, C = 40, 12, 5, 9
    bags = torch.randint(0, n_bags - 1, (N,), generator=g).sort().values  # last bag empty
    cols = torch.randint(0, C, (N,), generator=g)
    vals = torch.randn(N, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(C, D, generator=g, dtype=torch.float64, requires_grad=True)

    def bag(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return BagDecode.apply(v, cols, bags, n_bags, w)

    assert torch.autograd.gradcheck(bag, (vals, W))
    out = bag(vals, W)
    ref = torch.zeros(n_bags, D, dtype=torch.float64).index_add(
        0, bags, vals.unsqueeze(-1) * W[cols]
    )
    up = torch.randn(n_bags, D, generator=g, dtype=torch.float64)
    assert torch.allclose(out, ref, atol=1e-12) and out[-1].eq(0).all()
    grads = torch.autograd.grad(out, (vals, W), up)
    for a, b in zip(grads, torch.autograd.grad(ref, (vals, W), up), strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_sparse_decode_gradients_equal_embedding_bag() -> None:
    g = torch.Generator().manual_seed(2)
    R, K, D, N = 6, 3, 4, 15
    flat = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(R)])
    vals = torch.rand(R, K, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(N, D, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w: SparseDecode.apply(v, flat, w), (vals, W))
    up = torch.randn(R, D, generator=g, dtype=torch.float64)
    out = SparseDecode.apply(vals, flat, W)
    grads = torch.autograd.grad(out, (vals, W), up)
    ref = fn.embedding_bag(flat, W, per_sample_weights=vals, mode="sum")
    assert torch.equal(out, ref)
    for a, b in zip(grads, torch.autograd.grad(ref, (vals, W), up), strict=True):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("case", ["random", "ties", "k = d_sae"])
def test_topk_training_path_equals_dense_autograd(case: str) -> None:
    """TopKSAE.loss (fast selection, sparse backward) against dense codes built from the
    reference selection and plain autograd: loss and every gradient."""
    d_sae, k = (16, 16) if case == "k = d_sae" else (64, 6)
    sae = build_sae(SAEConfig(architecture="topk", d_sae=d_sae, k=k), 8, [3, 4])
    x = gradient_test_inputs(sae, (2, 40, 8), seed=5, ties=case == "ties")
    fast, _ = sae.loss(x)
    fast.sum().backward()
    g_fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    pre = torch.baddbmm(sae.b_enc.unsqueeze(1), x - sae.b_dec.unsqueeze(1), sae.W_enc.mT)
    vals, idx = _reference_topk(pre, k)
    codes = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    recon = torch.baddbmm(sae.b_dec.unsqueeze(1), codes, sae.W_dec)
    dense = (recon - x).pow(2).sum(-1).mean(-1)
    dense.sum().backward()
    assert torch.allclose(fast, dense, atol=1e-5)
    for n, p in sae.named_parameters():
        assert torch.allclose(g_fast[n], p.grad, atol=1e-5), n


def test_bf16_topk_recovers_synthetic_truth() -> None:
    cfg = SAEConfig(
        architecture="topk", d_sae=64, k=2, epochs=20, batch_size=256, lr=3e-3, precision="bf16"
    )
    sae, x, true_FD = train_on_synthetic_truth(cfg)
    mcc, l0, ev = recovery_l0_ev(sae, x, true_FD)
    assert mcc >= 0.9, (mcc, l0, ev)


def test_a_failing_compiler_warns_once_and_the_torch_path_runs(tmp_path, monkeypatch) -> None:
    from husai.sae import native

    monkeypatch.setenv("HUSAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    native.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="native kernels unavailable"):
            assert native.library() is None
        pre = torch.randn(100, 128, generator=torch.Generator().manual_seed(7))
        vals, idx = topk_rows(pre, 8)
        assert torch.equal(idx, _reference_topk(pre, 8)[1])
        assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.tmp"))
    finally:
        native.library.cache_clear()

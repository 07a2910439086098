"""HierarchicalTopK: prefix losses by hand, synthetic recovery, sae-lens load as TopK."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _sae_truth import recovery_l0_ev, train_on_synthetic_truth

from husai.config import SAEConfig
from husai.sae import build_sae, load, save, train_sae


def test_loss_is_the_mean_of_the_prefix_reconstruction_errors_by_hand() -> None:
    sae = build_sae(SAEConfig(architecture="hierarchical_topk", d_sae=3, k=2), 2, [0])
    with torch.no_grad():
        sae.W_enc[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        sae.W_dec[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.tensor([[3.0, 1.0]])  # pre-activations (3, 1, 4): codes 4 (latent 2), 3 (latent 0)
    loss, parts = sae.loss(x)
    x1 = torch.tensor([4 * 0.6, 4 * 0.8])  # the largest code alone
    x2 = x1 + torch.tensor([3.0, 0.0])  # both codes
    e1, e2 = (x1 - x[0]).pow(2).sum(), (x2 - x[0]).pow(2).sum()
    assert torch.allclose(loss, ((e1 + e2) / 2).view(1))
    assert torch.allclose(parts["mse"], e2.view(1))


def test_recovers_synthetic_truth_with_l0_k() -> None:
    cfg = SAEConfig(
        architecture="hierarchical_topk", d_sae=32, k=2, epochs=10, batch_size=128, lr=3e-3
    )
    mcc, l0, _ = recovery_l0_ev(*train_on_synthetic_truth(cfg))
    assert abs(l0 - 2) <= 0.4 and mcc >= 0.8, (l0, mcc)  # L0 ≤ k: ReLU may zero a code


def test_sparse_path_gradients_match_dense_autograd() -> None:
    sae = build_sae(SAEConfig(architecture="hierarchical_topk", d_sae=20, k=4), 6, [1, 2])
    with torch.no_grad():
        sae.b_enc.normal_()
    x = torch.randn(2, 10, 6, generator=torch.Generator().manual_seed(0))
    fast, _ = sae.loss(x)
    fast.sum().backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad()
    pre = sae.pre_acts(x)
    vals, idx = pre.topk(4, dim=-1)
    vals = vals.relu()
    dense = 0
    for j in range(1, 5):
        codes = torch.zeros_like(pre).scatter(-1, idx[..., :j], vals[..., :j])
        dense = dense + (sae.decode(codes) - x).pow(2).sum(-1).mean(-1) / 4
    dense.sum().backward()
    assert torch.allclose(fast, dense, atol=1e-5)
    for n, g in grads.items():
        assert torch.allclose(g, getattr(sae, n).grad, atol=1e-4), n


def test_saelens_loads_it_as_topk(tmp_path: Path) -> None:
    sae_lens = pytest.importorskip("sae_lens", reason="needs the interop extra (sae-lens)")
    x = torch.randn(128, 8, generator=torch.Generator().manual_seed(0))
    sae, _ = train_sae(SAEConfig(architecture="hierarchical_topk", d_sae=24, k=3, epochs=2), x, [1])
    save(sae, tmp_path / "s")
    assert type(load(tmp_path / "s")) is type(sae)
    lib = sae_lens.SAE.load_from_disk(tmp_path / "s")
    assert type(lib).__name__ == "TopKSAE"
    with torch.no_grad():
        assert (sae(x)[0] - lib(x)).abs().max() < 1e-4

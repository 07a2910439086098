"""Frequency balancing (husai.sae.balance): the selection-only bias, its update and anneal,
and what it does to training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as fn

from husai.config import SAEConfig
from husai.sae import build_sae, train_sae
from husai.sae.balance import anneal_start, firing_counts, update_bias


def test_firing_counts_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    S, B, K, F = 2, 7, 3, 5
    flat = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(S * B)]).view(S, B, K)
    flat += (torch.arange(S) * F).view(S, 1, 1)
    vals = torch.rand(S, B, K, generator=g) - 0.2  # some codes ≤ 0: chosen but not fired
    out = firing_counts(vals, flat, S, F)
    ref = torch.zeros(S, F)
    for s in range(S):
        for b in range(B):
            for j in range(K):
                if vals[s, b, j] > 0:
                    ref[s, int(flat[s, b, j]) - s * F] += 1
    assert torch.equal(out, ref)


def test_update_bias_moves_towards_the_target_then_anneals_to_exactly_zero() -> None:
    bias = torch.zeros(1, 4)
    counts = torch.tensor([[0.0, 2.0, 4.0, 2.0]])  # k 1, F 4, 8 rows: target 2 per latent
    update_bias(bias, counts, torch.tensor([2.0]), 8, 1, 0.1, 0, 10, 0.3)
    # γ · v̄ · (target − r) / target, target 1/4
    assert torch.allclose(bias, torch.tensor([[0.2, 0.0, -0.2, 0.0]]))
    assert anneal_start(10, 0.3) == 7
    for step in range(7, 10):
        update_bias(bias, counts, torch.tensor([2.0]), 8, 1, 0.1, step, 10, 0.3)
        if step < 9:
            assert bias.abs().sum() > 0
    assert torch.equal(bias, torch.zeros_like(bias))


def _dense_loss(sae, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Reference: choose by pre + bias with torch.topk, values = the unbiased pre."""
    pre = torch.baddbmm(sae.b_enc.unsqueeze(1), x - sae.b_dec.unsqueeze(1), sae.W_enc.mT)
    _, idx = (pre + bias.unsqueeze(1)).topk(sae.params.k, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, idx, torch.relu(pre.gather(-1, idx)))
    recon = torch.baddbmm(sae.b_dec.unsqueeze(1), codes, sae.W_dec)
    return (recon - x).pow(2).sum(-1).mean(-1)


def test_biased_selection_equals_dense_autograd() -> None:
    """The bias changes which latents are chosen, not their values: loss and gradients equal
    the dense reference's."""
    cfg = SAEConfig(architecture="topk", d_sae=32, k=4, balance_rate=0.01)
    sae = build_sae(cfg, 8, [1, 2])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 30, 8, generator=g)
    sae.start_training(30, 100)
    sae.select_bias.normal_(generator=g).mul_(3)  # type: ignore[union-attr]
    fast, parts = sae.loss(x)
    vals, flat = sae.sparse_encode(x)
    assert torch.all(vals[..., :-1] >= vals[..., 1:])  # still in descending order
    fast.sum().backward()
    g_fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    dense = _dense_loss(sae, x, sae.select_bias)  # type: ignore[arg-type]
    dense.sum().backward()
    assert torch.allclose(fast, dense, atol=1e-5)
    for n, p in sae.named_parameters():
        assert torch.allclose(g_fast[n], p.grad, atol=1e-5), n
    assert torch.equal(parts["counts"], firing_counts(vals, flat, 2, 32))


def _clusters(n_per: int = 60, n: int = 12, d: int = 10, seed: int = 0) -> torch.Tensor:
    """Rows near n unit directions (one direction each, scaled 0.5–1.5): k = 1 structure."""
    g = torch.Generator().manual_seed(seed)
    centres = fn.normalize(torch.randn(n, d, generator=g), dim=1)
    which = torch.arange(n).repeat_interleave(n_per)
    scale = 0.5 + torch.rand(len(which), 1, generator=g)
    return centres[which] * scale + 0.02 * torch.randn(len(which), d, generator=g), centres


def test_balancing_keeps_latents_alive_and_seeds_independent() -> None:
    """On clustered data with d_sae = the number of clusters and k 1, balancing brings
    every latent into use and onto a cluster; each seed of the ensemble trains exactly as
    it does alone (the bias is per seed); after training no bias is left."""
    x, centres = _clusters()
    base = dict(architecture="topk", d_sae=12, k=1, epochs=40, batch_size=48, lr=3e-3)
    plain, _ = train_sae(SAEConfig(**base), x, [1, 2])
    cfg = SAEConfig(**base, balance_rate=0.01)
    sae, _ = train_sae(cfg, x, [1, 2])
    alone, _ = train_sae(cfg, x, [2])
    assert sae.select_bias is None
    assert torch.allclose(sae.W_dec[1], alone.W_dec[0], atol=1e-5)

    def alive(m) -> float:
        return float((m.encode(x) > 0).any(1).float().mean())

    def recovered(m) -> float:
        cos = (m.W_dec.detach() @ centres.T).abs()
        return float((cos.amax(1) > 0.95).float().mean())

    assert alive(sae) == 1.0 and recovered(sae) == 1.0
    assert alive(plain) < 1.0 and recovered(plain) < 1.0  # the failure balancing fixes


def test_balance_rate_only_for_per_row_selection() -> None:
    with pytest.raises(ValueError, match="balance_rate is not supported by architecture batchtopk"):
        SAEConfig(architecture="batchtopk", balance_rate=0.01)
    SAEConfig(architecture="hierarchical_topk", balance_rate=0.01)

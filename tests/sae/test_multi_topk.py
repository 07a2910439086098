"""MultiTopK (Gao et al. 2024): the TopK loss plus w × the MSE at k × factor latents."""

from __future__ import annotations

import pytest
import torch

from husai.config import SAEConfig, parse_run_config
from husai.errors import HusaiError
from husai.sae import build_sae, train_sae

pytestmark = pytest.mark.usefixtures("one_thread")


def dense_mse(sae, x: torch.Tensor, k: int) -> torch.Tensor:
    """[S]: MSE of the dense reconstruction from the top k ReLU'd pre-activations."""
    pre = torch.baddbmm(sae.b_enc.unsqueeze(1), x - sae.b_dec.unsqueeze(1), sae.W_enc.mT)
    vals, idx = pre.topk(k, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    recon = torch.baddbmm(sae.b_dec.unsqueeze(1), codes, sae.W_dec)
    return (recon - x).pow(2).sum(-1).mean(-1)


@pytest.mark.parametrize(("k", "factor", "k_more"), [(5, 4, 20), (12, 4, 40), (40, 2, 40)])
def test_loss_and_gradients_equal_dense_brute_force(k: int, factor: int, k_more: int) -> None:
    """L(k) + w · L(min(k · factor, d_sae)), loss and every gradient (k 12: capped at 40)."""
    w = 0.125
    cfg = SAEConfig(d_sae=40, k=k, multi_topk=w, multi_topk_factor=factor)
    sae = build_sae(cfg, 12, [3, 4])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.b_enc.normal_(generator=g)
        sae.b_dec.normal_(generator=g)
    x = torch.randn(2, 20, 12, generator=g)
    assert sae.loss_k() == k_more
    fast, parts = sae.loss(x)
    fast.sum().backward()
    g_fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    mse_k, mse_more = dense_mse(sae, x, k), dense_mse(sae, x, k_more)
    dense = mse_k + w * mse_more
    dense.sum().backward()
    assert torch.allclose(fast, dense, atol=1e-5)
    assert torch.allclose(parts["mse"], mse_k.detach(), atol=1e-5)
    assert torch.allclose(parts["multi_topk_mse"], mse_more.detach(), atol=1e-5)
    for n, p in sae.named_parameters():
        assert torch.allclose(g_fast[n], p.grad, atol=1e-5), n
    fired = (sae.encode(x) > 0).any(1)  # dead-latent counters: TopK's k codes only
    assert torch.equal(parts["fired"], fired)


def test_off_is_topk() -> None:
    sae = build_sae(SAEConfig(d_sae=40, k=5), 12, [3])
    _, parts = sae.loss(torch.randn(1, 8, 12))
    assert sae.loss_k() == 5 and "multi_topk_mse" not in parts


def test_routesae_one_layer_equals_topk() -> None:
    """routesae passes MultiTopK's k' to its encoder: with one layer its loss is TopK's."""
    fields = dict(d_sae=40, k=4, multi_topk=0.5, multi_topk_factor=3)
    x = torch.randn(2, 16, 10, generator=torch.Generator().manual_seed(1))
    topk, parts = build_sae(SAEConfig(**fields), 10, [1, 2]).loss(x)
    route, route_parts = build_sae(SAEConfig(architecture="routesae", **fields), 10, [1, 2]).loss(x)
    assert torch.allclose(topk, route) and parts["multi_topk_mse"].gt(0).all()
    assert torch.allclose(parts["multi_topk_mse"], route_parts["multi_topk_mse"])


def _data(n: int = 400, d: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(24, d, generator=g)
    codes = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.2)
    return codes @ feats


@pytest.mark.parametrize("arch", ["topk", "routesae"])
def test_seeds_stay_independent(arch: str) -> None:
    x = _data()
    cfg = SAEConfig(architecture=arch, d_sae=24, k=2, epochs=4, batch_size=50, lr=5e-3,
                    multi_topk=0.125)  # fmt: skip
    ens, _ = train_sae(cfg, x, [1, 2])
    alone, _ = train_sae(cfg, x, [2])
    for name, p in alone.named_parameters():
        assert torch.allclose(getattr(ens, name)[1], p[0], atol=1e-5), name


def test_multi_topk_improves_the_reconstruction_at_the_larger_k() -> None:
    """What it is for: the SAE trained with it reconstructs better from k × factor latents."""
    x = _data()
    base = dict(d_sae=24, k=2, epochs=10, batch_size=50, lr=5e-3)
    plain, _ = train_sae(SAEConfig(**base), x, [1, 2])
    multi, _ = train_sae(SAEConfig(**base, multi_topk=0.125), x, [1, 2])
    x_SBD = x.expand(2, -1, -1)
    with torch.no_grad():
        plain_8, multi_8 = dense_mse(plain, x_SBD, 8), dense_mse(multi, x_SBD, 8)
    assert (multi_8 < 0.8 * plain_8).all(), (multi_8, plain_8)  # measured 1.5–1.7 vs 3.6


@pytest.mark.parametrize("arch", ["hierarchical_topk", "batchtopk", "matryoshka"])
def test_rejected_where_the_loss_is_not_topk_s(arch: str) -> None:
    with pytest.raises(ValueError, match=f"multi_topk is not supported by architecture {arch}"):
        SAEConfig(architecture=arch, multi_topk=0.125)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="multi_topk and balance_rate cannot be combined"):
        SAEConfig(multi_topk=0.125, balance_rate=0.01)
    with pytest.raises(ValueError, match="multi_topk_factor"):
        SAEConfig(multi_topk=0.125, multi_topk_factor=1)
    with pytest.raises(HusaiError, match="multi_topk is not a field of architecture relu"):
        parse_run_config({"saes": [{"architecture": "relu", "multi_topk": 0.1}]})

"""The weight penalties (husai.sae.penalties): L2 on the encoder, encoder–decoder alignment;
their value and gradient in a training step, per seed, and what they do to training."""

from __future__ import annotations

import pytest
import torch

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.sae import SAE, build_sae, train_sae
from husai.sae.trainer import train_step

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_weight_decay(W_enc: torch.Tensor, wd: float) -> torch.Tensor:
    """[S]: wd · Σ_f Σ_d W_enc[s, f, d]², entry by entry."""
    S, F, D = W_enc.shape
    out = []
    for s in range(S):
        total = W_enc.new_zeros(())
        for f in range(F):
            for d in range(D):
                total = total + W_enc[s, f, d] ** 2
        out.append(wd * total)
    return torch.stack(out)


def brute_align(W_enc: torch.Tensor, W_dec: torch.Tensor, a: float) -> torch.Tensor:
    """[S]: a · mean_f (1 − cos(W_enc[s, f], W_dec[s, f])), row by row."""
    S, F, _ = W_enc.shape
    out = []
    for s in range(S):
        total = W_enc.new_zeros(())
        for f in range(F):
            e, d = W_enc[s, f], W_dec[s, f]
            total = total + 1 - torch.dot(e, d) / (e.norm() * d.norm())
        out.append(a * total / F)
    return torch.stack(out)


def _step_grads(cfg: SAEConfig, x: torch.Tensor) -> tuple[dict, dict, SAE]:
    """The gradients one `train_step` computes (an SGD at lr 0 leaves the weights as they
    are), with the step's parts; the weights: fixed, encoder rows not tied to the decoder."""
    sae = build_sae(cfg, x.shape[-1], [4, 5])
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        sae.W_enc.add_(0.7 * torch.randn(sae.W_enc.shape, generator=g))
        sae.b_dec.normal_(generator=g)
    sae.start_training(len(x[0]), 10)
    opt = torch.optim.SGD(sae.parameters(), lr=0.0)
    parts = train_step(sae, opt, x, 0)
    return {n: p.grad.clone() for n, p in sae.named_parameters()}, parts, sae


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_penalties_value_and_gradient_in_a_step_match_brute_force(arch: str) -> None:
    own = {"k": 3} if arch == "topk" else {"l1_coefficient": 0.1}
    base = SAEConfig.model_validate({"architecture": arch, "d_sae": 10, **own})
    x = torch.randn(2, 16, 6, generator=torch.Generator().manual_seed(0))
    wd, a = 0.03, 0.7
    plain, plain_parts, _ = _step_grads(base, x)
    assert "weight_decay" not in plain_parts and "align" not in plain_parts
    grads, parts, sae = _step_grads(base.with_fields(weight_decay=wd, align_coefficient=a), x)
    W_enc = sae.W_enc.detach().double().requires_grad_(True)
    W_dec = sae.W_dec.detach().double().requires_grad_(True)
    wd_S, align_S = brute_weight_decay(W_enc, wd), brute_align(W_enc, W_dec, a)
    assert torch.allclose(parts["weight_decay"].double(), wd_S, rtol=1e-5)
    assert torch.allclose(parts["align"].double(), align_S, rtol=1e-5)
    assert torch.allclose(parts["mse"], plain_parts["mse"])  # the same weights and batch
    (wd_S + align_S).sum().backward()
    # the penalties' gradient is what they add to the step's; W_dec's is tangent to the
    # unit rows already, so the trainer's projection keeps all of it
    assert torch.allclose(grads["W_enc"] - plain["W_enc"], W_enc.grad.float(), atol=1e-5)
    assert torch.allclose(grads["W_dec"] - plain["W_dec"], W_dec.grad.float(), atol=1e-5)
    assert W_dec.grad.abs().max() > 1e-3 and W_enc.grad.abs().max() > 1e-3  # not vacuous
    for name in ("b_enc", "b_dec"):
        assert torch.equal(grads[name], plain[name]), name


def _clustered(n: int = 400, d: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(24, d, generator=g)
    codes = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.15)
    return codes @ feats


def test_penalised_seeds_stay_independent_and_the_penalties_act() -> None:
    x = _clustered()
    base = dict(architecture="topk", d_sae=24, k=3, epochs=6, batch_size=50, lr=5e-3)
    cfg = SAEConfig(**base, weight_decay=1e-2, align_coefficient=1.0)
    ens, _ = train_sae(cfg, x, [1, 2])
    alone, _ = train_sae(cfg, x, [2])
    for name, p in alone.named_parameters():
        assert torch.allclose(getattr(ens, name)[1], p[0], atol=1e-5), name
    plain, _ = train_sae(SAEConfig(**base), x, [1, 2])

    def misalignment(m) -> float:  # mean 1 − cos(encoder row, decoder row)
        return float(1 - torch.cosine_similarity(m.W_enc, m.W_dec, dim=-1).mean().detach())

    aligned, _ = train_sae(SAEConfig(**base, align_coefficient=20.0), x, [1, 2])
    assert misalignment(aligned) < 0.2 * misalignment(plain)  # measured 0.0015 vs 0.035
    decayed, _ = train_sae(SAEConfig(**base, weight_decay=0.1), x, [1, 2])
    assert decayed.W_enc.detach().norm() < 0.9 * plain.W_enc.detach().norm()  # 4.7 vs 5.6


def test_align_is_for_saes_only() -> None:
    x, y = torch.randn(64, 6), torch.randn(64, 6)
    cfg = SAEConfig(d_sae=8, k=2, epochs=1, align_coefficient=0.1)
    with pytest.raises(HusaiError, match="align_coefficient is for SAEs, not transcoders"):
        train_sae(cfg, x, [1], y_ND=y)
    train_sae(cfg.with_fields(align_coefficient=0.0, weight_decay=0.1), x, [1], y_ND=y)

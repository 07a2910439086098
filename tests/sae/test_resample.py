"""Data initialisation and dead-latent resampling: by hand and against brute force."""

from __future__ import annotations

import pytest
import torch
from _sae_truth import arch_config

from husai.config import SAEConfig
from husai.sae import build_sae, train_sae
from husai.sae.resample import (
    ENCODER_SCALE,
    dead_latents,
    init_from_data,
    resample_dead,
    resample_due,
)


def _x(n: int = 200, d: int = 6) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0)) * 3 + 1


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu", "gated", "batchtopk"])
def test_data_init_rows_are_sampled_centred_inputs_with_best_encoder_scale(arch: str) -> None:
    x = _x()
    sae = build_sae(arch_config(arch, d_sae=10, k=3), 6, [7, 8])
    with torch.no_grad():
        init_from_data(sae, x)
    centred = x - x.mean(0)
    for s, seed in enumerate([7, 8]):
        rows = torch.randperm(200, generator=torch.Generator().manual_seed(seed))[:10]
        expect = centred[rows] / centred[rows].norm(dim=-1, keepdim=True)
        assert torch.allclose(sae.W_dec[s], expect, atol=1e-6)
        ratio = sae.W_enc[s] / sae.W_dec[s]
        assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio), atol=1e-5)

    def err(scale: float) -> float:
        with torch.no_grad():
            sae.W_enc.mul_(scale)
            e = (sae(centred) - centred).pow(2).sum().item()
            sae.W_enc.div_(scale)
        return e

    assert err(1.0) <= min(err(0.9), err(1.1))  # least-squares optimum of the encoder scale


def test_resample_dead_resets_only_dead_latents_and_their_adam_moments() -> None:
    x = _x()
    sae = build_sae(SAEConfig(architecture="relu", d_sae=8), 6, [1, 2])
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    sae.loss(x)[0].sum().backward()
    opt.step()
    with torch.no_grad():
        sae.b_enc[0, [2, 5]] = -1e6  # seed 1: latents 2 and 5 can never fire
        sae.b_enc[1] = 1.0  # seed 2: nothing dead
    before = {n: p.detach().clone() for n, p in sae.named_parameters()}
    assert dead_latents(sae, x)[0].nonzero().flatten().tolist() == [2, 5]
    assert resample_dead(sae, opt, x, step=10) == [2, 0]
    alive = [0, 1, 3, 4, 6, 7]
    for n, p in sae.named_parameters():
        assert torch.equal(p[1], before[n][1]), n  # seed 2 untouched
    assert torch.equal(sae.W_dec[0, alive], before["W_dec"][0, alive])
    w = sae.W_dec[0, [2, 5]]
    assert torch.allclose(w.norm(dim=-1), torch.ones(2))
    inputs = (x - sae.b_dec[0]) / (x - sae.b_dec[0]).norm(dim=-1, keepdim=True)
    assert (torch.cdist(w, inputs).min(1).values < 1e-3).all()  # each is some input's direction
    target = ENCODER_SCALE * before["W_enc"][0, alive].norm(dim=-1).mean()
    assert torch.allclose(sae.W_enc[0, [2, 5]].norm(dim=-1), target.expand(2))
    assert sae.b_enc[0, [2, 5]].eq(0).all()
    state = opt.state[sae.W_enc]
    assert state["exp_avg"][0, [2, 5]].eq(0).all() and state["exp_avg_sq"][0, alive].ne(0).any()
    assert not dead_latents(sae, x)[0, [2, 5]].all()


def test_resample_schedule_is_every_n_epochs_in_the_first_half() -> None:
    assert [e for e in range(10) if resample_due(10, 2, e)] == [1, 3]
    assert not any(resample_due(10, 0, e) for e in range(10))


def test_training_with_resampling_is_deterministic_and_reports_counts() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 5  # four clusters: most of 64 latents die
    x = centres[torch.arange(400) % 4] + 0.01 * torch.randn(400, 8, generator=g)
    cfg = SAEConfig(architecture="topk", d_sae=64, k=1, epochs=4, resample_every_epochs=1)
    a, info = train_sae(cfg, x, [0, 1])
    b, _ = train_sae(cfg, x, [0, 1])
    assert torch.equal(a.W_dec, b.W_dec)
    assert len(info["resampled_latents"]) == 2 and sum(info["resampled_latents"]) > 0

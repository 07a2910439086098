"""AuxK: off by default (TopK unchanged); dead-latent counters; gradient reaches dead latents."""

from __future__ import annotations

import torch

from husai.config import SAEConfig
from husai.sae import build_sae


def test_auxk_off_by_default_and_counters() -> None:
    cfg = SAEConfig(architecture="topk", d_sae=8, k=2, dead_tokens_threshold=5)
    assert cfg.params.auxk_coefficient == 0.0
    sae = build_sae(cfg, 4, [0, 1])
    x = torch.randn(2, 3, 4)
    loss, parts = sae.loss(x)
    assert torch.equal(loss, parts["mse"]) and torch.equal(parts["auxk"], torch.zeros(2))
    sae.after_step(parts, 3)
    sae.after_step(parts, 3)
    want = torch.where(parts["fired"], 0, 6)
    assert torch.equal(sae.tokens_since_fired, want)
    assert torch.equal(sae.dead_mask(), ~parts["fired"])


def test_auxk_trains_only_dead_latents_on_the_residual() -> None:
    cfg = SAEConfig(architecture="topk", d_sae=8, k=1, auxk_coefficient=0.5, aux_k=2)
    sae = build_sae(cfg, 4, [0])
    x = torch.randn(1, 16, 4)
    with torch.no_grad():
        sae.tokens_since_fired[0, :4] = 10**9  # latents 0-3 dead
    _, parts = sae.loss(x)
    fired = parts["fired"][0]
    dead = torch.arange(8) < 4
    sae.zero_grad()
    aux = sae.auxk_loss(x, sae.sparse_decode(*sae.sparse_encode(x)))
    assert aux.item() > 0
    aux.sum().backward()
    g = sae.W_dec.grad[0].norm(dim=-1)
    assert (g[~dead] == 0).all() and (g[dead] > 0).any()
    assert fired.any()

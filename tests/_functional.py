"""A planted functional correspondence: seed B an exact copy of seed A with its latents
permuted, so every matched partner is the same latent (shared by the toy and LM tests)."""

from __future__ import annotations

import pytest
import torch

from husai.sae.base import SAE


def copy_permuted(one: SAE, seed: int = 0) -> SAE:
    """A two-seed ensemble: `one`, and `one` with its latents permuted."""
    perm = torch.randperm(one.d_sae, generator=torch.Generator().manual_seed(seed))
    ens = type(one)(one.cfg, one.d_in, [1, 2], one.d_out if one.transcoder else None)
    with torch.no_grad():
        for name, p in ens.named_parameters():
            q = getattr(one, name)[0]
            p[0] = q
            p[1] = q[perm] if q.shape[0] == one.d_sae and name != "b_dec" else q
    return ens


def check_planted(block: dict) -> None:
    assert block["n_sampled"] > 0
    abl, st = block["ablation"], block["steering"]
    assert abl["matched"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert abl["difference"]["ci_low"] > 0
    assert st["correlation"]["matched"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert st["top_agreement"]["matched"]["mean"] == 1.0
    assert st["top_agreement"]["random"]["mean"] < 1.0
    for key in ("recon_mse", "model_loss"):
        assert block["substitution"][key]["matched"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert all(s["cos"] == pytest.approx(1.0, abs=1e-5) for s in block["samples"])

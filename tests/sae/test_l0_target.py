"""target_l0: the penalty weight's controller, by hand and end to end."""

from __future__ import annotations

import math

import pytest
import torch
from _sae_truth import recovery_l0_ev, train_on_synthetic_truth

from husai.config import SAEConfig
from husai.sae import build_sae
from husai.sae.l0_target import RATE, adapt_coefficient, adapting


def test_one_update_by_hand() -> None:
    sae = build_sae(SAEConfig(architecture="relu", d_sae=4, l1_coefficient=2.0), 2, [0, 1])
    with torch.no_grad():
        sae.W_enc[:] = torch.eye(2).repeat(2, 1).expand(2, 4, 2)
        sae.b_enc[1] = -10.0  # seed 1 never fires: L0 0
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # seed 0: latents (x0, x1, x0, x1) → L0 4, 2
    adapt_coefficient(sae, x, target=1.0)
    expect = [2 * math.exp(RATE * (math.log(4) - math.log(2))), 2 * math.exp(-RATE * math.log(2))]
    assert torch.allclose(sae.coefficient, torch.tensor(expect))


def test_adapts_every_few_steps() -> None:
    assert [s for s in range(12) if adapting(s, 100)] == [0, 5, 10]


# the architecture tests' hand-matched settings, with the weight left to the controller
CONFIGS = {
    "relu": dict(d_sae=64, epochs=20, lr=3e-3),
    "jumprelu": dict(
        d_sae=64, epochs=30, lr=3e-3, l0_coefficient=0.07, jumprelu_init_threshold=0.3
    ),
    "gated": dict(d_sae=64, epochs=20, lr=3e-3),
}


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_reaches_target_l0_on_synthetic_truth(arch: str) -> None:
    cfg = SAEConfig(architecture=arch, target_l0=2.0, **CONFIGS[arch])
    mcc, l0, _ = recovery_l0_ev(*train_on_synthetic_truth(cfg))
    assert abs(l0 - 2) <= 0.4, l0  # within 20% of the target
    assert mcc >= 0.8, mcc


def test_target_l0_is_k_for_the_topk_family() -> None:
    assert SAEConfig(architecture="batchtopk", target_l0=8).params.k == 8
    with pytest.raises(ValueError, match="whole number"):
        SAEConfig(architecture="topk", target_l0=8.5)


def test_topk_with_target_l0_trains_at_k() -> None:
    from husai.sae import train_sae

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    sae, info = train_sae(SAEConfig(architecture="topk", d_sae=8, target_l0=2, epochs=1), x, [0])
    assert sae.params.k == 2 and "sparsity_coefficient" not in info
